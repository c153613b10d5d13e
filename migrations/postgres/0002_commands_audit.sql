-- Commands run in tunnels with their output, and what the audit log records about commands
-- and file transfers.

-- nullable: older entries, and entries of other actions, have none of these. adding columns
-- is ddl, so the append-only triggers (update/delete/truncate) do not fire and stay in force.
alter table audit_events
    add column command_id   uuid    null,
    add column command      text    null,
    add column status       text    null,
    add column exit_code    integer null,
    add column stdout_bytes bigint  null,
    add column stderr_bytes bigint  null,
    add column duration_ms  bigint  null,
    add column path         text    null,
    add column direction    text    null,
    add column size_bytes   bigint  null,
    add column sha256       text    null,
    add column result       text    null;

-- "newest first for one technician / one agent", paged by audit_id.
create index idx_audit_events_tech on audit_events (tech_id, audit_id);
create index idx_audit_events_agent on audit_events (agent_id, audit_id);

create table commands
(
    command_id       uuid primary key,
    -- a command's output is only as long-lived as its session; the audit log keeps the record.
    session_id       uuid        not null references tech_sessions (session_id) on delete cascade,
    agent_id         uuid        not null,
    tech_id          uuid        not null,
    channel_id       text        not null,
    command          text        not null,
    timeout_secs     bigint      not null,
    status           text        not null
        check (status in ('running', 'completed', 'timed_out', 'cancelled', 'failed')),
    exit_code        integer     null,
    signal           text        null,
    started_at       timestamptz not null,
    finished_at      timestamptz null,
    stdout_bytes     bigint      not null default 0,
    stderr_bytes     bigint      not null default 0,
    stdout_truncated boolean     not null default false,
    stderr_truncated boolean     not null default false,
    -- a running command has no end time; an ended one has.
    constraint commands_finished_fields check ((status = 'running') = (finished_at is null))
);

create index idx_commands_session on commands (session_id);
-- start-up reconciliation looks only for running commands: few, among many ended ones.
create index idx_commands_running on commands (status) where status = 'running';

create table command_output
(
    command_id uuid   not null references commands (command_id) on delete cascade,
    stream     text   not null check (stream in ('stdout', 'stderr')),
    seq        bigint not null,
    data       bytea  not null,
    primary key (command_id, stream, seq)
);
