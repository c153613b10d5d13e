-- Retention: command output and terminal recordings pruned by the server's retention sweep.
-- The rows stay (they say what ran and when; the audit log keeps the record); their content
-- goes, and the time it went is kept so that pruned output reads as pruned, not as empty.

alter table commands add column output_pruned_at timestamptz null;
alter table recordings add column pruned_at timestamptz null;

-- the sweep looks for ended, unpruned ones, oldest end first.
create index idx_commands_prunable on commands (finished_at)
    where output_pruned_at is null and finished_at is not null;
create index idx_recordings_prunable on recordings (ended_at)
    where pruned_at is null and ended_at is not null;
