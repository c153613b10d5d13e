-- Why a command ended, for every end but a completion (null while running and for a process
-- that exited on its own): the session's close reason when its session ended
-- (`agent_disconnected`, `server_restart`, ...) or the command's own (`agent_error`,
-- `not_delivered`, `channel_in_use`, `timeout`, `cancelled_by_user`, `cancelled_by_agent`).
-- No check constraint: the list grows with the session's close reasons, and the server
-- refuses to read a value it does not know.
--
-- Commands that ended before this migration keep a null reason: nobody recorded it.

alter table commands add column end_reason text null;
