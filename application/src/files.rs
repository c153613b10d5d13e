//! File transfers: who may move files through a session, and the audit entry of every
//! transfer. The bytes themselves stream in the adapters; these rules do not depend on how.

use rmm_domain::{Actor, AgentId, SessionAction, SessionId, SessionStatus};

use crate::app::{App, Ports};
use crate::ports::{AuditAction, AuditEvent, AuditLog, Clock, FileAudit, StoreError};
use crate::tunnels::SessionUseError;

#[derive(Debug, thiserror::Error)]
pub enum FileAccessError {
    #[error("path must be absolute, got {0:?}")]
    NotAbsolute(String),
    #[error("session {0} not found")]
    NotFound(SessionId),
    #[error("session {0} is owned by another user")]
    Forbidden(SessionId),
    #[error("session {0} is not active")]
    NotActive(SessionId),
    #[error("session store failed")]
    Store(#[source] StoreError),
}

/// Which way a file moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Upload,
    Download,
}

impl<P: Ports> App<P> {
    /// Checks that `actor` may move files through `session` at `path`; the session's agent.
    /// Paths must be absolute: a relative path would depend on the agent's working directory.
    ///
    /// # Errors
    /// See [`FileAccessError`].
    pub async fn authorize_file(
        &self,
        actor: Actor,
        session_id: SessionId,
        path: &str,
    ) -> Result<AgentId, FileAccessError> {
        if !is_absolute(path) {
            return Err(FileAccessError::NotAbsolute(
                path.chars().take(200).collect(),
            ));
        }
        let session = match self
            .session_for(actor, session_id, SessionAction::Use)
            .await
        {
            Ok(session) => session,
            Err(SessionUseError::NotFound(id)) => return Err(FileAccessError::NotFound(id)),
            Err(SessionUseError::Forbidden(id)) => return Err(FileAccessError::Forbidden(id)),
            Err(SessionUseError::Store(e)) => return Err(FileAccessError::Store(e)),
        };
        if session.status() != SessionStatus::Active {
            return Err(FileAccessError::NotActive(session_id));
        }
        self.session_activity(session_id);
        Ok(session.agent())
    }

    /// Records a transfer (success or failure) in the audit log. A failed write is logged:
    /// the transfer has already happened and cannot be undone.
    pub async fn audit_file(
        &self,
        actor: Actor,
        session: SessionId,
        agent: AgentId,
        direction: Direction,
        file: FileAudit,
    ) {
        let action = match direction {
            Direction::Upload => AuditAction::FileUpload,
            Direction::Download => AuditAction::FileDownload,
        };
        let mut event = AuditEvent::new(self.clock.now(), action);
        event.user = Some(actor.id);
        event.agent = Some(agent);
        event.session = Some(session);
        tracing::info!(session_id = %session, agent_id = %agent, action = action.as_str(), path = %file.path, size = ?file.size, result = %file.result, "file transfer");
        event.file = Some(file);
        if let Err(e) = self.audit.append(&event).await {
            tracing::error!(error = %e, source = ?std::error::Error::source(&e), "audit write of a file transfer failed");
        }
    }
}

/// Absolute on Unix (`/...`) or Windows (`C:\...`, `\\server\share`).
fn is_absolute(path: &str) -> bool {
    let bytes = path.as_bytes();
    path.starts_with('/')
        || path.starts_with("\\\\")
        || (bytes.len() >= 3
            && bytes[0].is_ascii_alphabetic()
            && bytes[1] == b':'
            && matches!(bytes[2], b'\\' | b'/'))
}

#[cfg(test)]
mod tests {
    use super::is_absolute;

    #[test]
    fn only_absolute_paths_are_accepted() {
        for ok in ["/etc/hosts", "/", "C:\\Windows", "c:/x", "\\\\srv\\share"] {
            assert!(is_absolute(ok), "{ok}");
        }
        for bad in ["", "etc/hosts", "./x", "C:", "~/x"] {
            assert!(!is_absolute(bad), "{bad}");
        }
    }
}
