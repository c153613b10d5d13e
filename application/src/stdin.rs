//! A command's stdin: what a client streams to a command started with `stdin: true`,
//! audited with how many bytes went in.

use rmm_domain::{Actor, CommandId, SessionAction, SessionId};

use crate::access::{SessionUseError, session_for};
use crate::app::{App, Ports};
use crate::ports::{
    AgentGateway, AuditAction, AuditEvent, AuditLog, ByteStream, Clock, StdinError, StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum WriteStdinError {
    #[error("session {0} not found")]
    NotFound(SessionId),
    #[error("session {0} is owned by another user")]
    Forbidden(SessionId),
    /// Not running, started without `stdin: true`, or its stdin was already taken.
    #[error(
        "command {0} takes no stdin now: it was started without \"stdin\": true, its stdin was already sent, or it ended"
    )]
    Closed(CommandId),
    #[error("the agent of session {0} is not connected")]
    AgentGone(SessionId),
    /// The request body broke off: stdin was closed at what had arrived.
    #[error("{0}")]
    ClientAborted(String),
    #[error("the database is unavailable")]
    Store(#[source] StoreError),
}

impl From<SessionUseError> for WriteStdinError {
    fn from(e: SessionUseError) -> Self {
        match e {
            SessionUseError::NotFound(id) => Self::NotFound(id),
            SessionUseError::Forbidden(id) => Self::Forbidden(id),
            SessionUseError::Store(e) => Self::Store(e),
        }
    }
}

impl<P: Ports> App<P> {
    /// Streams `body` to the stdin of a running command of the caller's, then closes its
    /// stdin (EOF). How many bytes the command's stdin took.
    ///
    /// # Errors
    /// See [`WriteStdinError`].
    pub async fn write_stdin(
        &self,
        actor: Actor,
        session_id: SessionId,
        command: CommandId,
        mut body: ByteStream,
    ) -> Result<u64, WriteStdinError> {
        let session = session_for(
            &*self.sessions,
            &*self.groups,
            actor,
            session_id,
            SessionAction::Use,
        )
        .await?;
        let (agent, channel) = self
            .running
            .take_stdin(command, session_id)
            .ok_or(WriteStdinError::Closed(command))?;
        let result = self.gateway.command_stdin(agent, &channel, &mut body).await;
        self.session_activity(session_id);
        let (bytes, detail) = match &result {
            Ok(bytes) => (*bytes, format!("command_id={command} bytes={bytes}")),
            Err(e) => (0, format!("command_id={command} error={e}")),
        };
        let mut entry = AuditEvent::new(self.clock.now(), AuditAction::CommandStdin);
        entry.user = Some(actor.id);
        entry.agent = Some(session.agent());
        entry.session = Some(session_id);
        entry.detail = Some(detail);
        if let Err(e) = self.audit.append(&entry).await {
            tracing::error!(command_id = %command, error = %e, "could not audit a command's stdin");
        }
        tracing::info!(command_id = %command, session_id = %session_id, bytes, ok = result.is_ok(), "command stdin ended");
        result.map_err(|e| match e {
            StdinError::AgentGone => WriteStdinError::AgentGone(session_id),
            StdinError::Closed => WriteStdinError::Closed(command),
            StdinError::ClientAborted(why) => WriteStdinError::ClientAborted(why),
        })
    }
}
