//! The [`Metered`] store's [`NodeLeases`]: as the other ports (see `ports`), each method timed
//! under its `cluster.method` name, and the commands a sweep ended counted.

use std::future::Future;
use std::time::Duration;

use rmm_application::{AuditNote, LostNode, NodeLeases, StoreError};
use rmm_domain::{SessionId, Timestamp};

use super::{Metered, command_ended, timed};

impl<S: NodeLeases> NodeLeases for Metered<S> {
    fn join(
        &self,
        node: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        timed("cluster.join", self.0.join(node, ttl))
    }

    fn renew(
        &self,
        node: &str,
        generation: u64,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        timed("cluster.renew", self.0.renew(node, generation, ttl))
    }

    fn leave(
        &self,
        node: &str,
        generation: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        timed("cluster.leave", self.0.leave(node, generation))
    }

    fn live_nodes(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send {
        timed("cluster.live_nodes", self.0.live_nodes())
    }

    fn node_of_open_session(
        &self,
        session: SessionId,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send {
        timed(
            "cluster.node_of_open_session",
            self.0.node_of_open_session(session),
        )
    }

    fn close_lost_nodes(
        &self,
        now: Timestamp,
        session_note: &AuditNote,
        command_note: &AuditNote,
    ) -> impl Future<Output = Result<Vec<LostNode>, StoreError>> + Send {
        timed("cluster.close_lost_nodes", async move {
            let lost = self
                .0
                .close_lost_nodes(now, session_note, command_note)
                .await;
            for command in lost.iter().flatten().flat_map(|node| &node.commands) {
                command_ended(command.status);
            }
            lost
        })
    }
}
