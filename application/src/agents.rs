//! Agents: registration, listing, authentication of their connections, and their presence
//! (last seen, host facts), which is buffered in memory and written in batches.

use rmm_domain::{Actor, AgentId, AgentMode, AgentName, CloseReason, GroupName, Role, SessionId};

use crate::agent_events::{AgentWatch, WatchAgentsError};
use crate::app::{App, Ports};
use crate::ports::{
    AgentGateway, AgentKey, AgentRecord, AgentRepository, AuditNote, Clock, Credentials, HostFacts,
    IdGenerator, KeyDigest, SessionRepository, StoreError,
};

/// The longest hostname an agent's heartbeat is stored with, in bytes (longer ones are cut).
pub const MAX_HOSTNAME_BYTES: usize = 255;
/// The longest OS description stored, in bytes.
pub const MAX_OS_BYTES: usize = 255;
/// The longest agent version stored, in bytes.
pub const MAX_VERSION_BYTES: usize = 64;

/// Cuts `fact` to at most `max` bytes, at a character boundary.
fn cap(fact: &mut Option<String>, max: usize) {
    if let Some(text) = fact
        && text.len() > max
    {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.shrink_to_fit();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterAgentError {
    #[error("only admins may register agents")]
    Forbidden,
    #[error("an agent named {0:?} exists already")]
    NameTaken(String),
    #[error("agent store failed")]
    Store(#[source] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum ListAgentsError {
    #[error("agent store failed")]
    Store(#[source] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectAgentError {
    #[error("unknown agent key")]
    UnknownKey,
    #[error("agent store failed")]
    Store(#[source] StoreError),
}

/// A new agent and its key, which is shown this once and never stored.
#[derive(Debug)]
pub struct RegisteredAgent {
    pub id: AgentId,
    pub name: AgentName,
    pub key: AgentKey,
}

/// An agent as listed to technicians.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentView {
    pub record: AgentRecord,
    /// `None` when not connected.
    pub mode: Option<AgentMode>,
}

impl<P: Ports> App<P> {
    /// Registers an agent and makes its key.
    ///
    /// # Errors
    /// [`RegisterAgentError::Forbidden`] for non-admins, [`RegisterAgentError::NameTaken`].
    pub async fn register_agent(
        &self,
        actor: Actor,
        name: AgentName,
    ) -> Result<RegisteredAgent, RegisterAgentError> {
        if actor.role != Role::Admin {
            return Err(RegisterAgentError::Forbidden);
        }
        let key = self.credentials.new_agent_key();
        let record = AgentRecord {
            id: self.ids.agent_id(),
            name: name.clone(),
            group: GroupName::default_group(),
            revoked: false,
            key_digest: key.digest,
            created_at: self.clock.now(),
            last_seen: None,
            facts: HostFacts::default(),
        };
        match self.agents.insert_agent(&record).await {
            Ok(()) => {
                tracing::info!(agent_id = %record.id, name = name.as_str(), by = %actor.id, "agent registered");
                self.agent_events.changed();
                Ok(RegisteredAgent {
                    id: record.id,
                    name,
                    key,
                })
            }
            Err(StoreError::Conflict) => {
                Err(RegisterAgentError::NameTaken(name.as_str().to_owned()))
            }
            Err(e) => Err(RegisterAgentError::Store(e)),
        }
    }

    /// Every agent with its live mode; `last_seen` includes heartbeats not yet flushed.
    ///
    /// # Errors
    /// [`ListAgentsError::Store`].
    pub async fn list_agents(&self) -> Result<Vec<AgentView>, ListAgentsError> {
        let records = self
            .agents
            .list_agents()
            .await
            .map_err(ListAgentsError::Store)?;
        Ok(records
            .into_iter()
            .map(|mut record| {
                if let Some(t) = self.presence.last_seen(record.id) {
                    record.last_seen = Some(record.last_seen.map_or(t, |s| s.max(t)));
                }
                let mode = self.gateway.mode(record.id);
                AgentView { record, mode }
            })
            .collect())
    }

    /// Authenticates a connecting agent by its key. Changes nothing: the connection may
    /// still fail to upgrade.
    ///
    /// # Errors
    /// [`ConnectAgentError::UnknownKey`] when no agent has this key, or a revoked one.
    pub async fn authenticate_agent(&self, key: &str) -> Result<AgentRecord, ConnectAgentError> {
        let digest = self.credentials.digest_agent_key(key);
        let found = self
            .agents
            .find_agent_by_key(digest)
            .await
            .map_err(ConnectAgentError::Store)?;
        let agent = match found {
            // A revoked agent's key is refused like an unknown one.
            Some(agent) if agent.key_digest.ct_eq(&digest) && !agent.revoked => agent,
            Some(_) | None => return Err(ConnectAgentError::UnknownKey),
        };
        Ok(agent)
    }

    /// Whether an agent whose connection was just registered may keep it: not revoked, and
    /// its key still `key` (not replaced meanwhile). A store that cannot say admits it (it
    /// was authenticated a moment ago; the next connect checks again).
    pub async fn still_admitted(&self, agent: AgentId, key: KeyDigest) -> bool {
        match self.agents.find_agent(agent).await {
            Ok(Some(record)) => !record.revoked && record.key_digest.ct_eq(&key),
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(agent_id = %agent, error = %e, "could not re-check a connecting agent; admitted");
                true
            }
        }
    }

    /// An authenticated agent's new connection replaced `previous`, the tunnel its earlier
    /// connection held (if any): a reconnected agent has lost that tunnel and everything
    /// running in it, so it is closed. Only that session: the new connection may already
    /// have opened one of its own. The close commits with its `tunnel_close` entry.
    ///
    /// # Errors
    /// [`StoreError`]: the session is still open; the maintenance sweep closes it (the new
    /// connection does not hold it) once the store is back.
    pub async fn agent_connected(
        &self,
        agent: AgentId,
        previous: Option<SessionId>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        self.presence.note_seen(agent, now, None);
        self.agent_events.changed();
        let Some(previous) = previous else {
            return Ok(());
        };
        let reason = CloseReason::AgentReconnected;
        self.end_session_commands(previous, reason).await;
        if self
            .sessions
            .close(previous, reason, now, &AuditNote::close(reason))
            .await?
            .is_some()
        {
            tracing::info!(session_id = %previous, agent_id = %agent, "tunnel closed: the agent reconnected");
        }
        Ok(())
    }

    /// Notes a heartbeat (written at the next flush), its facts cut to their caps
    /// ([`MAX_HOSTNAME_BYTES`], [`MAX_OS_BYTES`], [`MAX_VERSION_BYTES`]).
    pub fn agent_heartbeat(&self, agent: AgentId, facts: Option<HostFacts>) {
        let facts = facts.map(|mut facts| {
            cap(&mut facts.hostname, MAX_HOSTNAME_BYTES);
            cap(&mut facts.os, MAX_OS_BYTES);
            cap(&mut facts.version, MAX_VERSION_BYTES);
            facts
        });
        self.presence.note_seen(agent, self.clock.now(), facts);
    }

    /// Notes traffic of an agent (any frame): it is alive.
    pub fn agent_seen(&self, agent: AgentId) {
        self.presence.note_seen(agent, self.clock.now(), None);
    }

    /// Notes activity on a session (written at the next flush).
    pub fn session_activity(&self, session: SessionId) {
        self.presence.note_activity(session);
    }

    /// Opens a live agent list for `actor`: what changes to notice. The list itself is
    /// [`Self::list_agents_for`], read again on each change.
    ///
    /// # Errors
    /// [`WatchAgentsError::TooMany`] when the user holds
    /// [`crate::MAX_AGENT_STREAMS_PER_USER`] already.
    pub fn watch_agents(&self, actor: Actor) -> Result<AgentWatch, WatchAgentsError> {
        self.agent_events.watch(actor.id)
    }

    /// Tells live agent lists that something they show may have changed (for adapters whose
    /// changes no use case sees).
    pub fn note_agents_changed(&self) {
        self.agent_events.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::cap;

    #[test]
    fn facts_are_cut_at_a_character_boundary_within_their_cap() {
        let mut long = Some("é".repeat(200));
        cap(&mut long, 255);
        assert_eq!(long.as_deref().map(str::len), Some(254));
        let mut short = Some("web-01".to_owned());
        cap(&mut short, 255);
        assert_eq!(short.as_deref(), Some("web-01"));
        let mut none = None;
        cap(&mut none, 3);
        assert_eq!(none, None);
    }
}
