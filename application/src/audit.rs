//! The audit log: reading it. Entries of state changes are written by the store with the
//! change itself (see `AuditNote`); file transfers append theirs (`files`).

use std::collections::HashMap;

use rmm_domain::{Actor, UserId};

use crate::app::{App, Ports};
use crate::ports::{AuditEntry, AuditLog, AuditQuery, StoreError, UserRepository};

#[derive(Debug, thiserror::Error)]
pub enum ListAuditError {
    #[error("technicians may only read their own audit entries")]
    Forbidden,
    #[error("audit store failed")]
    Store(#[source] StoreError),
}

impl<P: Ports> App<P> {
    /// Reads the audit log: admins and auditors everything, technicians their own entries.
    ///
    /// # Errors
    /// [`ListAuditError::Forbidden`] when a technician asks for someone else's entries.
    pub async fn list_audit(
        &self,
        actor: Actor,
        mut query: AuditQuery,
    ) -> Result<Vec<AuditEntry>, ListAuditError> {
        if !actor.role.reads_all_audit() {
            match query.user {
                Some(user) if user != actor.id => return Err(ListAuditError::Forbidden),
                Some(_) | None => query.user = Some(actor.id),
            }
        }
        query.limit = query.limit.clamp(1, 500);
        self.audit
            .list_audit(&query)
            .await
            .map_err(ListAuditError::Store)
    }

    /// The usernames of the users `entries` name, for showing them beside their ids: one
    /// read of the users, whatever the page. A deleted user has none.
    ///
    /// # Errors
    /// [`ListAuditError::Store`].
    pub async fn audit_usernames(
        &self,
        entries: &[AuditEntry],
    ) -> Result<HashMap<UserId, String>, ListAuditError> {
        if entries.iter().all(|e| e.event.user.is_none()) {
            return Ok(HashMap::new());
        }
        let users = self
            .users
            .list_users()
            .await
            .map_err(ListAuditError::Store)?;
        Ok(users
            .into_iter()
            .filter(|u| entries.iter().any(|e| e.event.user == Some(u.id)))
            .map(|u| (u.id, u.username.as_str().to_owned()))
            .collect())
    }
}
