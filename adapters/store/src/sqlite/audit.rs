//! `audit_events` on SQLite: the audit trail.

use rmm_application::{AuditEntry, AuditEvent, AuditLog, AuditQuery, StoreError};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{QueryBuilder, Row as _, Sqlite};

use super::{SqliteStore, id_text, micros, opt_uuid_column, time_column};
use crate::{AuditDetails, AuditRow, audit_page_size, store_error};

fn audit_from_row(row: &SqliteRow) -> Result<AuditEntry, StoreError> {
    const TABLE: &str = "audit_events";
    let decoded = AuditRow {
        audit_id: row.try_get("audit_id").map_err(store_error)?,
        occurred_at: time_column(row, "occurred_at")?,
        action: row.try_get("action").map_err(store_error)?,
        tech_id: opt_uuid_column(row, TABLE, "tech_id")?,
        agent_id: opt_uuid_column(row, TABLE, "agent_id")?,
        session_id: opt_uuid_column(row, TABLE, "session_id")?,
        detail: row.try_get("detail").map_err(store_error)?,
        command_id: opt_uuid_column(row, TABLE, "command_id")?,
        command: row.try_get("command").map_err(store_error)?,
        status: row.try_get("status").map_err(store_error)?,
        exit_code: row.try_get("exit_code").map_err(store_error)?,
        stdout_bytes: row.try_get("stdout_bytes").map_err(store_error)?,
        stderr_bytes: row.try_get("stderr_bytes").map_err(store_error)?,
        duration_ms: row.try_get("duration_ms").map_err(store_error)?,
        path: row.try_get("path").map_err(store_error)?,
        direction: row.try_get("direction").map_err(store_error)?,
        size_bytes: row.try_get("size_bytes").map_err(store_error)?,
        sha256: row.try_get("sha256").map_err(store_error)?,
        result: row.try_get("result").map_err(store_error)?,
    };
    AuditEntry::try_from(decoded)
}

/// Inserts one entry on `conn`: a pooled connection, or the transaction of the change it
/// records (then it commits or rolls back with that change).
pub(super) async fn insert_audit(
    conn: &mut SqliteConnection,
    event: &AuditEvent,
) -> Result<(), StoreError> {
    let d = AuditDetails::of(event);
    sqlx::query(
        "insert into audit_events (occurred_at, action, tech_id, agent_id, session_id, detail, \
         command_id, command, status, exit_code, stdout_bytes, stderr_bytes, duration_ms, \
         path, direction, size_bytes, sha256, result) \
         values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
         ?18)",
    )
    .bind(micros(event.at))
    .bind(event.action.as_str())
    .bind(event.user.map(|u| id_text(u.as_uuid())))
    .bind(event.agent.map(|a| id_text(a.as_uuid())))
    .bind(event.session.map(|s| id_text(s.as_uuid())))
    .bind(event.detail.as_deref())
    .bind(d.command_id.map(id_text))
    .bind(d.command)
    .bind(d.status)
    .bind(d.exit_code)
    .bind(d.stdout_bytes)
    .bind(d.stderr_bytes)
    .bind(d.duration_ms)
    .bind(d.path)
    .bind(d.direction)
    .bind(d.size_bytes)
    .bind(d.sha256)
    .bind(d.result)
    .execute(conn)
    .await
    .map_err(store_error)?;
    Ok(())
}

impl AuditLog for SqliteStore {
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(store_error)?;
        insert_audit(&mut conn, event).await
    }

    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        // Only the filters in use go into the statement (from fixed fragments; every value is
        // bound): SQLite plans a statement once, and `?n is null or ...` would keep it off the
        // (tech_id, audit_id) / (agent_id, audit_id) indexes for good.
        let mut sql = QueryBuilder::<Sqlite>::new(concat!(
            "select ",
            audit_columns!(),
            " from audit_events where true"
        ));
        if let Some(user) = query.user {
            sql.push(" and tech_id = ")
                .push_bind(id_text(user.as_uuid()));
        }
        if let Some(agent) = query.agent {
            sql.push(" and agent_id = ")
                .push_bind(id_text(agent.as_uuid()));
        }
        if let Some(session) = query.session {
            sql.push(" and session_id = ")
                .push_bind(id_text(session.as_uuid()));
        }
        if let Some(since) = query.since {
            sql.push(" and occurred_at >= ").push_bind(micros(since));
        }
        if let Some(until) = query.until {
            sql.push(" and occurred_at < ").push_bind(micros(until));
        }
        if let Some(before) = query.before {
            sql.push(" and audit_id < ").push_bind(before);
        }
        sql.push(" order by audit_id desc limit ")
            .push_bind(audit_page_size(query.limit));
        let rows = sql
            .build()
            .fetch_all(&self.reader)
            .await
            .map_err(store_error)?;
        rows.iter().map(audit_from_row).collect()
    }
}
