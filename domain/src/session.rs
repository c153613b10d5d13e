//! A tunnel session: its lifecycle (pending → active → closed, with a reason) and who may
//! touch it.

use std::time::Duration;

use crate::ids::{AgentId, SessionId, UserId};
use crate::names::{Actor, Role};
use crate::time::Timestamp;

/// The three states of a session, as reported to clients and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionStatus {
    /// Recorded; `tunnel_open` sent; the agent has not confirmed yet.
    Pending,
    /// The agent answered `tunnel_ready`.
    Active,
    /// Over, for the recorded reason.
    Closed,
}

impl SessionStatus {
    pub const ALL: [Self; 3] = [Self::Pending, Self::Active, Self::Closed];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Closed => "closed",
        }
    }
}

/// Why a session ended. Kept with the session and in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// Its owner closed it.
    ClosedByOwner,
    /// An admin who does not own it closed it.
    ClosedByAdmin,
    /// The agent refused the `tunnel_open`.
    Refused,
    /// The agent did not answer the `tunnel_open` in time.
    OpenTimeout,
    /// The agent's WebSocket closed.
    AgentDisconnected,
    /// The agent connected again, so it lost whatever tunnel it had.
    AgentReconnected,
    /// No activity for longer than the idle timeout.
    Idle,
    /// The server shut down.
    ServerShutdown,
    /// A previous server process ended without closing it; found at start-up.
    ServerRestart,
    /// Its owner was disabled or deleted.
    UserDisabled,
    /// Its owner logged out the token that opened it.
    LoggedOut,
    /// An admin revoked the agent.
    AgentRevoked,
    /// Cluster mode: the node that held the agent's connection stopped renewing its lease
    /// (it died or lost the database); another node closed the session.
    NodeLost,
}

impl CloseReason {
    pub const ALL: [Self; 13] = [
        Self::ClosedByOwner,
        Self::ClosedByAdmin,
        Self::Refused,
        Self::OpenTimeout,
        Self::AgentDisconnected,
        Self::AgentReconnected,
        Self::Idle,
        Self::ServerShutdown,
        Self::ServerRestart,
        Self::UserDisabled,
        Self::LoggedOut,
        Self::AgentRevoked,
        Self::NodeLost,
    ];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ClosedByOwner => "closed_by_owner",
            Self::ClosedByAdmin => "closed_by_admin",
            Self::Refused => "refused",
            Self::OpenTimeout => "open_timeout",
            Self::AgentDisconnected => "agent_disconnected",
            Self::AgentReconnected => "agent_reconnected",
            Self::Idle => "idle",
            Self::ServerShutdown => "server_shutdown",
            Self::ServerRestart => "server_restart",
            Self::UserDisabled => "user_disabled",
            Self::LoggedOut => "logged_out",
            Self::AgentRevoked => "agent_revoked",
            Self::NodeLost => "node_lost",
        }
    }

    /// The inverse of [`Self::as_str`].
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == value)
    }
}

/// Where a session is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Pending,
    Active,
    Closed { at: Timestamp, reason: CloseReason },
}

/// A forbidden lifecycle transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("session is already active")]
    AlreadyActive,
    #[error("session is closed ({0:?})")]
    Closed(CloseReason),
    #[error("session is not active yet")]
    NotActive,
    #[error("a closed session needs a close time and reason")]
    ClosedWithoutReason,
}

/// What an actor wants to do with a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAction {
    /// Read its status.
    Read,
    /// Run commands or move files in it.
    Use,
    /// Close it.
    Close,
    /// Watch its live terminals read-only.
    Watch,
}

/// The actor may not do that with this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("session {session} is owned by another user")]
pub struct AccessError {
    pub session: SessionId,
}

/// One technician's tunnel to one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    id: SessionId,
    agent: AgentId,
    owner: UserId,
    opened_at: Timestamp,
    last_activity: Timestamp,
    state: SessionState,
}

impl Session {
    /// A new session, pending until the agent confirms.
    #[must_use]
    pub fn open(id: SessionId, agent: AgentId, owner: UserId, now: Timestamp) -> Self {
        Self {
            id,
            agent,
            owner,
            opened_at: now,
            last_activity: now,
            state: SessionState::Pending,
        }
    }

    /// Rebuilds a stored session; stores validate their text columns with
    /// [`Self::state_from_parts`] first.
    #[must_use]
    pub fn restore(
        id: SessionId,
        agent: AgentId,
        owner: UserId,
        opened_at: Timestamp,
        last_activity: Timestamp,
        state: SessionState,
    ) -> Self {
        Self {
            id,
            agent,
            owner,
            opened_at,
            last_activity,
            state,
        }
    }

