//! The ports: what the use cases need from the outside world, and nothing about how.

use std::fmt;
use std::future::Future;

use rmm_domain::{
    AgentId, AgentMode, AgentName, CloseReason, Role, Session, SessionId, Timestamp, UserId,
    Username,
};

/// A storage failure, as the use cases see it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was hit (an active session for the agent, a taken name).
    #[error("conflict with existing data")]
    Conflict,
    /// The backend failed (connection lost, disk full, corrupt row). The cause is kept for
    /// logs and never shown to clients.
    #[error("storage backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(e))
    }
}

/// Tunnel sessions. Every method is one atomic operation; transactions stay in the adapter.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait SessionRepository: Send + Sync + 'static {
    /// Records a new pending session.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the agent already has a pending or active session.
    fn insert_pending(
        &self,
        session: &Session,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// # Errors
    /// [`StoreError::Backend`].
    fn get(
        &self,
        id: SessionId,
    ) -> impl Future<Output = Result<Option<Session>, StoreError>> + Send;

    /// Pending → active. Returns false when the session is no longer pending (closed in the
    /// meantime, e.g. by the agent's disconnect).
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn activate(
        &self,
        id: SessionId,
        now: Timestamp,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Closes the session if it is pending or active, returning it as closed; `None` when it
    /// does not exist or was closed already.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn close(
        &self,
        id: SessionId,
        reason: CloseReason,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<Session>, StoreError>> + Send;

    /// Closes every pending or active session of one agent.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn close_for_agent(
        &self,
        agent: AgentId,
        reason: CloseReason,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Session>, StoreError>> + Send;

    /// Closes every pending or active session (restart reconciliation, shutdown).
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn close_all_open(
        &self,
        reason: CloseReason,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Session>, StoreError>> + Send;

    /// Closes active sessions whose last activity is before `cutoff`.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn close_idle(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Session>, StoreError>> + Send;

    /// Moves `last_activity` of these active sessions forward to `at` (never backwards).
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn touch(
        &self,
        ids: &[SessionId],
        at: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// SHA-256 of an agent key. Only this is stored; the key itself is shown once.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    /// Compares without an early exit, so the time taken does not say how many leading bytes
    /// matched.
    #[must_use]
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyDigest(..)")
    }
}

/// A freshly generated agent key: the secret text (shown once) and its digest (stored).
#[derive(Clone)]
pub struct AgentKey {
    pub secret: String,
    pub digest: KeyDigest,
}

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentKey([redacted])")
    }
}

/// What an agent reports about its host in heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostFacts {
    pub version: Option<String>,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub uptime_secs: Option<u64>,
}

/// One agent's presence to record: who, when last seen, and the facts of its last heartbeat.
pub type Seen = (AgentId, Timestamp, Option<HostFacts>);

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub id: AgentId,
    pub name: AgentName,
    pub key_digest: KeyDigest,
    pub created_at: Timestamp,
    pub last_seen: Option<Timestamp>,
    pub facts: HostFacts,
}

#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait AgentRepository: Send + Sync + 'static {
    /// # Errors
    /// [`StoreError::Conflict`] when the name is taken.
    fn insert_agent(
        &self,
        agent: &AgentRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// # Errors
    /// [`StoreError::Backend`].
    fn find_agent_by_key(
        &self,
        digest: KeyDigest,
    ) -> impl Future<Output = Result<Option<AgentRecord>, StoreError>> + Send;

    /// All agents, by name.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn list_agents(&self) -> impl Future<Output = Result<Vec<AgentRecord>, StoreError>> + Send;

    /// Records when agents were last seen (and what they said about their host), in one
    /// batch: heartbeats are coalesced, never one write each.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn record_seen(&self, seen: &[Seen]) -> impl Future<Output = Result<(), StoreError>> + Send;
}

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

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    /// The agent confirmed a tunnel.
    TunnelOpen,
    /// A tunnel ended (the reason is in the detail).
    TunnelClose,
    /// The agent refused a tunnel.
    TunnelRefused,
    /// The agent did not answer a tunnel open in time.
    TunnelTimeout,
}

impl AuditAction {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TunnelOpen => "tunnel_open",
            Self::TunnelClose => "tunnel_close",
            Self::TunnelRefused => "tunnel_refused",
            Self::TunnelTimeout => "tunnel_timeout",
        }
    }
}

/// One append-only audit entry. Ids are kept by value: entries outlive what they name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: Timestamp,
    pub action: AuditAction,
    /// Who acted, or whose session it was.
    pub user: Option<UserId>,
    pub agent: Option<AgentId>,
    pub session: Option<SessionId>,
    pub detail: Option<String>,
}

#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait AuditLog: Send + Sync + 'static {
    /// # Errors
    /// [`StoreError::Backend`].
    fn append(&self, event: &AuditEvent) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// How an agent answered a `tunnel_open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenReply {
    Ready,
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("agent is not connected")]
    NotConnected,
    #[error("agent already has a tunnel or a tunnel open in flight")]
    Busy,
    #[error("agent disconnected before answering")]
    Disconnected,
    #[error("agent's outbound queue is full")]
    Overloaded,
}

/// The live connections to agents.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait AgentGateway: Send + Sync + 'static {
    /// The mode of a connected agent; `None` when it is not connected.
    fn mode(&self, agent: AgentId) -> Option<AgentMode>;

    /// Sends `tunnel_open` to the agent's current connection and resolves with its answer.
    ///
    /// # Errors
    /// [`GatewayError::NotConnected`], [`GatewayError::Busy`], [`GatewayError::Overloaded`] at
    /// once; [`GatewayError::Disconnected`] when the connection ends before the answer.
    fn open_tunnel(
        &self,
        agent: AgentId,
        session: SessionId,
        tech: UserId,
    ) -> impl Future<Output = Result<OpenReply, GatewayError>> + Send;

    /// Forgets an open that will not be waited for any more and tells the agent to close it,
    /// so a late `tunnel_ready` leaves nothing open.
    fn abandon_open(&self, agent: AgentId, session: SessionId);

    /// Tells the agent to close the tunnel (best effort: a gone agent has nothing to close).
    fn close_tunnel(&self, agent: AgentId, session: SessionId);
}

#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait IdGenerator: Send + Sync + 'static {
    fn session_id(&self) -> SessionId;
    fn agent_id(&self) -> AgentId;
    fn user_id(&self) -> UserId;
}

/// Secrets: password hashing and agent keys.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait Credentials: Send + Sync + 'static {
    /// # Errors
    /// A message when hashing failed (it does not for valid input).
    fn hash_password(&self, password: &str) -> impl Future<Output = Result<String, String>> + Send;

    /// Whether `password` matches `hash`. False for a malformed hash.
    fn verify_password(&self, password: &str, hash: &str) -> impl Future<Output = bool> + Send;

    /// A new random agent key.
    fn new_agent_key(&self) -> AgentKey;

    /// The digest of a presented agent key.
    fn digest_agent_key(&self, key: &str) -> KeyDigest;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_compare_equal_only_when_every_byte_matches() {
        let a = KeyDigest([7; 32]);
        let mut b = [7; 32];
        assert!(a.ct_eq(&KeyDigest(b)));
        b[31] = 8;
        assert!(!a.ct_eq(&KeyDigest(b)));
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let key = AgentKey {
            secret: "s3cret".into(),
            digest: KeyDigest([1; 32]),
        };
        assert!(!format!("{key:?}").contains("s3cret"));
    }
}
