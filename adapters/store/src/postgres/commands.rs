//! `commands` and `command_output` on PostgreSQL: commands run in sessions and their output.

use chrono::{DateTime, Utc};
use rmm_application::{
    AuditEvent, AuditNote, CommandOutcome, CommandRecord, CommandRepository, OutputStream, Pruned,
    StoreError, StoredOutput,
};
use rmm_domain::{CommandEndReason, CommandId, Timestamp};
use sqlx::Row as _;
use sqlx::postgres::{PgConnection, PgRow};

use super::audit::insert_audit;
use super::{PgStore, from_db, to_db};
use crate::{CommandRow, seq_to_db, store_error, u64_from_db, u64_to_db};

fn opt_time(row: &PgRow, column: &str) -> Result<Option<Timestamp>, StoreError> {
    Ok(row
        .try_get::<Option<DateTime<Utc>>, _>(column)
        .map_err(store_error)?
        .map(from_db))
}

/// The statement ending the running commands that meet `$cond` (on `commands`, with `$4`):
/// status `$1`, ended at `$2` for reason `$3`, returning them.
macro_rules! end_running_where {
    ($cond:literal) => {
        concat!(
            "update commands set status = $1, finished_at = $2, end_reason = $3 \
             where status = 'running' and ",
            $cond,
            " returning ",
            command_columns!(),
            command_pruned_column!()
        )
    };
}

/// Ends the running commands of node `$4`'s sessions ([`PgStore::for_node`]; every running
/// command for the single node, `''`).
const END_RUNNING_OF_STORE_NODE: &str = end_running_where!(
    "($4 = '' or exists (select 1 from tech_sessions s \
     where s.session_id = commands.session_id and s.node_id = $4))"
);

/// Ends the running commands of node `$4`'s sessions, of that node only (even `''`).
pub(super) const END_RUNNING_OF_NODE: &str = end_running_where!(
    "exists (select 1 from tech_sessions s \
     where s.session_id = commands.session_id and s.node_id = $4)"
);

