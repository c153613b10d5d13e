-- SQLite flavour of migrations/postgres/0008_open_sessions_by_tech.sql (the same).
--
-- The per-user session cap counts a technician's open sessions on every open. Through
-- idx_tech_sessions_tech that count read every session the technician ever had (1.7 ms at
-- 20,000 closed ones, on the single writer): this index holds the open ones only.
create index idx_tech_sessions_open_by_tech on tech_sessions (tech_id)
    where status in ('pending', 'active');
