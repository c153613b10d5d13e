//! Revocation reaching what is already open: sessions whose owner was disabled or deleted
//! (by this server, or by `rmm-server user ...` on the same database) are closed, telling
//! their agents. Run about twice a second by the server, so a disabled user's tunnels close
//! within 2 s. A logout closes the sessions opened with the token it revokes.

use std::collections::{HashMap, HashSet};

use rmm_domain::{CloseReason, CommandStatus, TokenId, UserId};

use crate::app::{App, Ports};
use crate::ports::{AgentGateway, AuditNote, Clock, SessionRepository, StoreError, UserRepository};

impl<P: Ports> App<P> {
    /// Closes every open session whose owner is disabled or deleted (reason `user_disabled`),
    /// and forgets long-expired tokens now and then. Returns how many sessions it closed.
    ///
    /// # Errors
    /// [`StoreError`] when the sessions or users cannot be read, or a close cannot be stored
    /// (the next round tries again).
    pub async fn close_sessions_of_revoked_users(&self) -> Result<usize, StoreError> {
        let open = self.sessions.list_open().await?;
        let owners: HashSet<UserId> = open.iter().map(|s| s.owner()).collect();
        let mut may_act = HashMap::with_capacity(owners.len());
        for owner in owners {
            let user = self.users.find_user_by_id(owner).await?;
            may_act.insert(owner, user.is_some_and(|u| !u.disabled));
        }
        let now = self.clock.now();
        let note = AuditNote::close(CloseReason::UserDisabled);
        let mut closed = 0;
        for session in open {
            if may_act.get(&session.owner()).copied().unwrap_or(true) {
                continue;
            }
            let id = session.id();
            if self
                .sessions
                .close(id, CloseReason::UserDisabled, now, &note)
                .await?
                .is_some()
            {
                closed += 1;
                tracing::warn!(session_id = %id, user_id = %session.owner(), agent_id = %session.agent(), "closed a session of a disabled or deleted user");
                self.gateway.close_tunnel(session.agent(), id);
                self.end_session_commands(id, CommandStatus::Cancelled)
                    .await;
            }
        }
        Ok(closed)
    }
    /// Closes the open sessions opened with `token` (its logout): reason `logged_out`, their
    /// agents told. Returns how many it closed.
    ///
    /// # Errors
    /// [`StoreError`] when they cannot be read or a close cannot be stored.
    pub(crate) async fn close_sessions_opened_with(
        &self,
        token: TokenId,
    ) -> Result<usize, StoreError> {
        let note = AuditNote::close(CloseReason::LoggedOut);
        let now = self.clock.now();
        let mut closed = 0;
        for session in self.sessions.list_open_opened_with(token).await? {
            let id = session.id();
            if self
                .sessions
                .close(id, CloseReason::LoggedOut, now, &note)
                .await?
                .is_some()
            {
                closed += 1;
                tracing::info!(session_id = %id, user_id = %session.owner(), "closed a session its owner's logout revoked");
                self.gateway.close_tunnel(session.agent(), id);
                self.end_session_commands(id, CommandStatus::Cancelled)
                    .await;
            }
        }
        Ok(closed)
    }
}
