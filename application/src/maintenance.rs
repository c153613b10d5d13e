//! The periodic maintenance: buffered presence written, commands past their timeout ended,
//! command output, command ends and file-transfer audit entries the store could not take
//! retried, idle sessions closed, and sessions whose close could not be recorded when it
//! happened closed now. Every close commits with its audit entry, so a close the store
//! refused is not lost: it happens here, later.

use std::time::Duration;

use rmm_domain::{AgentMode, CloseReason, Session, SessionStatus, Timestamp};

use crate::app::{App, Ports};
use crate::ports::{
    AgentGateway, AgentRepository, AuditAction, AuditNote, Clock, SessionRepository, StoreError,
};

/// How much longer than the open timeout an open session may go unheld by any agent
/// connection before the sweep closes it: covers the moments an open takes between storing
/// its pending session and the connection knowing of it, and between the timeout and its
/// close.
const SWEEP_GRACE: Duration = Duration::from_secs(5);

impl<P: Ports> App<P> {
    /// One round of maintenance: writes buffered presence, ends overdue commands, writes the
    /// command output and stores the command ends the store refused before, writes the
    /// file-transfer audit entries it refused before, closes idle sessions (telling their agents) and
    /// sweeps sessions no agent connection holds. Each step runs even when an earlier one
    /// failed. Returns how many idle sessions were closed.
    ///
    /// # Errors
    /// The first failed step's [`StoreError`]; buffered presence that failed to write is
    /// dropped (the next heartbeat brings it back), never retried without bound.
    pub async fn flush_presence_and_close_idle(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let flushed = self.flush_presence(now).await;
        self.end_overdue_commands(now).await;
        let stored = self.store_unstored_ends().await;
        let audited = self.store_unstored_audit().await;
        let idle = self.close_idle(now).await;
        let swept = self.close_unheld_sessions(now).await;
        flushed?;
        stored?;
        audited?;
        let idle = idle?;
        swept?;
        Ok(idle)
    }

    async fn flush_presence(&self, now: Timestamp) -> Result<(), StoreError> {
        let (seen, active) = self.presence.take();
        if !seen.is_empty() {
            // Last seen and host facts as listed (the buffer is listed too until written).
            self.agent_events.changed();
            self.agents.record_seen(&seen).await?;
        }
        if !active.is_empty() {
            self.sessions.touch(&active, now).await?;
        }
        Ok(())
    }

    async fn close_idle(&self, now: Timestamp) -> Result<usize, StoreError> {
        let cutoff = now.minus(self.config.idle_timeout);
        let note = AuditNote::close(CloseReason::Idle);
        let idle = self.sessions.close_idle(cutoff, now, &note).await?;
        for session in &idle {
            tracing::info!(session_id = %session.id(), agent_id = %session.agent(), "closed idle session");
            self.end_session_commands(session.id(), CloseReason::Idle)
                .await;
            self.gateway.close_tunnel(session.agent(), session.id());
            self.agent_events.changed();
        }
        Ok(idle.len())
    }

    /// Closes, each with its entry, the open sessions no agent connection holds (neither as
    /// its tunnel nor as the open in flight) once they are older than any open can take: the
    /// ones whose close the store refused when it happened (agent gone or reconnected, a
    /// failed open, an activation that could not be recorded).
    async fn close_unheld_sessions(&self, now: Timestamp) -> Result<(), StoreError> {
        let cutoff = now.minus(self.config.open_timeout + SWEEP_GRACE);
        for session in self.sessions.list_open().await? {
            if session.opened_at() >= cutoff {
                continue;
            }
            let Some((reason, note)) = self.unheld_close(&session) else {
                continue;
            };
            if self
                .sessions
                .close(session.id(), reason, now, &note)
                .await?
                .is_some()
            {
                tracing::warn!(session_id = %session.id(), agent_id = %session.agent(), reason = reason.as_str(), "closed a session no agent connection holds (its close could not be recorded when it happened)");
                self.end_session_commands(session.id(), reason).await;
            }
        }
        Ok(())
    }

    /// How to close `session` when no connection holds it; `None` when one does.
    fn unheld_close(&self, session: &Session) -> Option<(CloseReason, AuditNote)> {
        let (agent, id) = (session.agent(), session.id());
        let mode = self.gateway.mode(agent);
        if mode.and_then(AgentMode::session) == Some(id)
            || self.gateway.pending_open(agent) == Some(id)
        {
            return None;
        }
        Some(match (session.status(), mode) {
            (SessionStatus::Pending, _) => (
                CloseReason::OpenTimeout,
                AuditNote::new(
                    AuditAction::TunnelTimeout,
                    Some("the open ended without a recorded outcome".to_owned()),
                ),
            ),
            (_, None) => (
                CloseReason::AgentDisconnected,
                AuditNote::close(CloseReason::AgentDisconnected),
            ),
            (_, Some(_)) => (
                CloseReason::AgentReconnected,
                AuditNote::close(CloseReason::AgentReconnected),
            ),
        })
    }
}
