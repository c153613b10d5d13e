//! `agents` on PostgreSQL: who connects.

use chrono::{DateTime, Utc};
use rmm_application::{
    AgentChange, AgentChangeOutcome, AgentRecord, AgentRepository, AuditEvent, HostFacts,
    KeyDigest, StoreError,
};
use rmm_domain::{AgentId, Timestamp};
use sqlx::Row as _;
use sqlx::postgres::PgRow;

use super::agent_admin;
use super::{PgStore, from_db, to_db};
use crate::{AgentRow, merge_seen, store_error, u64_to_db};

fn agent_from_row(row: &PgRow) -> Result<AgentRecord, StoreError> {
    let decoded = AgentRow {
        agent_id: row.try_get("agent_id").map_err(store_error)?,
        name: row.try_get("name").map_err(store_error)?,
        key_digest: row.try_get("key_digest").map_err(store_error)?,
        created_at: from_db(row.try_get("created_at").map_err(store_error)?),
        last_seen: row
            .try_get::<Option<DateTime<Utc>>, _>("last_seen")
            .map_err(store_error)?
            .map(from_db),
        agent_version: row.try_get("agent_version").map_err(store_error)?,
        hostname: row.try_get("hostname").map_err(store_error)?,
        os: row.try_get("os").map_err(store_error)?,
        uptime_secs: row.try_get("uptime_secs").map_err(store_error)?,
        group_name: row.try_get("group_name").map_err(store_error)?,
        revoked: row.try_get("revoked").map_err(store_error)?,
    };
    AgentRecord::try_from(decoded)
}

impl AgentRepository for PgStore {
    async fn insert_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "insert into agents (",
            agent_columns!(),
            ", group_id, revoked_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
             (select group_id from groups where name = $10), null)"
        ))
        .bind(agent.id.as_uuid())
        .bind(agent.name.as_str())
        .bind(&agent.key_digest.0[..])
        .bind(to_db(agent.created_at)?)
        .bind(agent.last_seen.map(to_db).transpose()?)
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
            " where a.key_digest = $1"
        ))
        .bind(&digest.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        // Byte order, as SQLite's default BINARY collation sorts: the same list on both
        // backends whatever the server's locale.
        let rows = sqlx::query(concat!(
            "select ",
            agent_select!(),
            " order by a.name collate \"C\", a.agent_id"
        ))
        .fetch_all(&self.pool)
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
        let mut ids = Vec::with_capacity(updates.len());
        let mut times = Vec::with_capacity(updates.len());
        let mut versions = Vec::with_capacity(updates.len());
        let mut hostnames = Vec::with_capacity(updates.len());
        let mut oses = Vec::with_capacity(updates.len());
        let mut uptimes = Vec::with_capacity(updates.len());
        for u in updates {
            ids.push(u.agent.as_uuid());
            times.push(to_db(u.at)?);
            versions.push(u.facts.version);
            hostnames.push(u.facts.hostname);
            oses.push(u.facts.os);
            uptimes.push(u.facts.uptime_secs.map(u64_to_db));
        }
        // One statement for the whole batch (merge_seen left one row per agent, so no agent
        // matches twice). Facts are taken only from a batch at least as new as the stored
        // last_seen; the right-hand sides all see the row's old values.
        sqlx::query(
            "update agents as a set \
               last_seen = greatest(coalesce(a.last_seen, s.seen_at), s.seen_at), \
               agent_version = case when s.seen_at >= coalesce(a.last_seen, s.seen_at) \
                 then coalesce(s.agent_version, a.agent_version) else a.agent_version end, \
               hostname = case when s.seen_at >= coalesce(a.last_seen, s.seen_at) \
                 then coalesce(s.hostname, a.hostname) else a.hostname end, \
               os = case when s.seen_at >= coalesce(a.last_seen, s.seen_at) \
                 then coalesce(s.os, a.os) else a.os end, \
               uptime_secs = case when s.seen_at >= coalesce(a.last_seen, s.seen_at) \
                 then coalesce(s.uptime_secs, a.uptime_secs) else a.uptime_secs end \
             from unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], \
                         $6::int8[]) \
               as s(agent_id, seen_at, agent_version, hostname, os, uptime_secs) \
             where a.agent_id = s.agent_id",
        )
        .bind(ids)
        .bind(times)
        .bind(versions)
        .bind(hostnames)
        .bind(oses)
        .bind(uptimes)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn find_agent(&self, id: AgentId) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "select ",
            agent_select!(),
            " where a.agent_id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
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
