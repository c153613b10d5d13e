//! Cluster mode: each node's lease on what it holds (its sessions, their commands and
//! recordings). A node renews its lease while it runs; when a lease runs out (the node was
//! killed, or lost the database), another node claims it and closes what it held.

use std::future::Future;
use std::time::Duration;

use rmm_domain::{Session, SessionId, Timestamp};

use super::{AuditNote, CommandRecord, StoreError};

/// What a lost node held, closed by the node that claimed its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostNode {
    pub node: String,
    pub generation: u64,
    /// Its sessions that were still pending or active, now closed.
    pub sessions: Vec<Session>,
    /// The commands of those sessions that were still running, now ended.
    pub commands: Vec<CommandRecord>,
    /// The recordings of those sessions' terminals that were still open, now finished.
    pub recordings: u64,
}

/// The nodes' leases, kept in the database every node shares (its clock is the only one
/// that counts: a node's own clock never decides whether a lease ran out).
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait NodeLeases: Send + Sync + 'static {
    /// Takes the lease of `node` for `ttl` from now, with a new generation (also when a
    /// previous process of the same node still holds it: that process is gone, or will find
    /// out at its next renewal). The generation.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn join(
        &self,
        node: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Extends the lease to `ttl` from now. False when it is not `generation`'s any more:
    /// it ran out and another node closed what this one held, or another process took the
    /// node id.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn renew(
        &self,
        node: &str,
        generation: u64,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives the lease up (a clean shutdown, after closing its sessions), if it is still
    /// `generation`'s.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn leave(
        &self,
        node: &str,
        generation: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The nodes whose lease has not run out.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn live_nodes(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// The node that holds `session`, while it is pending or active and held by a cluster
    /// node; `None` when it is closed, unknown, or a single node's.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn node_of_open_session(
        &self,
        session: SessionId,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Claims every node whose lease ran out and closes what it held, one transaction per
    /// node: the lease is removed; its pending and active sessions are closed with
    /// `session_note`'s reason, an entry each; the commands of those sessions still running
    /// end as their session's close decides, with `command_note`'s entry each; their open
    /// recordings are finished at `now`. Two nodes sweeping at once never both claim one.
    ///
    /// # Errors
    /// [`StoreError::Backend`]: then the node's lease and everything it held are unchanged.
    fn close_lost_nodes(
        &self,
        now: Timestamp,
        session_note: &AuditNote,
        command_note: &AuditNote,
    ) -> impl Future<Output = Result<Vec<LostNode>, StoreError>> + Send;
}
