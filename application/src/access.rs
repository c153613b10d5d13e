//! The shared first step of every use of a session: it exists, and the actor may do what
//! they ask with it.

use rmm_domain::{Actor, Session, SessionAction, SessionId};

use crate::ports::{SessionRepository, StoreError};

/// Why a session cannot be used. Each use case turns it into its own error.
#[derive(Debug)]
pub(crate) enum SessionUseError {
    NotFound(SessionId),
    Forbidden(SessionId),
    Store(StoreError),
}

/// The session, when `actor` may do `action` with it.
pub(crate) async fn session_for<S: SessionRepository>(
    sessions: &S,
    actor: Actor,
    id: SessionId,
    action: SessionAction,
) -> Result<Session, SessionUseError> {
    let session = sessions.get(id).await.map_err(SessionUseError::Store)?;
    let session = session.ok_or(SessionUseError::NotFound(id))?;
    session
        .authorize(actor, action)
        .map_err(|_| SessionUseError::Forbidden(id))?;
    Ok(session)
}
