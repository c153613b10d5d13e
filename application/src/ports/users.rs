//! Users of the server and the access tokens issued to them.

use std::fmt;
use std::future::Future;

use rmm_domain::{GroupName, Role, Timestamp, TokenId, UserId, Username};

use super::{AuditEvent, StoreError};

/// A user of the server, with the hash of their password. Deleted users are kept in the
/// database (what they did names them) but no repository method returns them.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: UserId,
    pub username: Username,
    pub password_hash: String,
    pub role: Role,
    pub created_at: Timestamp,
    /// A disabled user cannot log in and every token of theirs is refused.
    pub disabled: bool,
    pub last_login_at: Option<Timestamp>,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// What to change of a user; `None` leaves a field as it is.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct UserChange {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
    pub password_hash: Option<String>,
    /// The groups to grant instead of the current ones.
    pub groups: Option<Vec<GroupName>>,
}

impl fmt::Debug for UserChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserChange")
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .field("password", &self.password_hash.as_ref().map(|_| "[new]"))
            .field("groups", &self.groups)
            .finish()
    }
}

/// What became of a change to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChangeOutcome {
    Changed,
    /// No such user (or deleted).
    NotFound,
    /// Refused: it would leave no enabled admin.
    LastAdmin,
    /// Refused: no group has this name (nothing changed).
    UnknownGroup(GroupName),
}

/// Why the tokens of a user are revoked, as stored and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    LoggedOut,
    PasswordChanged,
    UserDisabled,
    UserDeleted,
}

impl RevokeReason {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::LoggedOut => "logged_out",
            Self::PasswordChanged => "password_changed",
            Self::UserDisabled => "user_disabled",
            Self::UserDeleted => "user_deleted",
        }
    }
}

/// One issued access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: TokenId,
    pub user: UserId,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

/// What a token is worth now: refused unless `live`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenState {
    pub user: UserId,
    /// The user's role now (it may have changed since the token was issued).
    pub role: Role,
    pub expires_at: Timestamp,
    /// Unrevoked, its user enabled and not deleted.
    pub live: bool,
}

#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait UserRepository: Send + Sync + 'static {
    /// Stores a new user granted `groups`, with `entry` (its `user_created` audit entry), in
    /// one transaction: [`UserChangeOutcome::Changed`], or `UnknownGroup` (nothing stored).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the username is taken by a user who is not deleted.
    fn insert_user(
        &self,
        user: &UserRecord,
        groups: &[GroupName],
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<UserChangeOutcome, StoreError>> + Send;

    /// A user who is not deleted, by name.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn find_user(
        &self,
        username: &Username,
    ) -> impl Future<Output = Result<Option<UserRecord>, StoreError>> + Send;

    /// A user who is not deleted, by id.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn find_user_by_id(
        &self,
        id: UserId,
    ) -> impl Future<Output = Result<Option<UserRecord>, StoreError>> + Send;

    /// Every user who is not deleted, by username.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn list_users(&self) -> impl Future<Output = Result<Vec<UserRecord>, StoreError>> + Send;

    /// Users who are not deleted (zero on a first run).
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn count_users(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Changes a user (their grants too) with `entry`, in one transaction; a change that
    /// disables or deletes them, or changes their password, also revokes their tokens
    /// (`revoke`, keeping `keep`'s). Refused when it would leave no enabled admin, or names a
    /// group that does not exist.
    ///
    /// # Errors
    /// [`StoreError::Backend`]: then nothing changed.
    fn update_user(
        &self,
        id: UserId,
        change: &UserChange,
        revoke: Option<(RevokeReason, Option<TokenId>)>,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<UserChangeOutcome, StoreError>> + Send;

    /// Deletes a user at `at` (kept, no longer listed, cannot log in) and revokes every
    /// token of theirs, with `entry`, in one transaction. Refused for the last enabled admin.
    ///
    /// # Errors
    /// [`StoreError::Backend`]: then nothing changed.
    fn delete_user(
        &self,
        id: UserId,
        at: Timestamp,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<UserChangeOutcome, StoreError>> + Send;

    /// Stores a token issued at a login, and the login's time on its user.
    ///
    /// # Errors
    /// [`StoreError::Backend`]: then the token must not be handed out.
    fn insert_token(
        &self,
        token: &TokenRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A token's state now; `None` for a token never issued (or one of a deleted user).
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn token_state(
        &self,
        id: TokenId,
    ) -> impl Future<Output = Result<Option<TokenState>, StoreError>> + Send;

    /// Revokes one token at `at` with `entry` (`logout`); false when it was revoked already.
    ///
    /// # Errors
    /// [`StoreError::Backend`]: then nothing changed.
    fn revoke_token(
        &self,
        id: TokenId,
        reason: RevokeReason,
        at: Timestamp,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Forgets tokens that expired before `before` (revoked or not: they are refused by
    /// their signature anyway). Returns how many.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn prune_tokens(
        &self,
        before: Timestamp,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
