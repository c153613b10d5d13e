-- Retention: command output and terminal recordings pruned by the server's retention sweep.
--
-- SQLite flavour of migrations/postgres/0006_retention.sql: timestamps as integer unix
-- microseconds.

alter table commands add column output_pruned_at integer null;
alter table recordings add column pruned_at integer null;

-- the sweep looks for ended, unpruned ones, oldest end first.
create index idx_commands_prunable on commands (finished_at)
    where output_pruned_at is null and finished_at is not null;
create index idx_recordings_prunable on recordings (ended_at)
    where pruned_at is null and ended_at is not null;
