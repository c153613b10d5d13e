//! `tech_sessions` on PostgreSQL: the technicians' sessions.

use chrono::{DateTime, Utc};
use rmm_application::{AuditNote, SessionRepository, StoreError};
use rmm_domain::{CloseReason, Session, SessionId, Timestamp, TokenId};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row as _, Transaction};
use uuid::Uuid;

use super::audit::insert_audit;
use super::{PgStore, from_db, to_db};
use crate::{SessionRow, store_error};

fn session_from_row(row: &PgRow) -> Result<Session, StoreError> {
    let decoded = SessionRow {
        session_id: row.try_get("session_id").map_err(store_error)?,
        tech_id: row.try_get("tech_id").map_err(store_error)?,
        agent_id: row.try_get("agent_id").map_err(store_error)?,
        opened_at: from_db(row.try_get("opened_at").map_err(store_error)?),
        last_activity: from_db(row.try_get("last_activity").map_err(store_error)?),
        status: row.try_get("status").map_err(store_error)?,
        closed_at: row
            .try_get::<Option<DateTime<Utc>>, _>("closed_at")
            .map_err(store_error)?
            .map(from_db),
        close_reason: row.try_get("close_reason").map_err(store_error)?,
    };
    Session::try_from(decoded)
}

/// Writes `note`'s entry about each of `sessions` (changed at `at`) in `tx`, then commits the
/// change and its entries together. On any failure `tx` is dropped: both roll back.
async fn commit_with_entries(
    mut tx: Transaction<'_, Postgres>,
    sessions: &[Session],
    note: &AuditNote,
    at: Timestamp,
) -> Result<(), StoreError> {
    for session in sessions {
        insert_audit(&mut tx, &note.for_session(session, at)).await?;
    }
    tx.commit().await.map_err(store_error)
}

/// The common table expression `entry` of a statement whose `changed` returns session rows:
/// `note`'s entry about each changed session (what [`AuditNote::for_session`] builds), at
/// `$at`, with action `$action` and detail `$detail`.
macro_rules! session_entry {
    ($at:literal, $action:literal, $detail:literal) => {
        concat!(
            "entry as (insert into audit_events (occurred_at, action, tech_id, agent_id, \
             session_id, detail) select ",
            $at,
            ", ",
            $action,
            ", tech_id, agent_id, session_id, ",
            $detail,
            " from changed)"
        )
    };
}

/// The condition "the session is node `$n`'s" of a store [`PgStore::for_node`]: any session
/// for the single node (`''`); for a cluster node, its own and those a single-node server
/// left (`''`: the first cluster node to start reconciles them, so a switch to cluster mode
/// leaves no session open that no node would close).
macro_rules! of_node {
    ($n:literal) => {
        concat!("(", $n, " = '' or node_id in (", $n, ", ''))")
    };
}

pub(super) fn sessions_from_rows(rows: &[PgRow]) -> Result<Vec<Session>, StoreError> {
    rows.iter().map(session_from_row).collect()
}

impl SessionRepository for PgStore {
    async fn insert_pending(
        &self,
        session: &Session,
        opened_with: Option<TokenId>,
    ) -> Result<(), StoreError> {
        // Uncapped: the count never reaches the cap, so this inserts or meets the unique index.
        self.insert_pending_capped(session, opened_with, u64::MAX)
            .await
            .map(|_| ())
    }

