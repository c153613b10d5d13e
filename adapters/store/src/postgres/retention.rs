//! The retention sweep's statements on PostgreSQL: stored output and recordings measured,
//! listed oldest end first, and pruned (content deleted, row marked) in one transaction.

use chrono::{DateTime, Utc};
use rmm_application::{Pruned, StoreError, StoredOutput};
use rmm_domain::{CommandId, TerminalId, Timestamp};
use uuid::Uuid;

use super::{PgStore, from_db, to_db};
use crate::{store_error, sum_from_db};

impl PgStore {
    pub(super) async fn sum_output_bytes(&self) -> Result<u64, StoreError> {
        let total: i64 = sqlx::query_scalar(
            "select coalesce(sum(octet_length(data)), 0)::bigint from command_output",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(sum_from_db(total))
    }

    pub(super) async fn list_ended_output(
        &self,
        ended_before: Option<Timestamp>,
        limit: u32,
    ) -> Result<Vec<StoredOutput>, StoreError> {
        let rows: Vec<(Uuid, DateTime<Utc>, i64)> = sqlx::query_as(
            "select c.command_id, c.finished_at, \
             (select coalesce(sum(octet_length(o.data)), 0)::bigint from command_output o \
              where o.command_id = c.command_id) \
             from commands c \
             where c.output_pruned_at is null and c.finished_at is not null \
             and ($1::timestamptz is null or c.finished_at < $1) \
             order by c.finished_at, c.command_id limit $2",
        )
        .bind(ended_before.map(to_db).transpose()?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(rows
            .into_iter()
            .map(|(id, finished_at, bytes)| StoredOutput {
                id: CommandId::from_uuid(id),
                finished_at: from_db(finished_at),
                bytes: sum_from_db(bytes),
            })
            .collect())
    }

    pub(super) async fn delete_output(
        &self,
        ids: &[CommandId],
        at: Timestamp,
    ) -> Result<Pruned, StoreError> {
        let ids = ids.iter().map(|id| id.as_uuid()).collect();
        self.prune(ids, at, &OUTPUT).await
    }

    pub(super) async fn list_ended_recordings(
        &self,
        ended_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<TerminalId>, StoreError> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "select recording_id from recordings \
             where pruned_at is null and ended_at is not null and ended_at < $1 \
             order by ended_at, recording_id limit $2",
        )
        .bind(to_db(ended_before)?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(ids.into_iter().map(TerminalId::from_uuid).collect())
    }

    pub(super) async fn delete_recordings(
        &self,
        ids: &[TerminalId],
        at: Timestamp,
    ) -> Result<Pruned, StoreError> {
        let ids = ids.iter().map(|id| id.as_uuid()).collect();
        self.prune(ids, at, &RECORDINGS).await
    }

    /// Marks the rows of `ids` not yet pruned and deletes their content, in one transaction.
    async fn prune(
        &self,
        ids: Vec<Uuid>,
        at: Timestamp,
        sql: &Prune,
    ) -> Result<Pruned, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let marked: Vec<Uuid> = sqlx::query_scalar(sql.mark)
            .bind(&ids)
            .bind(to_db(at)?)
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
        let bytes: i64 = sqlx::query_scalar(sql.delete)
            .bind(&marked)
            .fetch_one(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(Pruned {
            items: marked.len() as u64,
            bytes: sum_from_db(bytes),
        })
    }
}

/// What pruning one kind of content takes: `mark` sets its rows' pruned time (`$1` the ids,
/// `$2` the time) where they are ended and not yet pruned, returning the ids it marked;
/// `delete` removes those ids' content, returning the bytes removed.
struct Prune {
    mark: &'static str,
    delete: &'static str,
}

const OUTPUT: Prune = Prune {
    mark: "update commands set output_pruned_at = $2 \
           where command_id = any($1) and finished_at is not null \
           and output_pruned_at is null returning command_id",
    delete: "with gone as (delete from command_output where command_id = any($1) \
             returning octet_length(data) as n) select coalesce(sum(n), 0)::bigint from gone",
};

const RECORDINGS: Prune = Prune {
    mark: "update recordings set pruned_at = $2 \
           where recording_id = any($1) and ended_at is not null and pruned_at is null \
           returning recording_id",
    delete: "with gone as (delete from recording_chunks where recording_id = any($1) \
             returning octet_length(data) as n) select coalesce(sum(n), 0)::bigint from gone",
};
