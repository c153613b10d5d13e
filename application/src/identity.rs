//! Who may act now: issued tokens and their revocation, users managed by admins (or the
//! server console), and a user's own password and logout.
//!
//! Every request's token is checked against the store (see [`App::authenticate`]), so a
//! revocation made by this server or by `rmm-server user ...` on the same database takes
//! effect on the next request, and the role used is the user's role now.

use std::time::Duration;

use rmm_domain::{Actor, GroupName, Role, TokenId, UserId};

use crate::app::{App, Ports};
use crate::ports::{
    AuditAction, AuditEvent, Clock, Credentials, HashingBusy, IdGenerator, RevokeReason,
    StoreError, TokenRecord, UserChange, UserChangeOutcome, UserRecord, UserRepository,
};
use crate::users::MIN_PASSWORD_CHARS;

/// Why a signed token is refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthenticateError {
    /// Revoked (logout, password change), its user disabled or deleted, or never issued.
    #[error("the token was revoked or its user disabled: log in again")]
    Revoked,
    #[error("the token cannot be checked: the database is unavailable")]
    Store(#[source] StoreError),
}

/// Why a change to users was refused.
#[derive(Debug, thiserror::Error)]
pub enum UserAdminError {
    /// A bad name, role or field (the message says which).
    #[error("{0}")]
    Invalid(String),
    #[error("only admins manage users")]
    Forbidden,
    #[error("user {0} not found")]
    NotFound(UserId),
    #[error("no group named {0}")]
    UnknownGroup(String),
    #[error("refused: it would leave no enabled admin")]
    LastAdmin,
    #[error("password must be at least {MIN_PASSWORD_CHARS} characters")]
    WeakPassword,
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("password hashing is at capacity")]
    Busy,
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("the database is unavailable")]
    Store(#[source] StoreError),
}

/// A change an admin (or the console) asks for; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserUpdate {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
    pub password: Option<String>,
    /// The groups to grant instead of the current ones (all must exist).
    pub groups: Option<Vec<GroupName>>,
}

impl<P: Ports> App<P> {
    /// Stores a token for `actor`, who just logged in, valid for `ttl`: its id goes into the
    /// signed token, and requests are served while it stays live.
    ///
    /// # Errors
    /// [`StoreError`]: then the token must not be handed out.
    pub async fn issue_token(
        &self,
        actor: Actor,
        ttl: Duration,
    ) -> Result<TokenRecord, StoreError> {
        let issued_at = self.clock.now();
        let token = TokenRecord {
            id: self.ids.token_id(),
            user: actor.id,
            issued_at,
            expires_at: issued_at.plus(ttl),
        };
        self.users.insert_token(&token).await?;
        Ok(token)
    }

    /// The actor behind a validly signed token, as they are now (their current role), or
    /// why they may not act.
    ///
    /// # Errors
    /// See [`AuthenticateError`].
    pub async fn authenticate(
        &self,
        user: UserId,
        token: TokenId,
    ) -> Result<Actor, AuthenticateError> {
        let state = self
            .users
            .token_state(token)
            .await
            .map_err(AuthenticateError::Store)?;
        match state {
            Some(state) if state.live && state.user == user => Ok(Actor {
                id: state.user,
                role: state.role,
            }),
            Some(_) | None => Err(AuthenticateError::Revoked),
        }
    }