    async fn insert_pending_capped(
        &self,
        session: &Session,
        opened_with: Option<TokenId>,
        cap: u64,
    ) -> Result<bool, StoreError> {
        // The owner's count and the insert in one statement: no row when at the cap. The count
        // is of every node's sessions: the cap is the cluster's.
        let done = sqlx::query(
            "insert into tech_sessions (session_id, tech_id, agent_id, opened_at, last_activity, status, closed_at, close_reason, token_id, node_id) \
             select $1, $2, $3, $4, $5, $6, $7, $8, $9, $11 \
             where (select count(*) from tech_sessions where tech_id = $2 \
             and status in ('pending', 'active')) < $10",
        )
        .bind(session.id().as_uuid())
        .bind(session.owner().as_uuid())
        .bind(session.agent().as_uuid())
        .bind(to_db(session.opened_at())?)
        .bind(to_db(session.last_activity())?)
        .bind(session.status().as_str())
        .bind(session.closed_at().map(to_db).transpose()?)
        .bind(session.close_reason().map(CloseReason::as_str))
        .bind(opened_with.map(|t| t.as_uuid()))
        .bind(i64::try_from(cap).unwrap_or(i64::MAX))
        .bind(&*self.node)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_open_logged_out(&self) -> Result<Vec<Session>, StoreError> {
        let rows = sqlx::query(concat!(
            "select ",
            session_columns!(),
            " from tech_sessions where status in ('pending', 'active') and ",
            of_node!("$1"),
            " and token_id in \
              (select token_id from auth_tokens where revoke_reason = 'logged_out')"
        ))
        .bind(&*self.node)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter().map(session_from_row).collect()
    }

    async fn list_open_opened_with(&self, token: TokenId) -> Result<Vec<Session>, StoreError> {
        let rows = sqlx::query(concat!(
            "select ",
            session_columns!(),
            " from tech_sessions where token_id = $1 and status in ('pending', 'active') and ",
            of_node!("$2")
        ))
        .bind(token.as_uuid())
        .bind(&*self.node)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter().map(session_from_row).collect()
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(concat!(
            "select ",
            session_columns!(),
            " from tech_sessions where session_id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn list_open(&self) -> Result<Vec<Session>, StoreError> {
        let rows = sqlx::query(concat!(
            "select ",
            session_columns!(),
            " from tech_sessions where status in ('pending', 'active') and ",
            of_node!("$1"),
            " order by opened_at"
        ))
        .bind(&*self.node)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        sessions_from_rows(&rows)
    }

    async fn activate(
        &self,
        id: SessionId,
        now: Timestamp,
        note: &AuditNote,
    ) -> Result<bool, StoreError> {
        // One statement, so one round trip and one implicit transaction: the entry is
        // inserted from the row the update changed (none when it changed none), and an
        // insert that fails undoes the update.
        let row = sqlx::query(concat!(
            "with changed as (update tech_sessions set status = 'active', \
             last_activity = greatest(last_activity, $2) \
             where session_id = $1 and status = 'pending' returning ",
            session_columns!(),
            "), ",
            session_entry!("$2", "$3", "$4"),
            " select ",
            session_columns!(),
            " from changed"
        ))
        .bind(id.as_uuid())
        .bind(to_db(now)?)
        .bind(note.action.as_str())
        .bind(note.detail.as_deref())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(row.as_ref().map(session_from_row).transpose()?.is_some())
    }

    async fn close(
        &self,
        id: SessionId,
        reason: CloseReason,
        now: Timestamp,
        note: &AuditNote,
    ) -> Result<Option<Session>, StoreError> {
        // As `activate`: the change and its entry in one statement.
        let row = sqlx::query(concat!(
            "with changed as (update tech_sessions set status = 'closed', closed_at = $2, \
             close_reason = $3 \
             where session_id = $1 and status in ('pending', 'active') returning ",
            session_columns!(),
            "), ",
            session_entry!("$2", "$4", "$5"),
            " select ",
            session_columns!(),
            " from changed"
        ))
        .bind(id.as_uuid())
        .bind(to_db(now)?)
        .bind(reason.as_str())
        .bind(note.action.as_str())
        .bind(note.detail.as_deref())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn close_all_open(
        &self,
        reason: CloseReason,
        now: Timestamp,
        note: &AuditNote,
    ) -> Result<Vec<Session>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let rows = sqlx::query(concat!(
            "update tech_sessions set status = 'closed', closed_at = $1, close_reason = $2 \
             where status in ('pending', 'active') and ",
            of_node!("$3"),
            " returning ",
            session_columns!()
        ))
        .bind(to_db(now)?)
        .bind(reason.as_str())
        .bind(&*self.node)
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        let closed = sessions_from_rows(&rows)?;
        commit_with_entries(tx, &closed, note, now).await?;
        Ok(closed)
    }

    async fn close_idle(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
        note: &AuditNote,
    ) -> Result<Vec<Session>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let rows = sqlx::query(concat!(
            "update tech_sessions set status = 'closed', closed_at = $2, close_reason = $3 \
             where status = 'active' and last_activity < $1 and ",
            of_node!("$4"),
            " returning ",
            session_columns!()
        ))
        .bind(to_db(cutoff)?)
        .bind(to_db(now)?)
        .bind(CloseReason::Idle.as_str())
        .bind(&*self.node)
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        let closed = sessions_from_rows(&rows)?;
        commit_with_entries(tx, &closed, note, now).await?;
        Ok(closed)
    }

    async fn touch(&self, ids: &[SessionId], at: Timestamp) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = ids.iter().map(SessionId::as_uuid).collect();
        sqlx::query(
            "update tech_sessions set last_activity = greatest(last_activity, $2) \
             where session_id = any($1) and status = 'active'",
        )
        .bind(ids)
        .bind(to_db(at)?)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }
}
