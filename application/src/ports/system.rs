//! Time, fresh ids and secrets: what the use cases must not make up themselves.

use std::future::Future;

use rmm_domain::{
    AgentId, CommandId, EnrollmentId, SessionId, TerminalId, Timestamp, TokenId, UserId,
};

use super::{AgentKey, KeyDigest};

#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait IdGenerator: Send + Sync + 'static {
    fn session_id(&self) -> SessionId;
    fn agent_id(&self) -> AgentId;
    fn user_id(&self) -> UserId;
    fn command_id(&self) -> CommandId;
    fn token_id(&self) -> TokenId;
    fn enrollment_id(&self) -> EnrollmentId;
    fn terminal_id(&self) -> TerminalId;
}

/// Every password-hashing slot is busy and the queue in front of them is full, or no slot
/// came free in time: nothing was hashed. Retry later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("password hashing is at capacity; try again shortly")]
pub struct HashingBusy;

/// Secrets: password hashing and agent keys. Hashing is bounded (memory and CPU): beyond its
/// capacity it answers [`HashingBusy`] rather than queueing without end.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait Credentials: Send + Sync + 'static {
    /// # Errors
    /// A message when hashing failed (it does not for valid input) or is at capacity.
    fn hash_password(&self, password: &str) -> impl Future<Output = Result<String, String>> + Send;

    /// Whether `password` matches `hash`. False for a malformed hash.
    ///
    /// # Errors
    /// [`HashingBusy`] when it could not be checked now.
    fn verify_password(
        &self,
        password: &str,
        hash: &str,
    ) -> impl Future<Output = Result<bool, HashingBusy>> + Send;

    /// A new random agent key.
    fn new_agent_key(&self) -> AgentKey;

    /// The digest of a presented agent key.
    fn digest_agent_key(&self, key: &str) -> KeyDigest;
}
