//! `cluster_nodes` on PostgreSQL: the nodes' leases, and the sweep that closes what a lost
//! node held. Lease times are the database's `now()`, never a node's clock.

use std::time::Duration;

use rmm_application::{AuditNote, LostNode, NodeLeases, StoreError};
use rmm_domain::{CloseReason, CommandEndReason, SessionId, Timestamp};

use super::audit::insert_audit;
use super::commands::{END_RUNNING_OF_NODE, end_running};
use super::sessions::sessions_from_rows;
use super::{PgStore, rolled_back, to_db};
use crate::{store_error, u64_from_db, u64_to_db};

impl NodeLeases for PgStore {
    async fn join(&self, node: &str, ttl: Duration) -> Result<u64, StoreError> {
        // The generation comes from a sequence, not the row: it never repeats for a node,
        // even after its row was deleted (left or claimed) and made again.
        let generation: i64 = sqlx::query_scalar(
            "insert into cluster_nodes (node_id, generation, lease_until) \
             values ($1, nextval('cluster_node_generations'), now() + make_interval(secs => $2)) \
             on conflict (node_id) do update set generation = excluded.generation, \
             joined_at = excluded.joined_at, lease_until = excluded.lease_until \
             returning generation",
        )
        .bind(node)
        .bind(ttl.as_secs_f64())
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)?;
        u64_from_db("cluster_nodes", node, "generation", generation)
    }

    async fn renew(&self, node: &str, generation: u64, ttl: Duration) -> Result<bool, StoreError> {
        // A sweep claiming the node holds its row: this waits for it, then finds no row.
        let done = sqlx::query(
            "update cluster_nodes set lease_until = now() + make_interval(secs => $3) \
             where node_id = $1 and generation = $2",
        )
        .bind(node)
        .bind(u64_to_db(generation))
        .bind(ttl.as_secs_f64())
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn leave(&self, node: &str, generation: u64) -> Result<(), StoreError> {
        sqlx::query("delete from cluster_nodes where node_id = $1 and generation = $2")
            .bind(node)
            .bind(u64_to_db(generation))
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn live_nodes(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("select node_id from cluster_nodes where lease_until > now()")
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)
    }

    async fn node_of_open_session(&self, session: SessionId) -> Result<Option<String>, StoreError> {
        let node: Option<String> = sqlx::query_scalar(
            "select node_id from tech_sessions \
             where session_id = $1 and status in ('pending', 'active') and node_id <> ''",
        )
        .bind(session.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(node)
    }

    /// A failure leaves the failing node (and those after it) for the next sweep, and reports
    /// none of the nodes this call already claimed.
    async fn close_lost_nodes(
        &self,
        now: Timestamp,
        session_note: &AuditNote,
        command_note: &AuditNote,
    ) -> Result<Vec<LostNode>, StoreError> {
        let expired: Vec<String> = sqlx::query_scalar(
            "select node_id from cluster_nodes where lease_until < now() order by node_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        let mut lost = Vec::new();
        for node in expired {
            if let Some(closed) = self
                .close_lost_node(node, now, session_note, command_note)
                .await?
            {
                lost.push(closed);
            }
        }
        Ok(lost)
    }
}

impl PgStore {
    /// Claims `node` if its lease still ran out and no other sweep holds it, and closes what it
    /// held, in one transaction. `None` when it was renewed, rejoined or claimed meanwhile.
    async fn close_lost_node(
        &self,
        node: String,
        now: Timestamp,
        session_note: &AuditNote,
        command_note: &AuditNote,
    ) -> Result<Option<LostNode>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        // The row stays locked until the commit: a concurrent sweep skips it, a renewal waits
        // and then finds it gone.
        let generation: Option<i64> = sqlx::query_scalar(
            "delete from cluster_nodes where node_id = (select node_id from cluster_nodes \
             where node_id = $1 and lease_until < now() for update skip locked) \
             returning generation",
        )
        .bind(&node)
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
        let Some(generation) = generation else {
            return rolled_back(tx, None).await;
        };
        let generation = u64_from_db("cluster_nodes", &node, "generation", generation)?;
        let rows = sqlx::query(concat!(
            "update tech_sessions set status = 'closed', closed_at = $2, close_reason = $3 \
             where node_id = $1 and status in ('pending', 'active') returning ",
            session_columns!()
        ))
        .bind(&node)
        .bind(to_db(now)?)
        .bind(CloseReason::NodeLost.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        let sessions = sessions_from_rows(&rows)?;
        for session in &sessions {
            insert_audit(&mut tx, &session_note.for_session(session, now)).await?;
        }
        // Every running command and open recording of the node's sessions, also those of a
        // session closed earlier by id from another node: only the lost node would have
        // ended them.
        let commands = end_running(
            &mut tx,
            END_RUNNING_OF_NODE,
            &node,
            CommandEndReason::SessionClosed(CloseReason::NodeLost),
            now,
            command_note,
        )
        .await?;
        let recordings = sqlx::query(
            "update recordings r set ended_at = $1 where ended_at is null and exists \
             (select 1 from tech_sessions s where s.session_id = r.session_id \
             and s.node_id = $2)",
        )
        .bind(to_db(now)?)
        .bind(&node)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        tx.commit().await.map_err(store_error)?;
        Ok(Some(LostNode {
            node,
            generation,
            sessions,
            commands,
            recordings,
        }))
    }
}
