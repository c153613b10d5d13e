//! The append-only audit log.

use std::future::Future;

use rmm_domain::{AgentId, CloseReason, CommandId, Session, SessionId, Timestamp, UserId};

use super::{CommandRecord, StoreError};

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
    /// A user was created (the detail names them and their role).
    UserCreated,
    /// A user's role, state or password was changed (the detail says what, never the
    /// password).
    UserUpdated,
    /// A user was deleted.
    UserDeleted,
    /// A user changed their own password.
    PasswordChanged,
    /// A user logged out (their token was revoked).
    Logout,
    /// A group was created.
    GroupCreated,
    /// A group (empty) was deleted.
    GroupDeleted,
    /// An admin created an enrollment token (the detail names it, its group and uses).
    EnrollmentCreated,
    /// An admin revoked an enrollment token.
    EnrollmentRevoked,
    /// A machine enrolled itself as an agent with an enrollment token (the detail names it).
    AgentEnrolled,
    /// An admin revoked an agent: its key is refused from then on.
    AgentRevoked,
    /// An admin gave an agent a new key: the old one is refused from then on.
    AgentKeyRotated,
    /// An admin renamed an agent or moved it to another group (the detail says what).
    AgentUpdated,
    /// An agent connected while a connection with its key was live: the new one replaced
    /// the old (the detail names both client addresses).
    AgentReplaced,
    /// An interactive terminal was started (the detail: its id, size, `TERM`, command).
    TerminalOpen,
    /// An interactive terminal ended (the detail: why, exit code or signal, output bytes).
    TerminalClose,
    /// An admin attached read-only to another user's live terminal.
    TerminalWatch,
    /// Bytes were fed to a command's stdin (the detail: how many, and whether the client's
    /// upload broke off).
    CommandStdin,
    /// The retention sweep pruned command output or recordings (the detail: how many, and
    /// bytes).
    RetentionSweep,
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
            Self::UserCreated => "user_created",
            Self::UserUpdated => "user_updated",
            Self::UserDeleted => "user_deleted",
            Self::PasswordChanged => "password_changed",
            Self::Logout => "logout",
            Self::GroupCreated => "group_created",
            Self::GroupDeleted => "group_deleted",
            Self::EnrollmentCreated => "enrollment_created",
            Self::EnrollmentRevoked => "enrollment_revoked",
            Self::AgentEnrolled => "agent_enrolled",
            Self::AgentRevoked => "agent_revoked",
            Self::AgentKeyRotated => "agent_key_rotated",
            Self::AgentUpdated => "agent_updated",
            Self::AgentReplaced => "agent_replaced",
            Self::TerminalOpen => "terminal_open",
            Self::TerminalClose => "terminal_close",
            Self::TerminalWatch => "terminal_watch",
            Self::CommandStdin => "command_stdin",
            Self::RetentionSweep => "retention_sweep",
        }
    }

    pub const ALL: [Self; 27] = [
        Self::TunnelOpen,
        Self::TunnelClose,
        Self::TunnelRefused,
        Self::TunnelTimeout,
        Self::Command,
        Self::CommandEnd,
        Self::FileUpload,
        Self::FileDownload,
        Self::UserCreated,
        Self::UserUpdated,
        Self::UserDeleted,
        Self::PasswordChanged,
        Self::Logout,
        Self::GroupCreated,
        Self::GroupDeleted,
        Self::EnrollmentCreated,
        Self::EnrollmentRevoked,
        Self::AgentEnrolled,
        Self::AgentRevoked,
        Self::AgentKeyRotated,
        Self::AgentUpdated,
        Self::AgentReplaced,
        Self::TerminalOpen,
        Self::TerminalClose,
        Self::TerminalWatch,
        Self::CommandStdin,
        Self::RetentionSweep,
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

/// The audit entry of a state change, handed to the store method that makes the change: the
/// store writes it in the same transaction, filling in whose session or command it was from
/// the row it changed, so a change is never visible without its entry and an entry never
/// names a change that did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditNote {
    pub action: AuditAction,
    pub detail: Option<String>,
}

impl AuditNote {
    #[must_use]
    pub fn new(action: AuditAction, detail: Option<String>) -> Self {
        Self { action, detail }
    }

    /// `tunnel_close` with the reason as its detail.
    #[must_use]
    pub fn close(reason: CloseReason) -> Self {
        Self::new(AuditAction::TunnelClose, Some(reason.as_str().to_owned()))
    }

    /// The entry about `session`, changed at `at`, in its owner's name.
    #[must_use]
    pub fn for_session(&self, session: &Session, at: Timestamp) -> AuditEvent {
        let mut event = AuditEvent::new(at, self.action);
        event.user = Some(session.owner());
        event.agent = Some(session.agent());
        event.session = Some(session.id());
        event.detail.clone_from(&self.detail);
        event
    }

    /// The entry about `command` as stored after its end (its end time, status and counts),
    /// in its owner's name.
    #[must_use]
    pub fn for_ended_command(&self, command: &CommandRecord) -> AuditEvent {
        let at = command.finished_at.unwrap_or(command.started_at);
        let duration_ms =
            u64::try_from(at.since(command.started_at).as_millis()).unwrap_or(u64::MAX);
        let mut event = AuditEvent::new(at, self.action);
        event.user = Some(command.owner);
        event.agent = Some(command.agent);
        event.session = Some(command.session);
        event.detail.clone_from(&self.detail);
        event.command = Some(CommandAudit {
            command_id: Some(command.id),
            text: Some(command.text.clone()),
            status: Some(command.status.as_str().to_owned()),
            exit_code: command.exit_code,
            stdout_bytes: Some(command.stdout_bytes),
            stderr_bytes: Some(command.stderr_bytes),
            duration_ms: Some(duration_ms),
        });
        event
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
    /// Appends an entry that goes with no stored state (a file transfer). Entries of state
    /// changes are written by the change itself (see [`AuditNote`]).
    ///
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
