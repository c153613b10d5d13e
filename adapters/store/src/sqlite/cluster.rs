//! Cluster mode needs the database every node shares: PostgreSQL. A SQLite file belongs to
//! one process, so its leases answer that, and `rmm-server` refuses cluster mode on SQLite
//! before it gets here.

use std::time::Duration;

use rmm_application::{AuditNote, LostNode, NodeLeases, StoreError};
use rmm_domain::Timestamp;

use super::SqliteStore;

#[derive(Debug, thiserror::Error)]
#[error("cluster mode needs PostgreSQL (DATABASE_URL=postgres://...), shared by every node")]
struct NotShared;

impl NodeLeases for SqliteStore {
    async fn join(&self, _node: &str, _ttl: Duration) -> Result<u64, StoreError> {
        Err(StoreError::backend(NotShared))
    }

    async fn renew(
        &self,
        _node: &str,
        _generation: u64,
        _ttl: Duration,
    ) -> Result<bool, StoreError> {
        Err(StoreError::backend(NotShared))
    }

    async fn leave(&self, _node: &str, _generation: u64) -> Result<(), StoreError> {
        Err(StoreError::backend(NotShared))
    }

    async fn live_nodes(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    async fn node_of_open_session(
        &self,
        _session: rmm_domain::SessionId,
    ) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    async fn close_lost_nodes(
        &self,
        _now: Timestamp,
        _session_note: &AuditNote,
        _command_note: &AuditNote,
    ) -> Result<Vec<LostNode>, StoreError> {
        Ok(Vec::new())
    }
}
