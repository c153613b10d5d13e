//! The audit log: reading it, and the entries every session change writes.

use rmm_domain::{Actor, CloseReason, Role, Session};

use crate::app::{App, Ports};
use crate::ports::{AuditAction, AuditEntry, AuditEvent, AuditLog, AuditQuery, Clock, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ListAuditError {
    #[error("technicians may only read their own audit entries")]
    Forbidden,
    #[error("audit store failed")]
    Store(#[source] StoreError),
}

impl<P: Ports> App<P> {
    /// Reads the audit log: admins everything, technicians their own entries.
    ///
    /// # Errors
    /// [`ListAuditError::Forbidden`] when a technician asks for someone else's entries.
    pub async fn list_audit(
        &self,
        actor: Actor,
        mut query: AuditQuery,
    ) -> Result<Vec<AuditEntry>, ListAuditError> {
        match actor.role {
            Role::Admin => {}
            Role::Tech => match query.user {
                Some(user) if user != actor.id => return Err(ListAuditError::Forbidden),
                Some(_) | None => query.user = Some(actor.id),
            },
        }
        query.limit = query.limit.clamp(1, 500);
        self.audit
            .list_audit(&query)
            .await
            .map_err(ListAuditError::Store)
    }

    /// Writes the entry of a session's end; a failure is logged, and never undoes what
    /// already happened.
    pub(crate) async fn audit_close(&self, session: &Session, reason: CloseReason) {
        self.audit_session(
            session,
            AuditAction::TunnelClose,
            Some(reason.as_str().to_owned()),
        )
        .await;
    }

    /// Writes an entry about a session, in its owner's name; a failure is logged.
    pub(crate) async fn audit_session(
        &self,
        session: &Session,
        action: AuditAction,
        detail: Option<String>,
    ) {
        let mut event = AuditEvent::new(self.clock.now(), action);
        event.user = Some(session.owner());
        event.agent = Some(session.agent());
        event.session = Some(session.id());
        event.detail = detail;
        if let Err(e) = self.audit.append(&event).await {
            tracing::error!(error = %e, source = ?std::error::Error::source(&e), action = action.as_str(), session_id = %session.id(), "audit write failed");
        }
    }
}
