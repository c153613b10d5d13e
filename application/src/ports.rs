//! The ports: what the use cases need from the outside world, and nothing about how.

use std::fmt;
use std::future::Future;

use rmm_domain::{
    AgentId, AgentMode, AgentName, ChannelId, CloseReason, CommandId, CommandStatus, Role, Session,
    SessionId, Timestamp, UserId, Username,
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
    /// A command was sent to an agent (written before it is sent).
    Command,
    /// A command ended (status, exit code, byte counts, duration).
    CommandEnd,
    /// A file was uploaded to an agent.
    FileUpload,
    /// A file was downloaded from an agent.
    FileDownload,
}

impl AuditAction {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TunnelOpen => "tunnel_open",
            Self::TunnelClose => "tunnel_close",
            Self::TunnelRefused => "tunnel_refused",
            Self::TunnelTimeout => "tunnel_timeout",
            Self::Command => "command",
            Self::CommandEnd => "command_end",
            Self::FileUpload => "file_upload",
            Self::FileDownload => "file_download",
        }
    }

    pub const ALL: [Self; 8] = [
        Self::TunnelOpen,
        Self::TunnelClose,
        Self::TunnelRefused,
        Self::TunnelTimeout,
        Self::Command,
        Self::CommandEnd,
        Self::FileUpload,
        Self::FileDownload,
    ];

    /// The inverse of [`Self::as_str`].
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == value)
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
    /// Commands and file transfers: what they were and how they ended.
    pub command: Option<CommandAudit>,
    pub file: Option<FileAudit>,
}

impl AuditEvent {
    /// An event with only the common fields set.
    #[must_use]
    pub fn new(at: Timestamp, action: AuditAction) -> Self {
        Self {
            at,
            action,
            user: None,
            agent: None,
            session: None,
            detail: None,
            command: None,
            file: None,
        }
    }
}

/// The command part of an audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandAudit {
    pub command_id: Option<CommandId>,
    pub text: Option<String>,
    /// `running` when written before the command is sent; its end afterwards.
    pub status: Option<String>,
    pub exit_code: Option<i32>,
    pub stdout_bytes: Option<u64>,
    pub stderr_bytes: Option<u64>,
    pub duration_ms: Option<u64>,
}

/// The file-transfer part of an audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileAudit {
    pub path: String,
    /// `upload` or `download`.
    pub direction: String,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    /// `ok`, or why it failed.
    pub result: String,
}

/// One stored audit entry with its position in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Increasing with every append; the pagination cursor.
    pub id: i64,
    pub event: AuditEvent,
}

/// Which audit entries to read: newest first, entries with `id < before` when given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditQuery {
    pub user: Option<UserId>,
    pub agent: Option<AgentId>,
    pub session: Option<SessionId>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub before: Option<i64>,
    pub limit: u32,
}

#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait AuditLog: Send + Sync + 'static {
    /// # Errors
    /// [`StoreError::Backend`].
    fn append(&self, event: &AuditEvent) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Entries matching `query`, newest first, at most `query.limit`.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn list_audit(
        &self,
        query: &AuditQuery,
    ) -> impl Future<Output = Result<Vec<AuditEntry>, StoreError>> + Send;
}

/// Which output stream of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// A command as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    pub id: CommandId,
    pub session: SessionId,
    pub agent: AgentId,
    pub owner: UserId,
    pub channel: ChannelId,
    pub text: String,
    pub timeout_secs: u64,
    pub status: CommandStatus,
    pub exit_code: Option<i32>,
    /// The signal that killed the process, e.g. `SIGKILL`.
    pub signal: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// Bytes the process wrote (all of them, stored or not).
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Whether stored output stops short of what was written (the per-command cap).
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// How a command ended, to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    pub status: CommandStatus,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub finished_at: Timestamp,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// Commands and their output.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait CommandRepository: Send + Sync + 'static {
    /// # Errors
    /// [`StoreError::Conflict`] when the id exists.
    fn insert_command(
        &self,
        command: &CommandRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// # Errors
    /// [`StoreError::Backend`].
    fn get_command(
        &self,
        id: CommandId,
    ) -> impl Future<Output = Result<Option<CommandRecord>, StoreError>> + Send;

    /// Appends one chunk of output. Chunks of a stream are numbered by `seq` from 0.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn append_output(
        &self,
        id: CommandId,
        stream: OutputStream,
        seq: u64,
        data: &[u8],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Up to `limit` chunks of one stream with `seq >= from`, in order.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn read_output(
        &self,
        id: CommandId,
        stream: OutputStream,
        from: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(u64, Vec<u8>)>, StoreError>> + Send;

    /// Records the end of a running command; false when it had ended already.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn finish_command(
        &self,
        id: CommandId,
        outcome: &CommandOutcome,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Ends every running command (start-up: a previous process cannot report them any more),
    /// returning them as ended.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn fail_running_commands(
        &self,
        status: CommandStatus,
        at: Timestamp,
    ) -> impl Future<Output = Result<Vec<CommandRecord>, StoreError>> + Send;
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
    #[error("agent does not support this operation")]
    Unsupported,
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

    /// Opens `channel` in the agent's tunnel `session` and sends it the command (the
    /// reference `terminal` frame; `timeout_secs` only to agents that enforce it).
    ///
    /// # Errors
    /// [`GatewayError::NotConnected`]; [`GatewayError::Busy`] when the agent's tunnel is not
    /// `session` or the channel is taken or over the limit; [`GatewayError::Overloaded`].
    fn send_command(
        &self,
        agent: AgentId,
        session: SessionId,
        channel: &ChannelId,
        command: &str,
        timeout_secs: u64,
    ) -> Result<(), GatewayError>;

    /// Asks the agent to kill the command on `channel`. False when the agent cannot be asked
    /// (not connected, or it does not speak the cancel extension).
    fn cancel_command(&self, agent: AgentId, channel: &ChannelId) -> bool;

    /// Forgets a command channel the server ended on its own (the agent's later frames on
    /// it are then ignored).
    fn release_channel(&self, agent: AgentId, channel: &ChannelId);
}

/// One chunk of command output (or its end), as bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutputChunk {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Set on the last chunk only.
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    /// `timed_out` or `cancelled` when the agent killed the command.
    pub end_reason: Option<String>,
}

/// What technicians watching a session see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    Output {
        channel: ChannelId,
        chunk: OutputChunk,
    },
    Error {
        channel: ChannelId,
        error: String,
    },
}

/// Live fan-out of a session's frames to its watchers. Never blocks: a watcher that falls
/// behind is dropped, it never slows the agent or other watchers.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait SessionStreams: Send + Sync + 'static {
    fn publish(&self, session: SessionId, event: &StreamEvent);

    /// The session ended: watchers are told and disconnected, buffers freed.
    fn end_session(&self, session: SessionId);
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
    fn command_id(&self) -> CommandId;
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