    /// Validates the stored form of a state: a status word, and for closed sessions the time
    /// and reason.
    ///
    /// # Errors
    /// [`SessionError::ClosedWithoutReason`] when a closed session lacks its time or reason,
    /// or the status word is unknown.
    pub fn state_from_parts(
        status: &str,
        closed_at: Option<Timestamp>,
        reason: Option<&str>,
    ) -> Result<SessionState, SessionError> {
        match (status, closed_at, reason.and_then(CloseReason::parse)) {
            ("pending", _, _) => Ok(SessionState::Pending),
            ("active", _, _) => Ok(SessionState::Active),
            ("closed", Some(at), Some(reason)) => Ok(SessionState::Closed { at, reason }),
            _ => Err(SessionError::ClosedWithoutReason),
        }
    }

    /// The agent confirmed the tunnel.
    ///
    /// # Errors
    /// [`SessionError::AlreadyActive`] or [`SessionError::Closed`].
    pub fn activate(&mut self, now: Timestamp) -> Result<(), SessionError> {
        match self.state {
            SessionState::Pending => {
                self.state = SessionState::Active;
                self.last_activity = self.last_activity.max(now);
                Ok(())
            }
            SessionState::Active => Err(SessionError::AlreadyActive),
            SessionState::Closed { reason, .. } => Err(SessionError::Closed(reason)),
        }
    }

    /// Ends the session. Pending sessions close too: a refused or timed-out open.
    ///
    /// # Errors
    /// [`SessionError::Closed`] when it is closed already (the first reason is kept).
    pub fn close(&mut self, reason: CloseReason, now: Timestamp) -> Result<(), SessionError> {
        match self.state {
            SessionState::Pending | SessionState::Active => {
                self.state = SessionState::Closed { at: now, reason };
                Ok(())
            }
            SessionState::Closed { reason, .. } => Err(SessionError::Closed(reason)),
        }
    }

    /// Records activity (a command, output, a file chunk) on an active session.
    ///
    /// # Errors
    /// [`SessionError::NotActive`] while pending, [`SessionError::Closed`] once closed.
    pub fn touch(&mut self, now: Timestamp) -> Result<(), SessionError> {
        match self.state {
            SessionState::Active => {
                self.last_activity = self.last_activity.max(now);
                Ok(())
            }
            SessionState::Pending => Err(SessionError::NotActive),
            SessionState::Closed { reason, .. } => Err(SessionError::Closed(reason)),
        }
    }

    /// Whether `actor` may do `action`: an admin or technician owner may do anything; an
    /// admin may also close sessions that are not theirs, but not read or use them; an
    /// auditor may only read (even a session they opened before becoming one).
    ///
    /// # Errors
    /// [`AccessError`] otherwise.
    pub fn authorize(&self, actor: Actor, action: SessionAction) -> Result<(), AccessError> {
        let owner = actor.id == self.owner;
        let allowed = match (actor.role, action) {
            (Role::Admin, SessionAction::Close | SessionAction::Watch)
            | (Role::Auditor, SessionAction::Read) => true,
            (Role::Admin | Role::Tech, _) => owner,
            (Role::Auditor, SessionAction::Use | SessionAction::Close | SessionAction::Watch) => {
                false
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(AccessError { session: self.id })
        }
    }

    /// Whether an active session has seen no activity for `idle` at `now`.
    #[must_use]
    pub fn is_idle(&self, now: Timestamp, idle: Duration) -> bool {
        matches!(self.state, SessionState::Active) && now.since(self.last_activity) >= idle
    }

    /// The reason to record when `actor` closes this session.
    #[must_use]
    pub fn close_reason_for(&self, actor: Actor) -> CloseReason {
        if actor.id == self.owner {
            CloseReason::ClosedByOwner
        } else {
            CloseReason::ClosedByAdmin
        }
    }

    #[must_use]
    pub fn id(&self) -> SessionId {
        self.id
    }
    #[must_use]
    pub fn agent(&self) -> AgentId {
        self.agent
    }
    #[must_use]
    pub fn owner(&self) -> UserId {
        self.owner
    }
    #[must_use]
    pub fn opened_at(&self) -> Timestamp {
        self.opened_at
    }
    #[must_use]
    pub fn last_activity(&self) -> Timestamp {
        self.last_activity
    }
    #[must_use]
    pub fn state(&self) -> SessionState {
        self.state
    }
    #[must_use]
    pub fn status(&self) -> SessionStatus {
        match self.state {
            SessionState::Pending => SessionStatus::Pending,
            SessionState::Active => SessionStatus::Active,
            SessionState::Closed { .. } => SessionStatus::Closed,
        }
    }
    #[must_use]
    pub fn closed_at(&self) -> Option<Timestamp> {
        match self.state {
            SessionState::Closed { at, .. } => Some(at),
            SessionState::Pending | SessionState::Active => None,
        }
    }
    #[must_use]
    pub fn close_reason(&self) -> Option<CloseReason> {
        match self.state {
            SessionState::Closed { reason, .. } => Some(reason),
            SessionState::Pending | SessionState::Active => None,
        }
    }
}

#[cfg(test)]
mod tests;
