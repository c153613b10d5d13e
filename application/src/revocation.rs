//! Revocation reaching what is already open: sessions whose owner was disabled or deleted
//! (by this server, or by `rmm-server user ...` on the same database) are closed, telling
//! their agents. Run about twice a second by the server, so a disabled user's tunnels close
//! within 2 s. A logout closes the sessions opened with the token it revokes, and the same
//! sweep closes any a logout could not.

use std::collections::{HashMap, HashSet};

use rmm_domain::{CloseReason, Session, TokenId, UserId};

use crate::app::{App, Ports};
use crate::ports::{AgentGateway, AuditNote, Clock, SessionRepository, StoreError, UserRepository};

impl<P: Ports> App<P> {
    /// Closes every open session whose owner is disabled or deleted (reason `user_disabled`)
    /// or whose token was logged out (`logged_out`). Returns how many sessions it closed.
    ///
    /// # Errors
    /// [`StoreError`] when the sessions or users cannot be read, or a close cannot be stored
    /// (the next round tries again).
    pub async fn close_sessions_of_revoked_users(&self) -> Result<usize, StoreError> {
        let logged_out = self.sessions.list_open_logged_out().await?;
        let mut closed = self.close_each(logged_out, CloseReason::LoggedOut).await?;
        let open = self.sessions.list_open().await?;
        let owners: HashSet<UserId> = open.iter().map(Session::owner).collect();
        let mut may_act = HashMap::with_capacity(owners.len());
        for owner in owners {
            let user = self.users.find_user_by_id(owner).await?;
            may_act.insert(owner, user.is_some_and(|u| !u.disabled));
        }
        let revoked = open
            .into_iter()
            .filter(|s| !may_act.get(&s.owner()).copied().unwrap_or(true))
            .collect();
        closed += self.close_each(revoked, CloseReason::UserDisabled).await?;
        Ok(closed)
    }

    /// Closes the open sessions opened with `token` (its logout): reason `logged_out`, their
    /// agents told. Returns how many it closed.
    ///
    /// # Errors
    /// [`StoreError`] when they cannot be read or a close cannot be stored (the sweep closes
    /// the rest).
    pub(crate) async fn close_sessions_opened_with(
        &self,
        token: TokenId,
    ) -> Result<usize, StoreError> {
        let opened = self.sessions.list_open_opened_with(token).await?;
        self.close_each(opened, CloseReason::LoggedOut).await
    }

    /// Closes each session for `reason`, with its entry, telling its agent and cancelling its
    /// commands. Returns how many it closed (others had closed meanwhile).
    async fn close_each(
        &self,
        sessions: Vec<Session>,
        reason: CloseReason,
    ) -> Result<usize, StoreError> {
        let note = AuditNote::close(reason);
        let now = self.clock.now();
        let mut closed = 0;
        for session in sessions {
            let id = session.id();
            if self.sessions.close(id, reason, now, &note).await?.is_some() {
                closed += 1;
                tracing::warn!(session_id = %id, user_id = %session.owner(), agent_id = %session.agent(), reason = reason.as_str(), "closed a session its owner's revocation ended");
                self.end_session_commands(id, reason).await;
                self.gateway.close_tunnel(session.agent(), id);
                self.agent_events.changed();
            }
        }
        Ok(closed)
    }
}
