//! The retention sweep's statements on SQLite: stored output and recordings measured,
//! listed oldest end first, and pruned (content deleted, row marked) in one transaction.

use rmm_application::{Pruned, StoreError, StoredOutput};
use rmm_domain::{CommandId, TerminalId, Timestamp};
use uuid::Uuid;

use super::{SqliteStore, id_text, micros};
use crate::{RowError, store_error, sum_from_db};

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
        Ok(sum_from_db(total))
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
                    bytes: sum_from_db(bytes),
                })
            })
            .collect()
    }

    pub(super) async fn delete_output(
        &self,
        ids: &[CommandId],
        at: Timestamp,
    ) -> Result<Pruned, StoreError> {
        self.prune(ids.iter().map(|id| id.as_uuid()), at, &OUTPUT)
            .await
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
        self.prune(ids.iter().map(|id| id.as_uuid()), at, &RECORDINGS)
            .await
    }

    /// Marks the rows of `ids` not yet pruned and deletes their content, in one transaction.
    async fn prune(
        &self,
        ids: impl Iterator<Item = Uuid>,
        at: Timestamp,
        sql: &Prune,
    ) -> Result<Pruned, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let mut pruned = Pruned::default();
        for id in ids {
            let id = id_text(id);
            let marked = sqlx::query(sql.mark)
                .bind(&id)
                .bind(micros(at))
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            if marked.rows_affected() == 0 {
                continue;
            }
            let bytes: i64 = sqlx::query_scalar(sql.size)
                .bind(&id)
                .fetch_one(&mut *tx)
                .await
                .map_err(store_error)?;
            sqlx::query(sql.delete)
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            pruned.items += 1;
            pruned.bytes = pruned.bytes.saturating_add(sum_from_db(bytes));
        }
        tx.commit().await.map_err(store_error)?;
        Ok(pruned)
    }
}

/// What pruning one kind of content takes, per id (`?1`): `mark` sets the row's pruned time
/// (`?2`) where it is ended and not yet pruned; `size` sums its content's bytes; `delete`
/// removes its content.
struct Prune {
    mark: &'static str,
    size: &'static str,
    delete: &'static str,
}

const OUTPUT: Prune = Prune {
    mark: "update commands set output_pruned_at = ?2 where command_id = ?1 \
           and finished_at is not null and output_pruned_at is null",
    size: "select coalesce(sum(length(data)), 0) from command_output where command_id = ?1",
    delete: "delete from command_output where command_id = ?1",
};

const RECORDINGS: Prune = Prune {
    mark: "update recordings set pruned_at = ?2 where recording_id = ?1 \
           and ended_at is not null and pruned_at is null",
    size: "select coalesce(sum(length(data)), 0) from recording_chunks where recording_id = ?1",
    delete: "delete from recording_chunks where recording_id = ?1",
};
