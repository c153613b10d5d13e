-- no-transaction
-- (sqlx reads the line above: this migration manages its own transaction, because SQLite
-- can change a table's check constraint only by rebuilding the table, and the rebuild must run
-- with foreign keys off, which cannot be switched inside a transaction.)
--
-- SQLite flavour of migrations/postgres/0003_identity.sql: roles with auditors, users that can
-- be disabled or deleted, and every issued access token.

pragma foreign_keys = off;

begin;

create table users_rebuilt
(
    user_id       text primary key,
    username      text    not null,
    password_hash text    not null,
    role          text    not null check (role in ('admin', 'technician', 'auditor')),
    created_at    integer not null default (cast(unixepoch('subsec') * 1000000 as integer)),
    disabled      integer not null default 0 check (disabled in (0, 1)),
    -- a deleted user is kept (their sessions, commands and audit entries name them) but can
    -- no longer log in, is not listed, and frees their username.
    deleted_at    integer null,
    last_login_at integer null
);

-- 'tech' was the technician role's name before auditors existed.
insert into users_rebuilt (user_id, username, password_hash, role, created_at)
select user_id,
       username,
       password_hash,
       case role when 'tech' then 'technician' else role end,
       created_at
from users;

drop table users;
alter table users_rebuilt rename to users;

create unique index users_username_live on users (username) where deleted_at is null;

-- one row per issued token (its JWT `jti`); a request is served only while its token's row is
-- unrevoked and its user is enabled and not deleted.
create table auth_tokens
(
    token_id      text primary key,
    user_id       text    not null references users (user_id),
    issued_at     integer not null,
    expires_at    integer not null,
    revoked_at    integer null,
    revoke_reason text    null,
    constraint auth_tokens_revoked_fields check ((revoked_at is null) = (revoke_reason is null))
);

create index idx_auth_tokens_user on auth_tokens (user_id);
create index idx_auth_tokens_expires on auth_tokens (expires_at);

commit;

pragma foreign_keys = on;
