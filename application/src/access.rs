//! The shared first step of every use of a session: it exists, and the actor may do what
//! they ask with it.

use rmm_domain::{Actor, AgentId, Role, Session, SessionAction, SessionId};

use crate::ports::{GroupRepository, SessionRepository, StoreError};

/// Why a session cannot be used. Each use case turns it into its own error.
#[derive(Debug)]
pub(crate) enum SessionUseError {
    NotFound(SessionId),
    Forbidden(SessionId),
    Store(StoreError),
}

/// The session, when `actor` may do `action` with it. A technician's session to an agent
/// that is no longer in one of their groups is not found (as if it did not exist).
pub(crate) async fn session_for<S: SessionRepository, G: GroupRepository>(
    sessions: &S,
    groups: &G,
    actor: Actor,
    id: SessionId,
    action: SessionAction,
) -> Result<Session, SessionUseError> {
    let session = sessions.get(id).await.map_err(SessionUseError::Store)?;
    let session = session.ok_or(SessionUseError::NotFound(id))?;
    if !may_see(groups, actor, session.agent())
        .await
        .map_err(SessionUseError::Store)?
    {
        return Err(SessionUseError::NotFound(id));
    }
    session
        .authorize(actor, action)
        .map_err(|_| SessionUseError::Forbidden(id))?;
    Ok(session)
}

/// Whether `actor` is limited to the agents of their groups (technicians are).
pub(crate) const fn scoped(actor: Actor) -> bool {
    matches!(actor.role, Role::Tech)
}

/// Whether `actor` may see `agent`: always for admins and auditors; for a technician, when
/// the agent is in one of their groups.
pub(crate) async fn may_see<G: GroupRepository>(
    groups: &G,
    actor: Actor,
    agent: AgentId,
) -> Result<bool, StoreError> {
    if scoped(actor) {
        groups.may_see_agent(actor.id, agent).await
    } else {
        Ok(true)
    }
}
