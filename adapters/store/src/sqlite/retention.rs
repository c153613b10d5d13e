//! The retention sweep's statements on SQLite: stored output and recordings measured,
//! listed oldest end first, and pruned (content deleted, row marked) in one transaction.

use rmm_application::{Pruned, StoreError, StoredOutput};
use rmm_domain::{CommandId, TerminalId, Timestamp};
use uuid::Uuid;

use super::{SqliteStore, id_text, micros};
use crate::{RowError, store_error};

/// A sum or count as read (never negative; saturates rather than fails if it were).
fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn parse_id(table: &'static str, text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|e| RowError::bad(table, format!("{text:?}"), "id", e))
}

impl SqliteStore {
    pub(super) async fn sum_output_bytes(&self) -> Result<u64, StoreError> {
        let total: i64 =
            sqlx::query_scalar("select coalesce(sum(length(data)), 0) from command_output")
                .fetch_one(&self.reader)
                .await
                .map_err(store_error)?;
        Ok(count(total))
    }

    pub(super) async fn list_ended_output(
        &self,
        ended_before: Option<Timestamp>,
        limit: u32,
    ) -> Result<Vec<StoredOutput>, StoreError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "select c.command_id, c.finished_at, \
             (select coalesce(sum(length(o.data)), 0) from command_output o \
              where o.command_id = c.command_id) \
             from commands c \
             where c.output_pruned_at is null and c.finished_at is not null \
             and (?1 is null or c.finished_at < ?1) \
             order by c.finished_at, c.command_id limit ?2",
        )
        .bind(ended_before.map(micros))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?;
        rows.into_iter()
            .map(|(id, finished_at, bytes)| {
                Ok(StoredOutput {
                    id: CommandId::from_uuid(parse_id("commands", &id)?),
                    finished_at: Timestamp::from_unix_micros(finished_at),
                    bytes: count(bytes),
                })
            })
            .collect()
    }

    pub(super) async fn delete_output(
        &self,
        ids: &[CommandId],
        at: Timestamp,
    ) -> Result<Pruned, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let mut pruned = Pruned::default();
        for id in ids {
            let id = id_text(id.as_uuid());
            let marked = sqlx::query(
                "update commands set output_pruned_at = ?2 where command_id = ?1 \
                 and finished_at is not null and output_pruned_at is null",
            )
            .bind(&id)
            .bind(micros(at))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
            if marked.rows_affected() == 0 {
                continue;
            }
            let bytes: i64 = sqlx::query_scalar(
                "select coalesce(sum(length(data)), 0) from command_output where command_id = ?1",
            )
            .bind(&id)
            .fetch_one(&mut *tx)
            .await
            .map_err(store_error)?;
            sqlx::query("delete from command_output where command_id = ?1")
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            pruned.items += 1;
            pruned.bytes = pruned.bytes.saturating_add(count(bytes));
        }
        tx.commit().await.map_err(store_error)?;
        Ok(pruned)
    }

    pub(super) async fn list_ended_recordings(
        &self,
        ended_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<TerminalId>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "select recording_id from recordings \
             where pruned_at is null and ended_at is not null and ended_at < ?1 \
             order by ended_at, recording_id limit ?2",
        )
        .bind(micros(ended_before))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?;
        ids.iter()
            .map(|id| Ok(TerminalId::from_uuid(parse_id("recordings", id)?)))
            .collect()
    }

    pub(super) async fn delete_recordings(
        &self,
        ids: &[TerminalId],
        at: Timestamp,
    ) -> Result<Pruned, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let mut pruned = Pruned::default();
        for id in ids {
            let id = id_text(id.as_uuid());
            let marked = sqlx::query(
                "update recordings set pruned_at = ?2 where recording_id = ?1 \
                 and ended_at is not null and pruned_at is null",
            )
            .bind(&id)
            .bind(micros(at))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
            if marked.rows_affected() == 0 {
                continue;
            }
            let bytes: i64 = sqlx::query_scalar(
                "select coalesce(sum(length(data)), 0) from recording_chunks \
                 where recording_id = ?1",
            )
            .bind(&id)
            .fetch_one(&mut *tx)
            .await
            .map_err(store_error)?;
            sqlx::query("delete from recording_chunks where recording_id = ?1")
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            pruned.items += 1;
            pruned.bytes = pruned.bytes.saturating_add(count(bytes));
        }
        tx.commit().await.map_err(store_error)?;
        Ok(pruned)
    }
}
