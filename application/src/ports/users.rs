//! Users of the server.

use std::fmt;
use std::future::Future;

use rmm_domain::{Role, Timestamp, UserId, Username};

use super::StoreError;

/// A user of the server, with the hash of their password.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: UserId,
    pub username: Username,
    pub password_hash: String,
    pub role: Role,
    pub created_at: Timestamp,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait UserRepository: Send + Sync + 'static {
    /// # Errors
    /// [`StoreError::Conflict`] when the username is taken.
    fn insert_user(&self, user: &UserRecord)
    -> impl Future<Output = Result<(), StoreError>> + Send;

    /// # Errors
    /// [`StoreError::Backend`].
    fn find_user(
        &self,
        username: &Username,
    ) -> impl Future<Output = Result<Option<UserRecord>, StoreError>> + Send;

    /// # Errors
    /// [`StoreError::Backend`].
    fn count_users(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