    /// Revokes the token `actor` presented and closes the sessions it opened (`logged_out`);
    /// `false` when it was revoked already.
    ///
    /// # Errors
    /// [`StoreError`]: then it is still live, or (revoked) its sessions could not all be
    /// closed; a retry closes the rest.
    pub async fn logout(&self, actor: Actor, token: TokenId) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let mut entry = AuditEvent::new(now, AuditAction::Logout);
        entry.user = Some(actor.id);
        entry.detail = Some(format!("token_id={token}"));
        let revoked = self
            .users
            .revoke_token(token, RevokeReason::LoggedOut, now, &entry)
            .await?;
        let closed = self.close_sessions_opened_with(token).await?;
        tracing::info!(user_id = %actor.id, token_id = %token, sessions_closed = closed, "logged out");
        Ok(revoked)
    }

    /// Changes `actor`'s own password after checking the current one; every other token of
    /// theirs is revoked (the one presented stays).
    ///
    /// # Errors
    /// See [`UserAdminError`].
    pub async fn change_own_password(
        &self,
        actor: Actor,
        token: TokenId,
        current: &str,
        new: &str,
    ) -> Result<(), UserAdminError> {
        let user = self
            .users
            .find_user_by_id(actor.id)
            .await
            .map_err(UserAdminError::Store)?
            .ok_or(UserAdminError::NotFound(actor.id))?;
        let matches = self
            .credentials
            .verify_password(current, &user.password_hash)
            .await
            .map_err(|HashingBusy| UserAdminError::Busy)?;
        if !matches {
            tracing::warn!(user_id = %actor.id, "password change refused: wrong current password");
            return Err(UserAdminError::WrongPassword);
        }
        let change = UserChange {
            password_hash: Some(self.hash_new_password(new).await?),
            ..UserChange::default()
        };
        let mut entry = AuditEvent::new(self.clock.now(), AuditAction::PasswordChanged);
        entry.user = Some(actor.id);
        let revoke = Some((RevokeReason::PasswordChanged, Some(token)));
        self.apply_change(actor.id, &change, revoke, &entry).await?;
        tracing::info!(user_id = %actor.id, "password changed; the user's other tokens are revoked");
        Ok(())
    }

    /// Every user (not deleted), for an admin or the console (`by` = `None`).
    ///
    /// # Errors
    /// [`UserAdminError::Forbidden`] for a non-admin, or a store failure.
    pub async fn list_users(&self, by: Option<Actor>) -> Result<Vec<UserRecord>, UserAdminError> {
        require_admin(by)?;
        self.users.list_users().await.map_err(UserAdminError::Store)
    }

    /// A user (not deleted) by id, for an admin or the console.
    ///
    /// # Errors
    /// [`UserAdminError::Forbidden`], [`UserAdminError::NotFound`], or a store failure.
    pub async fn get_user(
        &self,
        by: Option<Actor>,
        id: UserId,
    ) -> Result<UserRecord, UserAdminError> {
        require_admin(by)?;
        self.users
            .find_user_by_id(id)
            .await
            .map_err(UserAdminError::Store)?
            .ok_or(UserAdminError::NotFound(id))
    }

    /// Changes a user's role, state or password, by an admin or the console. Disabling them
    /// or setting their password revokes every token of theirs.
    ///
    /// # Errors
    /// See [`UserAdminError`]; [`UserAdminError::LastAdmin`] when it would leave no enabled
    /// admin.
    pub async fn update_user(
        &self,
        by: Option<Actor>,
        id: UserId,
        update: UserUpdate,
    ) -> Result<UserRecord, UserAdminError> {
        require_admin(by)?;
        if let Some(groups) = &update.groups
            && let Some(unknown) = self
                .unknown_group(groups)
                .await
                .map_err(UserAdminError::Store)?
        {
            return Err(UserAdminError::UnknownGroup(unknown.to_string()));
        }
        let password_hash = match &update.password {
            Some(password) => Some(self.hash_new_password(password).await?),
            None => None,
        };
        let revoke = if update.disabled == Some(true) {
            Some((RevokeReason::UserDisabled, None))
        } else if password_hash.is_some() {
            Some((RevokeReason::PasswordChanged, None))
        } else {
            None
        };
        let change = UserChange {
            role: update.role,
            disabled: update.disabled,
            password_hash,
            groups: update.groups.clone(),
        };
        let mut entry = AuditEvent::new(self.clock.now(), AuditAction::UserUpdated);
        entry.user = by.map(|a| a.id);
        entry.detail = Some(describe_update(id, &update));
        self.apply_change(id, &change, revoke, &entry).await?;
        tracing::info!(user_id = %id, by = ?by.map(|a| a.id), change = %describe_update(id, &update), "user changed");
        self.get_user(by, id).await
    }

    /// Deletes a user, by an admin or the console: they can no longer log in, every token of
    /// theirs is revoked, and what they did stays in the audit log.
    ///
    /// # Errors
    /// See [`UserAdminError`].
    pub async fn delete_user(&self, by: Option<Actor>, id: UserId) -> Result<(), UserAdminError> {
        require_admin(by)?;
        let now = self.clock.now();
        let mut entry = AuditEvent::new(now, AuditAction::UserDeleted);
        entry.user = by.map(|a| a.id);
        entry.detail = Some(format!("user_id={id}"));
        let outcome = self
            .users
            .delete_user(id, now, &entry)
            .await
            .map_err(UserAdminError::Store)?;
        outcome_result(id, outcome)?;
        tracing::info!(user_id = %id, by = ?by.map(|a| a.id), "user deleted");
        Ok(())
    }

    /// Forgets tokens that expired over a day ago (maintenance).
    pub async fn prune_tokens(&self) {
        let day_ago = self.clock.now().minus(Duration::from_secs(24 * 3600));
        if let Err(e) = self.users.prune_tokens(day_ago).await {
            tracing::warn!(error = %e, "pruning expired tokens failed; retried next time");
        }
    }

    async fn hash_new_password(&self, password: &str) -> Result<String, UserAdminError> {
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(UserAdminError::WeakPassword);
        }
        self.credentials
            .hash_password(password)
            .await
            .map_err(UserAdminError::Hashing)
    }

    async fn apply_change(
        &self,
        id: UserId,
        change: &UserChange,
        revoke: Option<(RevokeReason, Option<TokenId>)>,
        entry: &AuditEvent,
    ) -> Result<(), UserAdminError> {
        let outcome = self
            .users
            .update_user(id, change, revoke, entry)
            .await
            .map_err(UserAdminError::Store)?;
        outcome_result(id, outcome)
    }
}

fn require_admin(by: Option<Actor>) -> Result<(), UserAdminError> {
    match by {
        Some(actor) if actor.role != Role::Admin => Err(UserAdminError::Forbidden),
        Some(_) | None => Ok(()),
    }
}

fn outcome_result(id: UserId, outcome: UserChangeOutcome) -> Result<(), UserAdminError> {
    match outcome {
        UserChangeOutcome::Changed => Ok(()),
        UserChangeOutcome::NotFound => Err(UserAdminError::NotFound(id)),
        UserChangeOutcome::LastAdmin => Err(UserAdminError::LastAdmin),
        UserChangeOutcome::UnknownGroup(name) => {
            Err(UserAdminError::UnknownGroup(name.to_string()))
        }
    }
}

/// What an update changes, for the log and the audit entry (never the password itself).
fn describe_update(id: UserId, update: &UserUpdate) -> String {
    let mut parts = vec![format!("user_id={id}")];
    if let Some(role) = update.role {
        parts.push(format!("role={}", role.as_str()));
    }
    if let Some(disabled) = update.disabled {
        parts.push(format!("disabled={disabled}"));
    }
    if update.password.is_some() {
        parts.push("password=changed".to_owned());
    }
    if let Some(groups) = &update.groups {
        parts.push(format!("groups={}", crate::groups::joined(groups)));
    }
    parts.join(" ")
}
