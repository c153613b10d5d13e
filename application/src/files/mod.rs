//! File transfers as use cases: who may move files through a session, what the agent is
//! asked (through the gateway port, which moves the bytes), the audit entry of every
//! transfer with its result, and what happens when the client breaks off. Uploads are in
//! [`upload`], downloads in [`download`].

use std::sync::Arc;

use rmm_domain::{Actor, AgentId, SessionAction, SessionId, SessionStatus};

use crate::access::{SessionUseError, session_for};
use crate::app::{App, Ports};
use crate::ports::{
    AgentGateway, AuditAction, AuditEvent, AuditLog, Clock, FileAudit, FileEntry, FileOpError,
    StoreError,
};
use crate::spool::AuditSpool;

mod download;
mod upload;

pub use download::{ByteRange, Download};

#[derive(Debug, thiserror::Error)]
pub enum FileAccessError {
    #[error("path must be absolute, got {0:?}")]
    NotAbsolute(String),
    /// A path no agent could use (a NUL byte, too long): refused before the agent is asked.
    #[error(transparent)]
    InvalidPath(rmm_domain::PathProblem),
    #[error("session {0} not found")]
    NotFound(SessionId),
    #[error("session {0} is owned by another user")]
    Forbidden(SessionId),
    #[error("session {0} is not active")]
    NotActive(SessionId),
    #[error("session store failed")]
    Store(#[source] StoreError),
}

/// Why a file operation failed: refused before anything moved, or failed on the way.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Access(#[from] FileAccessError),
    #[error(transparent)]
    Failed(#[from] FileOpError),
}

impl From<SessionUseError> for FileAccessError {
    fn from(e: SessionUseError) -> Self {
        match e {
            SessionUseError::NotFound(id) => Self::NotFound(id),
            SessionUseError::Forbidden(id) => Self::Forbidden(id),
            SessionUseError::Store(e) => Self::Store(e),
        }
    }
}

/// What the audit entry of a failed transfer says: the agent's code with its message, so
/// that entries can be searched by why they failed; otherwise the reason.
fn failure_result(e: &FileOpError) -> String {
    match e {
        FileOpError::Agent { code, message } => format!("{code}: {message}"),
        other => other.to_string(),
    }
}

/// The result of a transfer the client broke off: its entry's size is the bytes moved, its
/// detail how it ended.
const ABORTED: &str = "aborted";

/// The size in the entry of a transfer that did not complete: the bytes it moved, none when
/// it moved nothing.
fn moved_size(moved: u64) -> Option<u64> {
    (moved > 0).then_some(moved)
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
        rmm_domain::check_agent_path(path).map_err(FileAccessError::InvalidPath)?;
        let session = session_for(
            &*self.sessions,
            &*self.groups,
            actor,
            session_id,
            SessionAction::Use,
        )
        .await?;
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
        self.file_auditor(actor, session, agent, direction, &file.path)
            .record(file.result, file.size, file.sha256)
            .await;
    }

    /// Lists a directory on the session's agent.
    ///
    /// # Errors
    /// See [`TransferError`].
    pub async fn list_files(
        &self,
        actor: Actor,
        session: SessionId,
        path: &str,
    ) -> Result<Vec<FileEntry>, TransferError> {
        let agent = self.authorize_file(actor, session, path).await?;
        Ok(self.gateway.list_files(agent, session, path).await?)
    }

    /// How many bytes of an interrupted upload to `path` the agent holds: the offset to
    /// resume from.
    ///
    /// # Errors
    /// See [`TransferError`].
    pub async fn upload_status(
        &self,
        actor: Actor,
        session: SessionId,
        path: &str,
    ) -> Result<u64, TransferError> {
        let agent = self.authorize_file(actor, session, path).await?;
        Ok(self.gateway.upload_status(agent, session, path).await?)
    }

    fn file_auditor(
        &self,
        actor: Actor,
        session: SessionId,
        agent: AgentId,
        direction: Direction,
        path: &str,
    ) -> FileAuditor<P> {
        FileAuditor {
            audit: Arc::clone(&self.audit),
            spool: Arc::clone(&self.audit_spool),
            clock: Arc::clone(&self.clock),
            actor,
            session,
            agent,
            direction,
            path: path.to_owned(),
            detail: None,
        }
    }

    /// Writes the file-transfer entries the store refused before, oldest first
    /// (maintenance); stops at the first refusal.
    pub(crate) async fn store_unstored_audit(&self) -> Result<(), StoreError> {
        while let Some(event) = self.audit_spool.take() {
            if let Err(e) = self.audit.append(&event).await {
                self.audit_spool.put_back(event);
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Writes the audit entry of one transfer. Owns what it needs, so a download can record its
/// end after the use case returned, when the client has read the last byte (or gone).
struct FileAuditor<P: Ports> {
    audit: Arc<P::Audit>,
    /// Where an entry the store refuses waits for maintenance to write it.
    spool: Arc<AuditSpool>,
    clock: Arc<P::Clock>,
    actor: Actor,
    session: SessionId,
    agent: AgentId,
    direction: Direction,
    path: String,
    /// The entry's detail: how an aborted transfer ended.
    detail: Option<String>,
}

impl<P: Ports> FileAuditor<P> {
    /// Records the transfer's result: `ok`, `aborted`, or why it failed. An entry the store
    /// refuses is kept in a bounded spool that maintenance writes again; when that is full,
    /// the whole entry goes to the log at ERROR: never lost silently.
    async fn record(&self, result: String, size: Option<u64>, sha256: Option<String>) {
        let (action, direction) = match self.direction {
            Direction::Upload => (AuditAction::FileUpload, "upload"),
            Direction::Download => (AuditAction::FileDownload, "download"),
        };
        let mut event = AuditEvent::new(self.clock.now(), action);
        event.user = Some(self.actor.id);
        event.agent = Some(self.agent);
        event.session = Some(self.session);
        event.detail.clone_from(&self.detail);
        tracing::info!(session_id = %self.session, agent_id = %self.agent, action = action.as_str(), path = %self.path, size = ?size, result = %result, detail = ?self.detail, "file transfer");
        event.file = Some(FileAudit {
            path: self.path.clone(),
            direction: direction.to_owned(),
            size,
            sha256,
            result,
        });
        if let Err(e) = self.audit.append(&event).await {
            match self.spool.keep(event) {
                Ok(()) => {
                    tracing::error!(error = %e, source = ?std::error::Error::source(&e), "audit write of a file transfer failed; kept to write again");
                }
                Err(event) => {
                    tracing::error!(error = %e, source = ?std::error::Error::source(&e), entry = ?event, "audit write of a file transfer failed and the audit spool is full: the entry is not stored");
                }
            }
        }
    }

    /// [`Self::record`] on the runtime, awaited: finishes even when the caller is dropped
    /// while it waits (the client went away mid-request).
    async fn record_settled(self, result: String, size: Option<u64>, sha256: Option<String>) {
        let task = tokio::spawn(async move { self.record(result, size, sha256).await });
        if let Err(e) = task.await {
            tracing::error!(error = %e, "the audit entry of a file transfer was not written");
        }
    }

    /// [`Self::record`] from where nothing can wait for it (a dropped transfer): on the
    /// runtime, in the background.
    fn record_detached(self, result: String, size: Option<u64>) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { self.record(result, size, None).await });
            }
            Err(_) => {
                tracing::error!(session_id = %self.session, path = %self.path, result = %result, size = ?size, detail = ?self.detail, "no runtime to write the audit entry of a file transfer");
            }
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
