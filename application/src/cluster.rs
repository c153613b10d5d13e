//! Cluster mode's sweep: a node whose lease ran out (killed, or cut off from the database)
//! left its sessions open and their commands running; a live node closes them for it, as a
//! restart closes what the previous process left (see `tunnels`' `reconcile_after_restart`).

use rmm_domain::{CloseReason, Timestamp};

use crate::ports::{AuditAction, AuditNote, LostNode, NodeLeases, StoreError};

/// Claims every node whose lease ran out and closes what it held at `now`: its open sessions
/// with reason `node_lost` (a `tunnel_close` entry each), their running commands ended
/// `failed` (a `command_end` entry each, detail `node_lost`), their open recordings finished.
/// Logs a warning per lost node. The lost nodes, with what was closed.
///
/// # Errors
/// [`StoreError::Backend`]: the node being claimed keeps its lease and all it held (the next
/// sweep tries again); nodes claimed before it in this call stay closed but are not returned.
pub async fn sweep_lost_nodes<L: NodeLeases>(
    leases: &L,
    now: Timestamp,
) -> Result<Vec<LostNode>, StoreError> {
    let lost = leases
        .close_lost_nodes(
            now,
            &AuditNote::close(CloseReason::NodeLost),
            &AuditNote::new(
                AuditAction::CommandEnd,
                Some(CloseReason::NodeLost.as_str().to_owned()),
            ),
        )
        .await?;
    for node in &lost {
        tracing::warn!(
            node = %node.node,
            generation = node.generation,
            sessions = node.sessions.len(),
            commands = node.commands.len(),
            recordings = node.recordings,
            "closed what a cluster node whose lease ran out held"
        );
    }
    Ok(lost)
}
