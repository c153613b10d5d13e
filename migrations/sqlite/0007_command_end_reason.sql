-- Why a command ended, for every end but a completion.
--
-- SQLite flavour of migrations/postgres/0007_command_end_reason.sql.

alter table commands add column end_reason text null;
