-- Identity: roles with auditors, users that can be disabled or deleted, and every issued
-- access token, so that a token can be revoked (logout, password change, a disabled user).

-- 'tech' was the technician role's name before auditors existed.
alter table users drop constraint users_role_check;
update users set role = 'technician' where role = 'tech';
alter table users add constraint users_role_check check (role in ('admin', 'technician', 'auditor'));

alter table users add column disabled boolean not null default false;
-- a deleted user is kept (their sessions, commands and audit entries name them) but can no
-- longer log in, is not listed, and frees their username.
alter table users add column deleted_at timestamptz null;
alter table users add column last_login_at timestamptz null;

alter table users drop constraint users_username_key;
create unique index users_username_live on users (username) where deleted_at is null;

-- one row per issued token (its JWT `jti`); a request is served only while its token's row is
-- unrevoked and its user is enabled and not deleted.
create table auth_tokens
(
    token_id      uuid primary key,
    user_id       uuid        not null references users (user_id),
    issued_at     timestamptz not null,
    expires_at    timestamptz not null,
    revoked_at    timestamptz null,
    revoke_reason text        null,
    constraint auth_tokens_revoked_fields check ((revoked_at is null) = (revoke_reason is null))
);

create index idx_auth_tokens_user on auth_tokens (user_id);
create index idx_auth_tokens_expires on auth_tokens (expires_at);