/// Runs `statement` (one of the `END_RUNNING_*`) for `node` in `conn` and writes `note`'s
/// entry about each command it ended; the ended commands. The caller commits.
pub(super) async fn end_running(
    conn: &mut PgConnection,
    statement: &'static str,
    node: &str,
    reason: CommandEndReason,
    at: Timestamp,
    note: &AuditNote,
) -> Result<Vec<CommandRecord>, StoreError> {
    let rows = sqlx::query(statement)
        .bind(reason.status().as_str())
        .bind(to_db(at)?)
        .bind(reason.as_str())
        .bind(node)
        .fetch_all(&mut *conn)
        .await
        .map_err(store_error)?;
    let ended = rows
        .iter()
        .map(command_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    for command in &ended {
        insert_audit(conn, &note.for_ended_command(command)).await?;
    }
    Ok(ended)
}

fn command_from_row(row: &PgRow) -> Result<CommandRecord, StoreError> {
    let decoded = CommandRow {
        command_id: row.try_get("command_id").map_err(store_error)?,
        session_id: row.try_get("session_id").map_err(store_error)?,
        agent_id: row.try_get("agent_id").map_err(store_error)?,
        tech_id: row.try_get("tech_id").map_err(store_error)?,
        channel_id: row.try_get("channel_id").map_err(store_error)?,
        command: row.try_get("command").map_err(store_error)?,
        timeout_secs: row.try_get("timeout_secs").map_err(store_error)?,
        status: row.try_get("status").map_err(store_error)?,
        exit_code: row.try_get("exit_code").map_err(store_error)?,
        signal: row.try_get("signal").map_err(store_error)?,
        started_at: from_db(row.try_get("started_at").map_err(store_error)?),
        finished_at: opt_time(row, "finished_at")?,
        stdout_bytes: row.try_get("stdout_bytes").map_err(store_error)?,
        stderr_bytes: row.try_get("stderr_bytes").map_err(store_error)?,
        stdout_truncated: row.try_get("stdout_truncated").map_err(store_error)?,
        stderr_truncated: row.try_get("stderr_truncated").map_err(store_error)?,
        output_pruned: row.try_get("is_output_pruned").map_err(store_error)?,
        end_reason: row.try_get("end_reason").map_err(store_error)?,
    };
    CommandRecord::try_from(decoded)
}

impl CommandRepository for PgStore {
    async fn insert_command(
        &self,
        command: &CommandRecord,
        entry: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        sqlx::query(concat!(
            "insert into commands (",
            command_columns!(),
            ") values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        ))
        .bind(command.id.as_uuid())
        .bind(command.session.as_uuid())
        .bind(command.agent.as_uuid())
        .bind(command.owner.as_uuid())
        .bind(command.channel.as_str())
        .bind(command.text.as_str())
        .bind(u64_to_db(command.timeout_secs))
        .bind(command.status.as_str())
        .bind(command.exit_code)
        .bind(command.signal.as_deref())
        .bind(to_db(command.started_at)?)
        .bind(command.finished_at.map(to_db).transpose()?)
        .bind(u64_to_db(command.stdout_bytes))
        .bind(u64_to_db(command.stderr_bytes))
        .bind(command.stdout_truncated)
        .bind(command.stderr_truncated)
        .bind(command.end_reason.map(CommandEndReason::as_str))
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        insert_audit(&mut tx, entry).await?;
        tx.commit().await.map_err(store_error)
    }

    async fn get_command(&self, id: CommandId) -> Result<Option<CommandRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "select ",
            command_columns!(),
            command_pruned_column!(),
            " from commands where command_id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.as_ref().map(command_from_row).transpose()
    }

    async fn append_output(
        &self,
        id: CommandId,
        stream: OutputStream,
        seq: u64,
        data: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "insert into command_output (command_id, stream, seq, data) values ($1, $2, $3, $4)",
        )
        .bind(id.as_uuid())
        .bind(stream.as_str())
        .bind(seq_to_db(seq)?)
        .bind(data)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn read_output(
        &self,
        id: CommandId,
        stream: OutputStream,
        from: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "select seq, data from command_output \
             where command_id = $1 and stream = $2 and seq >= $3 order by seq limit $4",
        )
        .bind(id.as_uuid())
        .bind(stream.as_str())
        .bind(u64_to_db(from))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.into_iter()
            .map(|(seq, data)| Ok((u64_from_db("command_output", id, "seq", seq)?, data)))
            .collect()
    }

    async fn finish_command(
        &self,
        id: CommandId,
        outcome: &CommandOutcome,
        entry: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let done = sqlx::query(
            "update commands set status = $2, exit_code = $3, signal = $4, finished_at = $5, \
             stdout_bytes = $6, stderr_bytes = $7, stdout_truncated = $8, stderr_truncated = $9, \
             end_reason = $10 where command_id = $1 and status = 'running'",
        )
        .bind(id.as_uuid())
        .bind(outcome.status.as_str())
        .bind(outcome.exit_code)
        .bind(outcome.signal.as_deref())
        .bind(to_db(outcome.finished_at)?)
        .bind(u64_to_db(outcome.stdout_bytes))
        .bind(u64_to_db(outcome.stderr_bytes))
        .bind(outcome.stdout_truncated)
        .bind(outcome.stderr_truncated)
        .bind(outcome.end_reason.map(CommandEndReason::as_str))
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        let finished = done.rows_affected() == 1;
        if finished {
            insert_audit(&mut tx, entry).await?;
        }
        tx.commit().await.map_err(store_error)?;
        Ok(finished)
    }

    async fn fail_running_commands(
        &self,
        reason: CommandEndReason,
        at: Timestamp,
        note: &AuditNote,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let ended = end_running(
            &mut tx,
            END_RUNNING_OF_STORE_NODE,
            &self.node,
            reason,
            at,
            note,
        )
        .await?;
        tx.commit().await.map_err(store_error)?;
        Ok(ended)
    }

    async fn stored_output_bytes(&self) -> Result<u64, StoreError> {
        self.sum_output_bytes().await
    }

    async fn ended_output(
        &self,
        ended_before: Option<Timestamp>,
        limit: u32,
    ) -> Result<Vec<StoredOutput>, StoreError> {
        self.list_ended_output(ended_before, limit).await
    }

    async fn prune_output(&self, ids: &[CommandId], at: Timestamp) -> Result<Pruned, StoreError> {
        self.delete_output(ids, at).await
    }
}
