//! `agents` on SQLite: who connects.

use rmm_application::{
    AgentChange, AgentChangeOutcome, AgentRecord, AgentRepository, AuditEvent, HostFacts,
    KeyDigest, StoreError,
};
use rmm_domain::{AgentId, Timestamp};
use sqlx::Row as _;
use sqlx::sqlite::SqliteRow;

use super::agent_admin;
use super::{SqliteStore, id_text, micros, opt_time_column, time_column, uuid_column};
use crate::{AgentRow, merge_seen, store_error, u64_to_db};

fn agent_from_row(row: &SqliteRow) -> Result<AgentRecord, StoreError> {
    let decoded = AgentRow {
        agent_id: uuid_column(row, "agents", "agent_id")?,
        name: row.try_get("name").map_err(store_error)?,
        key_digest: row.try_get("key_digest").map_err(store_error)?,
        created_at: time_column(row, "created_at")?,
        last_seen: opt_time_column(row, "last_seen")?,
        agent_version: row.try_get("agent_version").map_err(store_error)?,
        hostname: row.try_get("hostname").map_err(store_error)?,
        os: row.try_get("os").map_err(store_error)?,
        uptime_secs: row.try_get("uptime_secs").map_err(store_error)?,
        group_name: row.try_get("group_name").map_err(store_error)?,
        revoked: row.try_get("revoked").map_err(store_error)?,
    };
    AgentRecord::try_from(decoded)
}

impl AgentRepository for SqliteStore {
    async fn insert_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "insert into agents (",
            agent_columns!(),
            ", group_id, revoked_at) values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
             (select group_id from groups where name = ?10), null)"
        ))
        .bind(id_text(agent.id.as_uuid()))
        .bind(agent.name.as_str())
        .bind(&agent.key_digest.0[..])
        .bind(micros(agent.created_at))
        .bind(agent.last_seen.map(micros))
        .bind(agent.facts.version.as_deref())
        .bind(agent.facts.hostname.as_deref())
        .bind(agent.facts.os.as_deref())
        .bind(agent.facts.uptime_secs.map(u64_to_db))
        .bind(agent.group.as_str())
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn find_agent_by_key(
        &self,
        digest: KeyDigest,
    ) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "select ",
            agent_select!(),
            " where a.key_digest = ?1"
        ))
        .bind(&digest.0[..])
        .fetch_optional(&self.reader)
        .await
        .map_err(store_error)?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        // BINARY collation: byte order, which the PostgreSQL store matches with `collate "C"`.
        let rows = sqlx::query(concat!(
            "select ",
            agent_select!(),
            " order by a.name, a.agent_id"
        ))
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn record_seen(
        &self,
        seen: &[(AgentId, Timestamp, Option<HostFacts>)],
    ) -> Result<(), StoreError> {
        let updates = merge_seen(seen);
        if updates.is_empty() {
            return Ok(());
        }
        // One statement for the whole batch, its rows passed as one JSON array: a statement
        // per agent cost a hand-off to sqlx's SQLite worker thread each (thousands per flush
        // with a large idle fleet, most of the server's idle CPU). merge_seen left one row
        // per agent, so no agent matches twice. Facts are taken only from a batch at least as
        // new as the stored last_seen; the right-hand sides all see the row's old values.
        let rows: Vec<serde_json::Value> = updates
            .into_iter()
            .map(|u| {
                serde_json::json!([
                    id_text(u.agent.as_uuid()),
                    micros(u.at),
                    u.facts.version,
                    u.facts.hostname,
                    u.facts.os,
                    u.facts.uptime_secs.map(u64_to_db),
                ])
            })
            .collect();
        let batch = serde_json::Value::Array(rows).to_string();
        sqlx::query(
            "update agents set \
               last_seen = max(coalesce(agents.last_seen, s.at), s.at), \
               agent_version = case when s.at >= coalesce(agents.last_seen, s.at) \
                 then coalesce(s.v, agents.agent_version) else agents.agent_version end, \
               hostname = case when s.at >= coalesce(agents.last_seen, s.at) \
                 then coalesce(s.h, agents.hostname) else agents.hostname end, \
               os = case when s.at >= coalesce(agents.last_seen, s.at) \
                 then coalesce(s.o, agents.os) else agents.os end, \
               uptime_secs = case when s.at >= coalesce(agents.last_seen, s.at) \
                 then coalesce(s.u, agents.uptime_secs) else agents.uptime_secs end \
             from (select value ->> 0 as id, value ->> 1 as at, value ->> 2 as v, \
                          value ->> 3 as h, value ->> 4 as o, value ->> 5 as u \
                   from json_each(?1)) as s \
             where agents.agent_id = s.id",
        )
        .bind(batch)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn find_agent(&self, id: AgentId) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "select ",
            agent_select!(),
            " where a.agent_id = ?1"
        ))
        .bind(id_text(id.as_uuid()))
        .fetch_optional(&self.reader)
        .await
        .map_err(store_error)?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn revoke_agent(
        &self,
        id: AgentId,
        entry: &AuditEvent,
    ) -> Result<AgentChangeOutcome, StoreError> {
        agent_admin::revoke_agent(self, id, entry).await
    }

    async fn set_agent_key(
        &self,
        id: AgentId,
        digest: KeyDigest,
        entry: &AuditEvent,
    ) -> Result<AgentChangeOutcome, StoreError> {
        agent_admin::set_agent_key(self, id, digest, entry).await
    }

    async fn update_agent(
        &self,
        id: AgentId,
        change: &AgentChange,
        entry: &AuditEvent,
    ) -> Result<AgentChangeOutcome, StoreError> {
        agent_admin::update_agent(self, id, change, entry).await
    }
}
