-- Terminal recordings: one asciicast v2 file per terminal, stored in chunks as it is written.
--
-- SQLite flavour of migrations/postgres/0005_recordings.sql: uuids as hyphenated lower-case
-- text, timestamps as integer unix microseconds, booleans as integer 0/1.

-- no foreign keys: like audit entries, recordings must outlive the users, agents and sessions
-- they name (a session goes when its user or agent is deleted).
create table recordings
(
    -- the terminal's id.
    recording_id text primary key,
    session_id   text    not null,
    agent_id     text    not null,
    user_id      text    not null,
    started_at   integer not null,
    -- null while the terminal lives.
    ended_at     integer null,
    -- any u16: the terminal size rules are the domain's.
    cols         integer not null check (cols between 0 and 65535),
    rows         integer not null check (rows between 0 and 65535),
    term         text    not null,
    -- null: the login shell.
    command      text    null,
    -- bytes of the cast file stored so far: the sum of its chunks' lengths.
    size         integer not null default 0 check (size >= 0),
    truncated    integer not null default 0 check (truncated in (0, 1))
);

-- "newest first", overall and for one agent / one user.
create index idx_recordings_started on recordings (started_at desc);
create index idx_recordings_agent on recordings (agent_id, started_at desc);
create index idx_recordings_user on recordings (user_id, started_at desc);
-- start-up reconciliation looks only for unfinished recordings: few, among many ended ones.
create index idx_recordings_unfinished on recordings (recording_id) where ended_at is null;

create table recording_chunks
(
    recording_id text    not null references recordings (recording_id) on delete cascade,
    seq          integer not null check (seq >= 0),
    data         blob    not null,
    primary key (recording_id, seq)
);
