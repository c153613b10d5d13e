//! `recordings` and `recording_chunks` on PostgreSQL: terminal recordings, stored in chunks
//! as they are written.

use chrono::{DateTime, Utc};
use rmm_application::{Pruned, RecordingQuery, RecordingRecord, RecordingRepository, StoreError};
use rmm_domain::{TerminalId, Timestamp};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row as _};

use super::{PgStore, from_db, to_db};
use crate::recording::{
    RecordingRow, chunk_len, recording_columns, recording_page_size, recording_pruned_column,
};
use crate::{store_error, u64_to_db};

fn recording_from_row(row: &PgRow) -> Result<RecordingRecord, StoreError> {
    let decoded = RecordingRow {
        recording_id: row.try_get("recording_id").map_err(store_error)?,
        session_id: row.try_get("session_id").map_err(store_error)?,
        agent_id: row.try_get("agent_id").map_err(store_error)?,
        user_id: row.try_get("user_id").map_err(store_error)?,
        started_at: from_db(row.try_get("started_at").map_err(store_error)?),
        ended_at: row
            .try_get::<Option<DateTime<Utc>>, _>("ended_at")
            .map_err(store_error)?
            .map(from_db),
        cols: i64::from(row.try_get::<i32, _>("cols").map_err(store_error)?),
        rows: i64::from(row.try_get::<i32, _>("rows").map_err(store_error)?),
        term: row.try_get("term").map_err(store_error)?,
        command: row.try_get("command").map_err(store_error)?,
        size: row.try_get("size").map_err(store_error)?,
        truncated: row.try_get("truncated").map_err(store_error)?,
        pruned: row.try_get("pruned").map_err(store_error)?,
    };
    RecordingRecord::try_from(decoded)
}

impl RecordingRepository for PgStore {
    async fn create(&self, recording: &RecordingRecord) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "insert into recordings (",
            recording_columns!(),
            ") values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .bind(recording.id.as_uuid())
        .bind(recording.session.as_uuid())
        .bind(recording.agent.as_uuid())
        .bind(recording.user.as_uuid())
        .bind(to_db(recording.started_at)?)
        .bind(recording.ended_at.map(to_db).transpose()?)
        .bind(i32::from(recording.cols))
        .bind(i32::from(recording.rows))
        .bind(recording.term.as_str())
        .bind(recording.command.as_deref())
        .bind(u64_to_db(recording.size))
        .bind(recording.truncated)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn append(&self, id: TerminalId, seq: u32, data: &[u8]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let stored = sqlx::query(
            "insert into recording_chunks (recording_id, seq, data) values ($1, $2, $3) \
             on conflict (recording_id, seq) do nothing",
        )
        .bind(id.as_uuid())
        .bind(i64::from(seq))
        .bind(data)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        // A retry of a stored chunk inserts nothing and so must not count it again.
        if stored.rows_affected() == 1 {
            sqlx::query("update recordings set size = size + $2 where recording_id = $1")
                .bind(id.as_uuid())
                .bind(chunk_len(data))
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)
    }

    async fn finish(
        &self,
        id: TerminalId,
        ended_at: Timestamp,
        truncated: bool,
    ) -> Result<(), StoreError> {
        sqlx::query("update recordings set ended_at = $2, truncated = $3 where recording_id = $1")
            .bind(id.as_uuid())
            .bind(to_db(ended_at)?)
            .bind(truncated)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn get_recording(&self, id: TerminalId) -> Result<Option<RecordingRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "select ",
            recording_columns!(),
            recording_pruned_column!(),
            " from recordings where recording_id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.as_ref().map(recording_from_row).transpose()
    }

    async fn list_recordings(
        &self,
        query: &RecordingQuery,
    ) -> Result<Vec<RecordingRecord>, StoreError> {
        // Only the filters in use go into the statement, as for the audit log, so each
        // combination gets a plan that can use the (agent_id / user_id, started_at) indexes.
        let mut sql = QueryBuilder::<Postgres>::new(concat!(
            "select ",
            recording_columns!(),
            recording_pruned_column!(),
            " from recordings where true"
        ));
        if let Some(agent) = query.agent {
            sql.push(" and agent_id = ").push_bind(agent.as_uuid());
        }
        if let Some(user) = query.user {
            sql.push(" and user_id = ").push_bind(user.as_uuid());
        }
        if let Some(since) = query.since {
            sql.push(" and started_at >= ").push_bind(to_db(since)?);
        }
        if let Some(until) = query.until {
            sql.push(" and started_at < ").push_bind(to_db(until)?);
        }
        sql.push(" order by started_at desc, recording_id desc limit ")
            .push_bind(recording_page_size(query.limit));
        let rows = sql
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter().map(recording_from_row).collect()
    }

    async fn chunk(&self, id: TerminalId, seq: u32) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar("select data from recording_chunks where recording_id = $1 and seq = $2")
            .bind(id.as_uuid())
            .bind(i64::from(seq))
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)
    }

    async fn finish_abandoned(&self, at: Timestamp) -> Result<u64, StoreError> {
        // Node `$2`'s: of its own sessions, and of sessions deleted since (no other node would
        // finish those). All of them for the single node.
        let done = sqlx::query(
            "update recordings r set ended_at = $1 where ended_at is null and ($2 = '' or \
             not exists (select 1 from tech_sessions s where s.session_id = r.session_id \
             and s.node_id <> $2))",
        )
        .bind(to_db(at)?)
        .bind(&*self.node)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected())
    }

    async fn ended_recordings(
        &self,
        ended_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<TerminalId>, StoreError> {
        self.list_ended_recordings(ended_before, limit).await
    }

    async fn prune_recordings(
        &self,
        ids: &[TerminalId],
        at: Timestamp,
    ) -> Result<Pruned, StoreError> {
        self.delete_recordings(ids, at).await
    }
}
