-- Cluster mode: several servers share this database, each with its own node id. A session
-- belongs to the node that opened it (the one holding the agent's connection); each node
-- keeps a lease here while it runs, and when one runs out another node closes what the lost
-- node held. SQLite has no counterpart: cluster mode refuses it.

-- The node that opened the session; '' for a server not in a cluster (single-node mode, and
-- every session opened before this migration).
alter table tech_sessions add column node_id text not null default '';

-- A node's restart and the sweep of a lost node look for that node's open sessions: few,
-- among many closed ones.
create index idx_tech_sessions_open_by_node on tech_sessions (node_id)
    where status in ('pending', 'active');

-- One row per live node: its lease runs until lease_until (the database's clock, the only one
-- that counts). A node that leaves or is claimed loses its row.
create table cluster_nodes
(
    node_id     text primary key,
    -- the process holding the lease: each join takes a new one from cluster_node_generations,
    -- so a stale process can never renew a lease taken after its own, even once the row was
    -- deleted and the node joined again.
    generation  bigint      not null,
    joined_at   timestamptz not null default now(),
    lease_until timestamptz not null
);

create sequence cluster_node_generations as bigint minvalue 1;
