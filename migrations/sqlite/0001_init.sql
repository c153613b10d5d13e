-- Users, agents, tunnel sessions and the audit log.
--
-- SQLite flavour of migrations/postgres/0001_init.sql: uuids are stored as hyphenated
-- lower-case text and every timestamp as an integer of unix microseconds.

create table users
(
    user_id       text primary key,
    username      text    not null unique,
    password_hash text    not null,
    role          text    not null check (role in ('admin', 'tech')),
    created_at    integer not null default (cast(unixepoch('subsec') * 1000000 as integer))
);

create table agents
(
    agent_id      text primary key,
    name          text    not null unique,
    -- sha-256 of the agent key; the key itself is never stored.
    key_digest    blob    not null unique,
    created_at    integer not null default (cast(unixepoch('subsec') * 1000000 as integer)),
    last_seen     integer null,
    agent_version text    null,
    hostname      text    null,
    os            text    null,
    uptime_secs   integer null
);

create table tech_sessions
(
    session_id    text primary key,
    tech_id       text    not null references users (user_id) on delete cascade,
    agent_id      text    not null references agents (agent_id) on delete cascade,
    opened_at     integer not null default (cast(unixepoch('subsec') * 1000000 as integer)),
    last_activity integer not null,
    closed_at     integer null,
    status        text    not null check (status in ('pending', 'active', 'closed')),
    close_reason  text    null,
    -- a closed session has its time and reason; an open one has neither.
    constraint tech_sessions_closed_fields check (
        (status = 'closed') = (closed_at is not null and close_reason is not null)
    )
);

create index idx_tech_sessions_tech on tech_sessions (tech_id);
create index idx_tech_sessions_agent on tech_sessions (agent_id);
create index idx_tech_sessions_status on tech_sessions (status);

-- at most one pending or active session per agent, enforced by the database so that two
-- concurrent opens cannot both win.
create unique index tech_sessions_one_open_per_agent
    on tech_sessions (agent_id)
    where status in ('pending', 'active');

-- no foreign keys: entries must outlive the users, agents and sessions they name.
create table audit_events
(
    audit_id    integer primary key autoincrement,
    occurred_at integer not null default (cast(unixepoch('subsec') * 1000000 as integer)),
    action      text    not null,
    tech_id     text    null,
    agent_id    text    null,
    session_id  text    null,
    detail      text    null
);

create index idx_audit_events_occurred_at on audit_events (occurred_at);
create index idx_audit_events_session on audit_events (session_id);

create trigger audit_events_no_update
    before update
    on audit_events
begin
    select raise(abort, 'audit_events is append-only');
end;

create trigger audit_events_no_delete
    before delete
    on audit_events
begin
    select raise(abort, 'audit_events is append-only');
end;
