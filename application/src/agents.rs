//! Agents: registration, listing, authentication of their connections, and their presence
//! (last seen, host facts), which is buffered in memory and written in batches.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rmm_domain::{Actor, AgentId, AgentMode, AgentName, CloseReason, Role, SessionId, Timestamp};

use crate::app::{App, Ports};
use crate::ports::{
    AgentGateway, AgentRecord, AgentRepository, AuditAction, AuditEvent, AuditLog, Clock,
    Credentials, HostFacts, IdGenerator, Seen, SessionRepository, StoreError,
};

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
    pub key: crate::ports::AgentKey,
}

/// An agent as listed to technicians.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentView {
    pub record: AgentRecord,
    /// `None` when not connected.
    pub mode: Option<AgentMode>,
}

/// Presence noted since the last flush. Heartbeats and session activity arrive far more often
/// than they are worth writing, so they are kept here (bounded by the number of agents and
/// open sessions) and written in one batch per flush.
#[derive(Debug, Default)]
pub struct Presence {
    inner: Mutex<PresenceBuffer>,
}

#[derive(Debug, Default)]
struct PresenceBuffer {
    seen: HashMap<AgentId, (Timestamp, Option<HostFacts>)>,
    active: HashSet<SessionId>,
}

impl Presence {
    fn lock(&self) -> std::sync::MutexGuard<'_, PresenceBuffer> {
        // A panic while holding this lock cannot leave the maps inconsistent (each update is a
        // single insert), so a poisoned lock is still safe to use.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn note_seen(&self, agent: AgentId, at: Timestamp, facts: Option<HostFacts>) {
        let mut buf = self.lock();
        let entry = buf.seen.entry(agent).or_insert((at, None));
        entry.0 = entry.0.max(at);
        if let Some(new) = facts {
            // Field by field, as the store merges: a heartbeat that omits a fact keeps it.
            let merged = entry.1.get_or_insert_with(HostFacts::default);
            merged.version = new.version.or(merged.version.take());
            merged.hostname = new.hostname.or(merged.hostname.take());
            merged.os = new.os.or(merged.os.take());
            merged.uptime_secs = new.uptime_secs.or(merged.uptime_secs);
        }
    }

    fn note_activity(&self, session: SessionId) {
        self.lock().active.insert(session);
    }

    fn take(&self) -> (Vec<Seen>, Vec<SessionId>) {
        let mut buf = self.lock();
        let seen = buf.seen.drain().map(|(a, (t, f))| (a, t, f)).collect();
        let active = buf.active.drain().collect();
        (seen, active)
    }

    fn last_seen(&self, agent: AgentId) -> Option<Timestamp> {
        self.lock().seen.get(&agent).map(|(t, _)| *t)
    }
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
            key_digest: key.digest,
            created_at: self.clock.now(),
            last_seen: None,
            facts: HostFacts::default(),
        };
        match self.agents.insert_agent(&record).await {
            Ok(()) => {
                tracing::info!(agent_id = %record.id, name = name.as_str(), by = %actor.id, "agent registered");
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
    /// [`ConnectAgentError::UnknownKey`] when no agent has this key.
    pub async fn authenticate_agent(&self, key: &str) -> Result<AgentRecord, ConnectAgentError> {
        let digest = self.credentials.digest_agent_key(key);
        let found = self
            .agents
            .find_agent_by_key(digest)
            .await
            .map_err(ConnectAgentError::Store)?;
        let agent = match found {
            Some(agent) if agent.key_digest.ct_eq(&digest) => agent,
            Some(_) | None => return Err(ConnectAgentError::UnknownKey),
        };
        Ok(agent)
    }

    /// An authenticated agent's new connection replaced `previous`, the tunnel its earlier
    /// connection held (if any): a reconnected agent has lost that tunnel and everything
    /// running in it, so it is closed. Only that session: the new connection may already
    /// have opened one of its own.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn agent_connected(
        &self,
        agent: AgentId,
        previous: Option<SessionId>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        self.presence.note_seen(agent, now, None);
        let Some(previous) = previous else {
            return Ok(());
        };
        self.end_session_commands(previous, rmm_domain::CommandStatus::Failed)
            .await;
        if let Some(closed) = self
            .sessions
            .close(previous, CloseReason::AgentReconnected, now)
            .await?
        {
            self.audit_close(&closed, CloseReason::AgentReconnected)
                .await;
            tracing::info!(session_id = %previous, agent_id = %agent, "tunnel closed: the agent reconnected");
        }
        Ok(())
    }

    /// Notes a heartbeat (written at the next flush).
    pub fn agent_heartbeat(&self, agent: AgentId, facts: Option<HostFacts>) {
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

    /// Writes buffered presence, then closes sessions idle for longer than the idle timeout
    /// and tells their agents. Run periodically.
    ///
    /// # Errors
    /// [`StoreError`]; buffered presence that failed to write is dropped (the next heartbeat
    /// brings it back), never retried without bound.
    pub async fn flush_presence_and_close_idle(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let (seen, active) = self.presence.take();
        if !seen.is_empty() {
            self.agents.record_seen(&seen).await?;
        }
        if !active.is_empty() {
            self.sessions.touch(&active, now).await?;
        }
        self.end_overdue_commands(now).await;
        let cutoff = now.minus(self.config.idle_timeout);
        let idle = self.sessions.close_idle(cutoff, now).await?;
        for session in &idle {
            tracing::info!(session_id = %session.id(), agent_id = %session.agent(), "closing idle session");
            self.gateway.close_tunnel(session.agent(), session.id());
            self.end_session_commands(session.id(), rmm_domain::CommandStatus::Cancelled)
                .await;
            self.audit_close(session, CloseReason::Idle).await;
        }
        Ok(idle.len())
    }

    /// Writes an audit entry; a failure is logged, and never undoes what already happened.
    pub(crate) async fn audit_close(&self, session: &rmm_domain::Session, reason: CloseReason) {
        self.audit_session(
            session,
            AuditAction::TunnelClose,
            Some(reason.as_str().to_owned()),
        )
        .await;
    }

    pub(crate) async fn audit_session(
        &self,
        session: &rmm_domain::Session,
        action: AuditAction,
        detail: Option<String>,
    ) {
        let event = AuditEvent {
            at: self.clock.now(),
            action,
            user: Some(session.owner()),
            agent: Some(session.agent()),
            session: Some(session.id()),
            detail,
            command: None,
            file: None,
        };
        if let Err(e) = self.audit.append(&event).await {
            tracing::error!(error = %e, source = ?std::error::Error::source(&e), action = action.as_str(), session_id = %session.id(), "audit write failed");
        }
    }
}
