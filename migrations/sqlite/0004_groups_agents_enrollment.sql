-- SQLite flavour of migrations/postgres/0004_groups_agents_enrollment.sql. One difference:
-- agents.group_id has no foreign key here (SQLite cannot add a column with a REFERENCES
-- clause and a non-null default while foreign keys are on); the store moves agents only to
-- groups it has just read, and deletes only groups without agents.

create table groups
(
    group_id   text primary key,
    name       text    not null unique,
    created_at integer not null default (cast(unixepoch('subsec') * 1000000 as integer))
);

insert into groups (group_id, name) values ('00000000-0000-0000-0000-000000000001', 'default');

alter table agents add column group_id text not null default '00000000-0000-0000-0000-000000000001';
alter table agents add column revoked_at integer null;
create index idx_agents_group on agents (group_id);

create table user_groups
(
    user_id  text not null references users (user_id),
    group_id text not null references groups (group_id),
    primary key (user_id, group_id)
);
create index idx_user_groups_group on user_groups (group_id);

insert into user_groups (user_id, group_id)
select user_id, '00000000-0000-0000-0000-000000000001' from users;

create table enrollment_tokens
(
    enrollment_id text primary key,
    token_digest  blob    not null unique,
    group_id      text    not null references groups (group_id),
    uses_allowed  integer not null check (uses_allowed >= 1),
    uses          integer not null default 0 check (uses >= 0 and uses <= uses_allowed),
    expires_at    integer not null,
    created_by    text    null,
    created_at    integer not null,
    revoked_at    integer null
);

alter table tech_sessions add column token_id text null;
