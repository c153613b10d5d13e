//! Watching a session's live stream.

use rmm_domain::{Actor, SessionAction, SessionId, SessionStatus};

use crate::access::{SessionUseError, session_for};
use crate::app::{App, Ports};
use crate::ports::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum WatchSessionError {
    #[error("session {0} not found")]
    NotFound(SessionId),
    #[error("session {0} is owned by another user")]
    Forbidden(SessionId),
    #[error("session {0} is not active")]
    NotActive(SessionId),
    #[error("session store failed")]
    Store(#[source] StoreError),
}

impl From<SessionUseError> for WatchSessionError {
    fn from(e: SessionUseError) -> Self {
        match e {
            SessionUseError::NotFound(id) => Self::NotFound(id),
            SessionUseError::Forbidden(id) => Self::Forbidden(id),
            SessionUseError::Store(e) => Self::Store(e),
        }
    }
}

impl<P: Ports> App<P> {
    /// Checks that `actor` may watch a session's stream: their own, active session.
    ///
    /// # Errors
    /// See [`WatchSessionError`].
    pub async fn authorize_stream(
        &self,
        actor: Actor,
        session_id: SessionId,
    ) -> Result<(), WatchSessionError> {
        let session = session_for(
            &*self.sessions,
            &*self.groups,
            actor,
            session_id,
            SessionAction::Use,
        )
        .await?;
        // A closed session's stream would never end: nothing publishes to it any more.
        if session.status() != SessionStatus::Active {
            return Err(WatchSessionError::NotActive(session_id));
        }
        Ok(())
    }
}
