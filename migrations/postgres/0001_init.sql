-- Users, agents, tunnel sessions and the audit log.

create table users
(
    user_id       uuid primary key,
    username      text        not null unique,
    password_hash text        not null,
    role          text        not null check (role in ('admin', 'tech')),
    created_at    timestamptz not null default now()
);

create table agents
(
    agent_id      uuid primary key,
    name          text        not null unique,
    -- sha-256 of the agent key; the key itself is never stored.
    key_digest    bytea       not null unique,
    created_at    timestamptz not null default now(),
    last_seen     timestamptz null,
    agent_version text        null,
    hostname      text        null,
    os            text        null,
    uptime_secs   bigint      null
);

create table tech_sessions
(
    session_id    uuid primary key,
    tech_id       uuid        not null references users (user_id) on delete cascade,
    agent_id      uuid        not null references agents (agent_id) on delete cascade,
    opened_at     timestamptz not null default now(),
    last_activity timestamptz not null,
    closed_at     timestamptz null,
    status        text        not null check (status in ('pending', 'active', 'closed')),
    close_reason  text        null,
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
    audit_id    bigserial primary key,
    occurred_at timestamptz not null default now(),
    action      text        not null,
    tech_id     uuid        null,
    agent_id    uuid        null,
    session_id  uuid        null,
    detail      text        null
);

create index idx_audit_events_occurred_at on audit_events (occurred_at);
create index idx_audit_events_session on audit_events (session_id);

create function audit_events_append_only() returns trigger
    language plpgsql as
$$
begin
    raise exception 'audit_events is append-only (% refused)', tg_op;
end;
$$;

create trigger audit_events_no_update_or_delete
    before update or delete
    on audit_events
    for each row
execute function audit_events_append_only();

create trigger audit_events_no_truncate
    before truncate
    on audit_events
    for each statement
execute function audit_events_append_only();
