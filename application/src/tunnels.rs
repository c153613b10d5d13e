//! Tunnel sessions: open (a handshake with the agent), close, status, and the cleanups that
//! keep "active" true: agent disconnect, restart reconciliation, shutdown.

use rmm_domain::{
    Actor, AgentId, AgentMode, CloseReason, CommandEndReason, Role, Session, SessionAction,
    SessionId, SessionStatus, Timestamp, TokenId, UserId,
};

use crate::access::{SessionUseError, may_see, session_for};
use crate::app::{App, Ports};
use crate::ports::{
    AgentGateway, AuditAction, AuditNote, Clock, CommandRepository, GatewayError, GroupRepository,
    IdGenerator, OpenReply, RecordingRepository, SessionRepository, StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum OpenTunnelError {
    #[error("this role may not open tunnels (auditors read, they do not act)")]
    Forbidden,
    /// Not connected, or (for a technician) not in one of their groups: the same answer.
    #[error("agent {0} is not connected")]
    AgentOffline(AgentId),
    /// The user holds this many pending or active sessions already (the per-user cap).
    #[error("you hold {0} open sessions, the most one user may: close one first")]
    TooManySessions(u64),
    /// The agent has a session already (one at a time); the holder says whose.
    #[error("{0}")]
    Conflict(TunnelHolder),
    #[error("agent refused the tunnel: {0}")]
    Refused(String),
    #[error("agent did not confirm the tunnel within {0:?}")]
    Timeout(std::time::Duration),
    #[error("agent disconnected before confirming the tunnel")]
    AgentGone,
    #[error("agent is overloaded; try again")]
    Overloaded,
    /// The database failed: nothing was opened (the agent is told to close its end).
    #[error("the database is unavailable; no tunnel was opened")]
    Store(#[source] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum CloseTunnelError {
    #[error("session {0} not found")]
    NotFound(SessionId),
    #[error("session {0} is owned by another user")]
    Forbidden(SessionId),
    /// The database failed: the session is unchanged.
    #[error("the database is unavailable; the session was not closed")]
    Store(#[source] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum GetTunnelStatusError {
    #[error("session {0} not found")]
    NotFound(SessionId),
    #[error("session {0} is owned by another user")]
    Forbidden(SessionId),
    #[error("session store failed")]
    Store(#[source] StoreError),
}

/// Who holds an agent whose tunnel could not be opened, as the refusal tells the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelHolder {
    /// The caller's own session, pending or active.
    Caller {
        session: SessionId,
        status: SessionStatus,
        since: Timestamp,
    },
    /// Another user's session. Its id is told only to admins, who may close it.
    Other {
        user: UserId,
        status: SessionStatus,
        since: Timestamp,
        session: Option<SessionId>,
    },
    /// Nobody the server can name right now (the session ended a moment ago, or the store
    /// could not be read).
    Unknown,
}

impl std::fmt::Display for TunnelHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = |status: SessionStatus| match status {
            SessionStatus::Pending => "being opened",
            SessionStatus::Active | SessionStatus::Closed => "open",
        };
        match self {
            Self::Caller {
                session,
                status,
                since,
            } => write!(
                f,
                "you already hold session {session} to this agent ({} since {since}); an \
                 agent has one session at a time: use that one, or close it first with POST \
                 /api/v1/tunnel/close {{\"session_id\": \"{session}\"}} (rmm close {session})",
                state(*status)
            ),
            Self::Other {
                user,
                status,
                since,
                session,
            } => {
                write!(
                    f,
                    "user {user} holds this agent: their session is {} since {since}; an \
                     agent has one session at a time: they or an admin can close it",
                    state(*status)
                )?;
                match session {
                    Some(session) => write!(f, " (session {session})"),
                    None => Ok(()),
                }
            }
            Self::Unknown => f.write_str(
                "the agent already has a session open or being opened; retry when it ends",
            ),
        }
    }
}

impl<P: Ports> App<P> {
    /// Whether `actor` may open a tunnel to `agent` now: their role and their groups (an
    /// agent outside them reads as not connected). Their cap on open sessions is checked with
    /// the insert of the pending session.
    async fn may_open(&self, actor: Actor, agent: AgentId) -> Result<(), OpenTunnelError> {
        if !actor.role.may_open_tunnels() {
            return Err(OpenTunnelError::Forbidden);
        }
        if !may_see(&*self.groups, actor, agent)
            .await
            .map_err(OpenTunnelError::Store)?
        {
            return Err(OpenTunnelError::AgentOffline(agent));
        }
        Ok(())
    }

    /// The answer to an open of an agent that is not connected: over the cap comes first, as
    /// it would for a connected one.
    async fn offline_or_over_cap(&self, actor: Actor, agent: AgentId) -> OpenTunnelError {
        let cap = self.config.max_sessions_per_user;
        match self.groups.open_sessions_of(actor.id).await {
            Ok(held) if held >= cap => OpenTunnelError::TooManySessions(cap),
            Ok(_) => OpenTunnelError::AgentOffline(agent),
            Err(e) => OpenTunnelError::Store(e),
        }
    }

    /// Opens a tunnel: records a pending session, sends `tunnel_open`, and returns the active
    /// session only once the agent answered `tunnel_ready` and the activation committed with
    /// its `tunnel_open` entry. On refusal, timeout, disconnect or a failed activation nothing
    /// is left active.
    ///
    /// # Errors
    /// See [`OpenTunnelError`].
    pub async fn open_tunnel(
        &self,
        actor: Actor,
        agent: AgentId,
    ) -> Result<Session, OpenTunnelError> {
        self.open_tunnel_with(actor, None, agent).await
    }

    /// [`Self::open_tunnel`], recording the token the request carried: its logout closes the
    /// session (`logged_out`).
    ///
    /// # Errors
    /// See [`OpenTunnelError`].
    pub async fn open_tunnel_with(
        &self,
        actor: Actor,
        token: Option<TokenId>,
        agent: AgentId,
    ) -> Result<Session, OpenTunnelError> {
        let opened = self.try_open_tunnel(actor, token, agent).await;
        // The agent's mode may have changed, whatever the outcome.
        self.agent_events.changed();
        opened
    }

    async fn try_open_tunnel(
        &self,
        actor: Actor,
        token: Option<TokenId>,
        agent: AgentId,
    ) -> Result<Session, OpenTunnelError> {
        self.may_open(actor, agent).await?;
        // Counted until the pending session is stored: the cap counts it from then on.
        let in_flight = self.open_gates.enter(actor.id);
        // A quick answer for the common case; the gateway checks again atomically.
        let Some(mode) = self.gateway.mode(agent) else {
            return Err(self.offline_or_over_cap(actor, agent).await);
        };
        let mut session = Session::open(self.ids.session_id(), agent, actor.id, self.clock.now());
        let cap = self.config.max_sessions_per_user;
        loop {
            // The user's other opens in flight may land any moment: leave room for them.
            let others = in_flight.others();
            match self
                .sessions
                .insert_pending_capped(&session, token, cap.saturating_sub(others))
                .await
            {
                Ok(true) => break,
                Ok(false) if others == 0 => return Err(OpenTunnelError::TooManySessions(cap)),
                // Maybe only for want of room the others may not need: check again, exactly,
                // once fewer are in flight.
                Ok(false) => in_flight.fewer_than(others).await,
                Err(StoreError::Conflict) => {
                    let holder = self.tunnel_holder(actor, agent, Some(mode)).await;
                    return Err(OpenTunnelError::Conflict(holder));
                }
                Err(e) => return Err(OpenTunnelError::Store(e)),
            }
        }
        drop(in_flight);
        let id = session.id();
        let timeout = self.config.open_timeout;
        let reply =
            tokio::time::timeout(timeout, self.gateway.open_tunnel(agent, id, actor.id)).await;
        let failure = match reply {
            Ok(Ok(OpenReply::Ready)) => None,
            Ok(Ok(OpenReply::Refused(why))) => {
                Some((CloseReason::Refused, OpenTunnelError::Refused(why)))
            }
            Ok(Err(e)) => Some(self.open_failure(actor, agent, e).await),
            Err(_elapsed) => {
                self.gateway.abandon_open(agent, id);
                Some((CloseReason::OpenTimeout, OpenTunnelError::Timeout(timeout)))
            }
        };
        if let Some((reason, error)) = failure {
            return Err(self
                .close_failed_open(actor, id, agent, reason, error)
                .await);
        }
        let now = self.clock.now();
        let opened = AuditNote::new(AuditAction::TunnelOpen, None);
        let activated = match self.sessions.activate(id, now, &opened).await {
            Ok(activated) => activated,
            Err(e) => {
                // Not recorded, so not open: the agent closes its end, and the pending session
                // is closed with its entry by the maintenance sweep once the store is back.
                tracing::error!(session_id = %id, agent_id = %agent, error = %e, source = ?std::error::Error::source(&e), "tunnel not opened: its activation could not be recorded");
                self.gateway.close_tunnel(agent, id);
                return Err(OpenTunnelError::Store(e));
            }
        };
        if !activated {
            // Closed while we waited: the agent dropped between its answer and this write.
            self.gateway.close_tunnel(agent, id);
            return Err(OpenTunnelError::AgentGone);
        }
        // The stored row is active; mirror the transition on our copy.
        session
            .activate(now)
            .map_err(|_| OpenTunnelError::AgentGone)?;
        tracing::info!(session_id = %id, agent_id = %agent, tech_id = %actor.id, "tunnel open");
        Ok(session)
    }

    /// What a gateway failure during an open means: how to close the pending session, and
    /// what to answer.
    async fn open_failure(
        &self,
        actor: Actor,
        agent: AgentId,
        e: GatewayError,
    ) -> (CloseReason, OpenTunnelError) {
        match e {
            GatewayError::NotConnected => (
                CloseReason::AgentDisconnected,
                OpenTunnelError::AgentOffline(agent),
            ),
            GatewayError::Busy | GatewayError::Unsupported => {
                let mode = self.gateway.mode(agent);
                let holder = self.tunnel_holder(actor, agent, mode).await;
                (CloseReason::Refused, OpenTunnelError::Conflict(holder))
            }
            GatewayError::Disconnected => {
                (CloseReason::AgentDisconnected, OpenTunnelError::AgentGone)
            }
            GatewayError::Overloaded => (CloseReason::Refused, OpenTunnelError::Overloaded),
        }
    }

    /// Closes the pending session of an open that failed, with its entry, and returns `error`
    /// (or the store's failure: then the maintenance sweep closes the session later).
    async fn close_failed_open(
        &self,
        actor: Actor,
        id: SessionId,
        agent: AgentId,
        reason: CloseReason,
        error: OpenTunnelError,
    ) -> OpenTunnelError {
        let action = match reason {
            CloseReason::Refused => AuditAction::TunnelRefused,
            CloseReason::OpenTimeout => AuditAction::TunnelTimeout,
            _ => AuditAction::TunnelClose,
        };
        let note = AuditNote::new(action, Some(error.to_string()));
        if let Err(e) = self
            .sessions
            .close(id, reason, self.clock.now(), &note)
            .await
        {
            tracing::error!(session_id = %id, agent_id = %agent, error = %e, source = ?std::error::Error::source(&e), "the failed open's session could not be closed");
            return OpenTunnelError::Store(e);
        }
        tracing::info!(session_id = %id, agent_id = %agent, tech_id = %actor.id, reason = reason.as_str(), "tunnel open failed");
        error
    }

    /// Who holds `agent`: the session of its tunnel (from `mode`) or of the open in flight,
    /// as stored. Best effort: a refusal must not fail for want of a name.
    async fn tunnel_holder(
        &self,
        actor: Actor,
        agent: AgentId,
        mode: Option<AgentMode>,
    ) -> TunnelHolder {
        let Some(id) = mode
            .and_then(AgentMode::session)
            .or_else(|| self.gateway.pending_open(agent))
        else {
            return TunnelHolder::Unknown;
        };
        let held = match self.sessions.get(id).await {
            Ok(Some(held)) if held.status() != SessionStatus::Closed => held,
            Ok(_) => return TunnelHolder::Unknown,
            Err(e) => {
                tracing::warn!(session_id = %id, error = %e, "could not read the session that holds an agent");
                return TunnelHolder::Unknown;
            }
        };
        if held.owner() == actor.id {
            TunnelHolder::Caller {
                session: held.id(),
                status: held.status(),
                since: held.opened_at(),
            }
        } else {
            TunnelHolder::Other {
                user: held.owner(),
                status: held.status(),
                since: held.opened_at(),
                session: (actor.role == Role::Admin).then_some(held.id()),
            }
        }
    }

    /// Closes a session: its owner, or an admin. Closing a closed session answers its state.
    ///
    /// # Errors
    /// [`CloseTunnelError::NotFound`], [`CloseTunnelError::Forbidden`].
    pub async fn close_tunnel(
        &self,
        actor: Actor,
        id: SessionId,
    ) -> Result<Session, CloseTunnelError> {
        let session = match session_for(
            &*self.sessions,
            &*self.groups,
            actor,
            id,
            SessionAction::Close,
        )
        .await
        {
            Ok(session) => session,
            Err(SessionUseError::NotFound(id)) => return Err(CloseTunnelError::NotFound(id)),
            Err(SessionUseError::Forbidden(id)) => return Err(CloseTunnelError::Forbidden(id)),
            Err(SessionUseError::Store(e)) => return Err(CloseTunnelError::Store(e)),
        };
        let reason = session.close_reason_for(actor);
        match self
            .sessions
            .close(id, reason, self.clock.now(), &AuditNote::close(reason))
            .await
            .map_err(CloseTunnelError::Store)?
        {
            Some(closed) => {
                self.end_session_commands(id, reason).await;
                self.gateway.close_tunnel(closed.agent(), id);
                self.agent_events.changed();
                tracing::info!(session_id = %id, agent_id = %closed.agent(), by = %actor.id, reason = reason.as_str(), "tunnel closed");
                Ok(closed)
            }
            // Closed meanwhile (or before): report what is stored.
            None => self
                .sessions
                .get(id)
                .await
                .map_err(CloseTunnelError::Store)?
                .ok_or(CloseTunnelError::NotFound(id)),
        }
    }

    /// A session's state, for its owner.
    ///
    /// # Errors
    /// [`GetTunnelStatusError::NotFound`], [`GetTunnelStatusError::Forbidden`].
    pub async fn tunnel_status(
        &self,
        actor: Actor,
        id: SessionId,
    ) -> Result<Session, GetTunnelStatusError> {
        match session_for(
            &*self.sessions,
            &*self.groups,
            actor,
            id,
            SessionAction::Read,
        )
        .await
        {
            Ok(session) => Ok(session),
            Err(SessionUseError::NotFound(id)) => Err(GetTunnelStatusError::NotFound(id)),
            Err(SessionUseError::Forbidden(id)) => Err(GetTunnelStatusError::Forbidden(id)),
            Err(SessionUseError::Store(e)) => Err(GetTunnelStatusError::Store(e)),
        }
    }

    /// An agent's connection ended. `tunnel` is the session that connection had open, if any
    /// (pending opens are closed by the open itself, which sees the disconnect). Only the
    /// connection's own session is closed, so a late cleanup cannot touch a newer connection.
    /// The close commits with its `tunnel_close` entry.
    ///
    /// # Errors
    /// [`StoreError`]: the session is still open; the maintenance sweep closes it (the agent
    /// is gone) once the store is back.
    pub async fn agent_disconnected(
        &self,
        agent: AgentId,
        tunnel: Option<SessionId>,
    ) -> Result<(), StoreError> {
        self.agent_events.changed();
        let Some(id) = tunnel else { return Ok(()) };
        let reason = CloseReason::AgentDisconnected;
        self.end_session_commands(id, reason).await;
        if self
            .sessions
            .close(id, reason, self.clock.now(), &AuditNote::close(reason))
            .await?
            .is_some()
        {
            tracing::info!(session_id = %id, agent_id = %agent, "tunnel closed: agent disconnected");
        }
        Ok(())
    }

    /// Closes every session still open, for `reason` (start-up reconciliation or shutdown),
    /// each with its `tunnel_close` entry in one transaction, telling connected agents.
    /// Returns how many were closed.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn close_all_sessions(&self, reason: CloseReason) -> Result<usize, StoreError> {
        let closed = self
            .sessions
            .close_all_open(reason, self.clock.now(), &AuditNote::close(reason))
            .await?;
        for session in &closed {
            self.end_session_commands(session.id(), reason).await;
            self.gateway.close_tunnel(session.agent(), session.id());
            self.agent_events.changed();
        }
        if !closed.is_empty() {
            tracing::info!(
                count = closed.len(),
                reason = reason.as_str(),
                "closed open sessions"
            );
        }
        Ok(closed.len())
    }

    /// Start-up: closes sessions and ends commands a previous process left open (nobody can
    /// report on them any more), each with its entry (`tunnel_close` and `command_end`, detail
    /// `server_restart`). Run before accepting connections.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn reconcile_after_restart(&self) -> Result<(usize, usize), StoreError> {
        let sessions = self.close_all_sessions(CloseReason::ServerRestart).await?;
        let commands = self
            .commands
            .fail_running_commands(
                CommandEndReason::SessionClosed(CloseReason::ServerRestart),
                self.clock.now(),
                &AuditNote::new(
                    AuditAction::CommandEnd,
                    Some(CloseReason::ServerRestart.as_str().to_owned()),
                ),
            )
            .await?;
        if !commands.is_empty() {
            tracing::warn!(
                count = commands.len(),
                "ended commands a previous server process left running"
            );
        }
        let recordings = self.recordings.finish_abandoned(self.clock.now()).await?;
        if recordings > 0 {
            tracing::warn!(
                count = recordings,
                "closed terminal recordings a previous server process left open"
            );
        }
        Ok((sessions, commands.len()))
    }
}
