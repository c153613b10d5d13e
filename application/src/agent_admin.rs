//! Agents managed by admins: revoking one, giving it a new key, renaming it or moving it to
//! another group; and noting when a second connection with a live key replaced the first.
//! Each change commits with its audit entry; revoking and a new key end the live connection.

use rmm_domain::{Actor, AgentId, CloseReason, Role};

use crate::app::{App, Ports};
use crate::ports::{
    AgentChange, AgentChangeOutcome, AgentGateway, AgentRecord, AgentRepository, AuditAction,
    AuditEvent, AuditLog, AuditNote, Clock, Credentials, SessionRepository, StoreError,
};

/// Why the gateway closes a revoked agent's connection (the WebSocket close reason).
pub const CLOSE_REVOKED: &str = "agent revoked";
/// Why the gateway closes the connection of an agent that got a new key.
pub const CLOSE_KEY_ROTATED: &str = "agent key rotated";

#[derive(Debug, thiserror::Error)]
pub enum AgentAdminError {
    #[error("only admins may manage agents")]
    Forbidden,
    #[error("no agent {0}")]
    NotFound(AgentId),
    #[error("agent {0} is revoked: it is kept as history, with no new key and no change")]
    Revoked(AgentId),
    #[error("an agent named {0:?} exists already")]
    NameTaken(String),
    #[error("no group named {0:?}")]
    UnknownGroup(String),
    #[error("agent store failed")]
    Store(#[source] StoreError),
}

fn admin_only(actor: Actor) -> Result<(), AgentAdminError> {
    if actor.role == Role::Admin {
        Ok(())
    } else {
        Err(AgentAdminError::Forbidden)
    }
}

fn describe(change: &AgentChange) -> String {
    let mut parts = Vec::new();
    if let Some(name) = &change.name {
        parts.push(format!("name={}", name.as_str()));
    }
    if let Some(group) = &change.group {
        parts.push(format!("group={}", group.as_str()));
    }
    parts.join(" ")
}

impl<P: Ports> App<P> {
    fn agent_entry(&self, actor: Actor, agent: AgentId, action: AuditAction) -> AuditEvent {
        let mut entry = AuditEvent::new(self.clock.now(), action);
        entry.user = Some(actor.id);
        entry.agent = Some(agent);
        entry
    }

    /// Revokes an agent (admins): its key is refused from then on, its live connection is
    /// ended and its open sessions are closed `agent_revoked`. It stays listed, with its
    /// history. Revoking a revoked agent changes nothing and succeeds.
    ///
    /// # Errors
    /// [`AgentAdminError::Forbidden`], [`AgentAdminError::NotFound`],
    /// [`AgentAdminError::Store`] (nothing was revoked).
    pub async fn revoke_agent(&self, actor: Actor, id: AgentId) -> Result<(), AgentAdminError> {
        admin_only(actor)?;
        let entry = self.agent_entry(actor, id, AuditAction::AgentRevoked);
        match self
            .agents
            .revoke_agent(id, &entry)
            .await
            .map_err(AgentAdminError::Store)?
        {
            AgentChangeOutcome::NotFound => return Err(AgentAdminError::NotFound(id)),
            AgentChangeOutcome::Changed => {
                tracing::info!(agent_id = %id, by = %actor.id, "agent revoked");
            }
            AgentChangeOutcome::Revoked | AgentChangeOutcome::UnknownGroup => {}
        }
        // Also on a second revoke: a connection that authenticated just before the first
        // committed is ended now.
        self.gateway.disconnect(id, CLOSE_REVOKED);
        self.close_sessions_of_revoked(id).await;
        self.agent_events.changed();
        Ok(())
    }

    /// Closes every open session of a revoked agent as `agent_revoked` (a failed close is
    /// logged; the maintenance sweep closes it later: the agent is gone).
    async fn close_sessions_of_revoked(&self, agent: AgentId) {
        let open = match self.sessions.list_open().await {
            Ok(open) => open,
            Err(e) => {
                tracing::error!(agent_id = %agent, error = %e, "could not list the sessions of a revoked agent");
                return;
            }
        };
        let reason = CloseReason::AgentRevoked;
        for session in open.iter().filter(|s| s.agent() == agent) {
            self.end_session_commands(session.id(), reason).await;
            match self
                .sessions
                .close(
                    session.id(),
                    reason,
                    self.clock.now(),
                    &AuditNote::close(reason),
                )
                .await
            {
                Ok(Some(_)) => {
                    tracing::info!(session_id = %session.id(), agent_id = %agent, "tunnel closed: the agent was revoked");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(session_id = %session.id(), agent_id = %agent, error = %e, "could not close the session of a revoked agent");
                }
            }
        }
    }

