-- Commands run in tunnels with their output, and what the audit log records about commands
-- and file transfers.
--
-- SQLite flavour of migrations/postgres/0002_commands_audit.sql: uuids as hyphenated
-- lower-case text, timestamps as integer unix microseconds, booleans as integer 0/1.

-- nullable: older entries, and entries of other actions, have none of these. adding columns
-- fires no trigger, so the append-only triggers (update/delete) stay in force.
alter table audit_events add column command_id text null;
alter table audit_events add column command text null;
alter table audit_events add column status text null;
alter table audit_events add column exit_code integer null;
alter table audit_events add column stdout_bytes integer null;
alter table audit_events add column stderr_bytes integer null;
alter table audit_events add column duration_ms integer null;
alter table audit_events add column path text null;
alter table audit_events add column direction text null;
alter table audit_events add column size_bytes integer null;
alter table audit_events add column sha256 text null;
alter table audit_events add column result text null;

-- "newest first for one technician / one agent", paged by audit_id.
create index idx_audit_events_tech on audit_events (tech_id, audit_id);
create index idx_audit_events_agent on audit_events (agent_id, audit_id);

create table commands
(
    command_id       text primary key,
    -- a command's output is only as long-lived as its session; the audit log keeps the record.
    session_id       text    not null references tech_sessions (session_id) on delete cascade,
    agent_id         text    not null,
    tech_id          text    not null,
    channel_id       text    not null,
    command          text    not null,
    timeout_secs     integer not null,
    status           text    not null
        check (status in ('running', 'completed', 'timed_out', 'cancelled', 'failed')),
    exit_code        integer null,
    signal           text    null,
    started_at       integer not null,
    finished_at      integer null,
    stdout_bytes     integer not null default 0,
    stderr_bytes     integer not null default 0,
    stdout_truncated integer not null default 0 check (stdout_truncated in (0, 1)),
    stderr_truncated integer not null default 0 check (stderr_truncated in (0, 1)),
    -- a running command has no end time; an ended one has.
    constraint commands_finished_fields check ((status = 'running') = (finished_at is null))
);

create index idx_commands_session on commands (session_id);
-- start-up reconciliation looks only for running commands: few, among many ended ones.
create index idx_commands_running on commands (status) where status = 'running';

create table command_output
(
    command_id text    not null references commands (command_id) on delete cascade,
    stream     text    not null check (stream in ('stdout', 'stderr')),
    seq        integer not null,
    data       blob    not null,
    primary key (command_id, stream, seq)
);
