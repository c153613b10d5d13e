//! `tech_sessions` on SQLite: the technicians' sessions.

use rmm_application::{AuditNote, SessionRepository, StoreError};
use rmm_domain::{CloseReason, Session, SessionId, Timestamp, TokenId};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row as _, Sqlite, Transaction};

use super::audit::insert_audit;
use super::{SqliteStore, id_text, micros, opt_time_column, time_column, uuid_column};
use crate::{SessionRow, store_error};

fn session_from_row(row: &SqliteRow) -> Result<Session, StoreError> {
    let decoded = SessionRow {
        session_id: uuid_column(row, "tech_sessions", "session_id")?,
        tech_id: uuid_column(row, "tech_sessions", "tech_id")?,
        agent_id: uuid_column(row, "tech_sessions", "agent_id")?,
        opened_at: time_column(row, "opened_at")?,
        last_activity: time_column(row, "last_activity")?,
        status: row.try_get("status").map_err(store_error)?,
        closed_at: opt_time_column(row, "closed_at")?,
        close_reason: row.try_get("close_reason").map_err(store_error)?,
    };
    Session::try_from(decoded)
}

/// Writes `note`'s entry about each of `sessions` (changed at `at`) in `tx`, then commits the
/// change and its entries together. On any failure `tx` is dropped: both roll back.
async fn commit_with_entries(
    mut tx: Transaction<'_, Sqlite>,
    sessions: &[Session],
    note: &AuditNote,
    at: Timestamp,
) -> Result<(), StoreError> {
    for session in sessions {
        insert_audit(&mut tx, &note.for_session(session, at)).await?;
    }
    tx.commit().await.map_err(store_error)
}

fn sessions_from_rows(rows: &[SqliteRow]) -> Result<Vec<Session>, StoreError> {
    rows.iter().map(session_from_row).collect()
}

impl SessionRepository for SqliteStore {
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
        // The owner's count and the insert in one statement: no row when at the cap.
        let done = sqlx::query(
            "insert into tech_sessions (session_id, tech_id, agent_id, opened_at, last_activity, status, closed_at, close_reason, token_id) \
             select ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 \
             where (select count(*) from tech_sessions where tech_id = ?2 \
             and status in ('pending', 'active')) < ?10",
        )
        .bind(id_text(session.id().as_uuid()))
        .bind(id_text(session.owner().as_uuid()))
        .bind(id_text(session.agent().as_uuid()))
        .bind(micros(session.opened_at()))
        .bind(micros(session.last_activity()))
        .bind(session.status().as_str())
        .bind(session.closed_at().map(micros))
        .bind(session.close_reason().map(CloseReason::as_str))
        .bind(opened_with.map(|t| id_text(t.as_uuid())))
        .bind(i64::try_from(cap).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_open_logged_out(&self) -> Result<Vec<Session>, StoreError> {
        let rows = sqlx::query(concat!(
            "select ",
            session_columns!(),
            " from tech_sessions where status in ('pending', 'active') and token_id in \
              (select token_id from auth_tokens where revoke_reason = 'logged_out')"
        ))
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?;
        rows.iter().map(session_from_row).collect()
    }

    async fn list_open_opened_with(&self, token: TokenId) -> Result<Vec<Session>, StoreError> {
        let rows = sqlx::query(concat!(
            "select ",
            session_columns!(),
            " from tech_sessions where token_id = ?1 and status in ('pending', 'active')"
        ))
        .bind(id_text(token.as_uuid()))
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?;
        rows.iter().map(session_from_row).collect()
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(concat!(
            "select ",
            session_columns!(),
            " from tech_sessions where session_id = ?1"
        ))
        .bind(id_text(id.as_uuid()))
        .fetch_optional(&self.reader)
        .await
        .map_err(store_error)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn list_open(&self) -> Result<Vec<Session>, StoreError> {
        let rows = sqlx::query(concat!(
            "select ",
            session_columns!(),
            " from tech_sessions where status in ('pending', 'active') order by opened_at"
        ))
        .fetch_all(&self.reader)
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
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let row = sqlx::query(concat!(
            "update tech_sessions set status = 'active', \
             last_activity = max(last_activity, ?2) \
             where session_id = ?1 and status = 'pending' returning ",
            session_columns!()
        ))
        .bind(id_text(id.as_uuid()))
        .bind(micros(now))
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
        let activated = row.as_ref().map(session_from_row).transpose()?;
        commit_with_entries(tx, activated.as_slice(), note, now).await?;
        Ok(activated.is_some())
    }

    async fn close(
        &self,
        id: SessionId,
        reason: CloseReason,
        now: Timestamp,
        note: &AuditNote,
    ) -> Result<Option<Session>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let row = sqlx::query(concat!(
            "update tech_sessions set status = 'closed', closed_at = ?2, close_reason = ?3 \
             where session_id = ?1 and status in ('pending', 'active') returning ",
            session_columns!()
        ))
        .bind(id_text(id.as_uuid()))
        .bind(micros(now))
        .bind(reason.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
        let closed = row.as_ref().map(session_from_row).transpose()?;
        commit_with_entries(tx, closed.as_slice(), note, now).await?;
        Ok(closed)
    }

    async fn close_all_open(
        &self,
        reason: CloseReason,
        now: Timestamp,
        note: &AuditNote,
    ) -> Result<Vec<Session>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let rows = sqlx::query(concat!(
            "update tech_sessions set status = 'closed', closed_at = ?1, close_reason = ?2 \
             where status in ('pending', 'active') returning ",
            session_columns!()
        ))
        .bind(micros(now))
        .bind(reason.as_str())
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
            "update tech_sessions set status = 'closed', closed_at = ?2, close_reason = ?3 \
             where status = 'active' and last_activity < ?1 returning ",
            session_columns!()
        ))
        .bind(micros(cutoff))
        .bind(micros(now))
        .bind(CloseReason::Idle.as_str())
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
        // The batch travels as one JSON array parameter, so the statement stays static and
        // one statement whatever the batch size (no `in (?, ?, ...)` built at run time, no
        // limit on bound variables).
        let ids: Vec<String> = ids.iter().map(|id| id_text(id.as_uuid())).collect();
        let ids = serde_json::to_string(&ids).map_err(StoreError::backend)?;
        sqlx::query(
            "update tech_sessions set last_activity = max(last_activity, ?2) \
             where session_id in (select value from json_each(?1)) and status = 'active'",
        )
        .bind(ids)
        .bind(micros(at))
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }
}