    /// Gives an agent a new key (admins), shown this once: the old key is refused from then
    /// on and the connection made with it is ended (its tunnel closes `agent_disconnected`).
    ///
    /// # Errors
    /// [`AgentAdminError::Forbidden`], [`AgentAdminError::NotFound`],
    /// [`AgentAdminError::Revoked`], [`AgentAdminError::Store`] (the old key stays).
    pub async fn rotate_agent_key(
        &self,
        actor: Actor,
        id: AgentId,
    ) -> Result<String, AgentAdminError> {
        admin_only(actor)?;
        let key = self.credentials.new_agent_key();
        let entry = self.agent_entry(actor, id, AuditAction::AgentKeyRotated);
        match self
            .agents
            .set_agent_key(id, key.digest, &entry)
            .await
            .map_err(AgentAdminError::Store)?
        {
            AgentChangeOutcome::Changed => {}
            AgentChangeOutcome::NotFound | AgentChangeOutcome::UnknownGroup => {
                return Err(AgentAdminError::NotFound(id));
            }
            AgentChangeOutcome::Revoked => return Err(AgentAdminError::Revoked(id)),
        }
        tracing::info!(agent_id = %id, by = %actor.id, "agent key rotated");
        let mode = self.gateway.disconnect(id, CLOSE_KEY_ROTATED);
        self.agent_events.changed();
        if let Err(e) = self
            .agent_disconnected(id, mode.and_then(rmm_domain::AgentMode::session))
            .await
        {
            tracing::error!(agent_id = %id, error = %e, "could not close the tunnel of an agent given a new key");
        }
        Ok(key.secret)
    }

    /// Renames an agent and/or moves it to another group, by name (admins); the agent as
    /// changed. A change of nothing changes nothing (no audit entry) and answers the agent as
    /// it is, as a PATCH of no field does. A revoked agent is kept as history: not changed.
    ///
    /// # Errors
    /// [`AgentAdminError::Forbidden`], [`AgentAdminError::NotFound`],
    /// [`AgentAdminError::Revoked`], [`AgentAdminError::NameTaken`],
    /// [`AgentAdminError::UnknownGroup`], [`AgentAdminError::Store`].
    pub async fn update_agent(
        &self,
        actor: Actor,
        id: AgentId,
        change: AgentChange,
    ) -> Result<AgentRecord, AgentAdminError> {
        admin_only(actor)?;
        if change.name.is_none() && change.group.is_none() {
            return match self.agents.find_agent(id).await {
                Ok(Some(agent)) if agent.revoked => Err(AgentAdminError::Revoked(id)),
                Ok(Some(agent)) => Ok(agent),
                Ok(None) => Err(AgentAdminError::NotFound(id)),
                Err(e) => Err(AgentAdminError::Store(e)),
            };
        }
        let mut entry = self.agent_entry(actor, id, AuditAction::AgentUpdated);
        entry.detail = Some(describe(&change));
        match self.agents.update_agent(id, &change, &entry).await {
            Ok(AgentChangeOutcome::Revoked) => Err(AgentAdminError::Revoked(id)),
            Ok(AgentChangeOutcome::Changed) => {
                tracing::info!(agent_id = %id, by = %actor.id, change = %describe(&change), "agent changed");
                self.agent_events.changed();
                self.agents
                    .find_agent(id)
                    .await
                    .map_err(AgentAdminError::Store)?
                    .ok_or(AgentAdminError::NotFound(id))
            }
            Ok(AgentChangeOutcome::NotFound) => Err(AgentAdminError::NotFound(id)),
            Ok(AgentChangeOutcome::UnknownGroup) => Err(AgentAdminError::UnknownGroup(
                change
                    .group
                    .map(|g| g.as_str().to_owned())
                    .unwrap_or_default(),
            )),
            Err(StoreError::Conflict) => Err(AgentAdminError::NameTaken(
                change
                    .name
                    .map(|n| n.as_str().to_owned())
                    .unwrap_or_default(),
            )),
            Err(e) => Err(AgentAdminError::Store(e)),
        }
    }

    /// A second connection with `agent`'s key replaced the live one: warned and audited
    /// `agent_replaced` with both client addresses (a failed write is logged).
    pub async fn agent_replaced(&self, agent: AgentId, old: &str, new: &str) {
        tracing::warn!(agent_id = %agent, old_remote = old, new_remote = new, "a second connection with the key of a connected agent replaced the first (is the key used on two machines?)");
        let mut entry = AuditEvent::new(self.clock.now(), AuditAction::AgentReplaced);
        entry.agent = Some(agent);
        entry.detail = Some(format!("old {old}, new {new}"));
        if let Err(e) = self.audit.append(&entry).await {
            tracing::error!(agent_id = %agent, error = %e, "could not audit agent_replaced");
        }
    }
}
