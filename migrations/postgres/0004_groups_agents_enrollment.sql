-- Groups (customers, sites) that scope technicians; agents that can be revoked and moved;
-- enrollment tokens; and which token opened a session (logout closes what it opened).

create table groups
(
    group_id   uuid primary key,
    name       text        not null unique,
    created_at timestamptz not null default now()
);

-- The group of every agent and user for which none was named: a fixed id.
insert into groups (group_id, name) values ('00000000-0000-0000-0000-000000000001', 'default');

alter table agents
    add column group_id uuid not null default '00000000-0000-0000-0000-000000000001'
        references groups (group_id);
-- a revoked agent's key is refused; the row stays for the history that names it.
alter table agents add column revoked_at timestamptz null;
create index idx_agents_group on agents (group_id);

-- the groups a user is granted (technicians see only their groups' agents).
create table user_groups
(
    user_id  uuid not null references users (user_id),
    group_id uuid not null references groups (group_id),
    primary key (user_id, group_id)
);
create index idx_user_groups_group on user_groups (group_id);

-- everyone who existed before groups keeps seeing every agent they could: all are in default.
insert into user_groups (user_id, group_id)
select user_id, '00000000-0000-0000-0000-000000000001' from users;

-- an enrollment token lets a machine register itself as an agent of `group_id`; only the
-- token's sha-256 is kept.
create table enrollment_tokens
(
    enrollment_id uuid primary key,
    token_digest  bytea       not null unique,
    group_id      uuid        not null references groups (group_id),
    uses_allowed  integer     not null check (uses_allowed >= 1),
    uses          integer     not null default 0 check (uses >= 0 and uses <= uses_allowed),
    expires_at    timestamptz not null,
    created_by    uuid        null,
    created_at    timestamptz not null,
    revoked_at    timestamptz null
);

alter table tech_sessions add column token_id uuid null;
