//! Commands and their stored output.

use std::future::Future;

use rmm_domain::{
    AgentId, ChannelId, CommandEndReason, CommandId, CommandStatus, SessionId, Timestamp, UserId,
};

use super::{AuditEvent, AuditNote, StoreError};

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
    /// Why it ended, for every end but a completion; `None` while running.
    pub end_reason: Option<CommandEndReason>,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// Bytes the process wrote (all of them, stored or not).
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Whether stored output stops short of what was written (the per-command cap).
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// The retention sweep removed its stored output (the command itself stays).
    pub output_pruned: bool,
}

/// An ended command's stored output, as the retention sweep sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredOutput {
    pub id: CommandId,
    pub finished_at: Timestamp,
    /// Bytes of output stored for it, both streams.
    pub bytes: u64,
}

/// What one prune removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    /// Commands (or recordings) whose content went.
    pub items: u64,
    /// Bytes of content deleted.
    pub bytes: u64,
}

/// How a command ended, to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    pub status: CommandStatus,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    /// Why it ended; `None` for a completion.
    pub end_reason: Option<CommandEndReason>,
    pub finished_at: Timestamp,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// Commands and their output. A command's start and each end commit in one transaction with
/// their audit entry: when it fails, nothing changed and nothing was written.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait CommandRepository: Send + Sync + 'static {
    /// Stores a new command with `entry` (its `command` audit entry).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the id exists; [`StoreError::Backend`]. Either way no
    /// command is stored.
    fn insert_command(
        &self,
        command: &CommandRecord,
        entry: &AuditEvent,
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

    /// Records the end of a running command with `entry` (its `command_end` audit entry);
    /// false (and nothing written) when it had ended already.
    ///
    /// # Errors
    /// [`StoreError::Backend`]: then the command is still running.
    fn finish_command(
        &self,
        id: CommandId,
        outcome: &CommandOutcome,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Ends every running command for `reason` (start-up: a previous process cannot report
    /// them any more) with the status it makes, with `note`'s entry about each as ended
    /// ([`AuditNote::for_ended_command`]), returning them as ended.
    ///
    /// # Errors
    /// [`StoreError::Backend`]: then no command is changed.
    fn fail_running_commands(
        &self,
        reason: CommandEndReason,
        at: Timestamp,
        note: &AuditNote,
    ) -> impl Future<Output = Result<Vec<CommandRecord>, StoreError>> + Send;

    /// Bytes of command output stored, all commands (running ones too).
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn stored_output_bytes(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Up to `limit` ended commands whose output is not pruned, ended before `ended_before`
    /// when given, oldest end first.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn ended_output(
        &self,
        ended_before: Option<Timestamp>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<StoredOutput>, StoreError>> + Send;

    /// Deletes the stored output of those of `ids` that have ended and are not pruned yet,
    /// marking them pruned at `at`, in one transaction. A running command is never touched.
    ///
    /// # Errors
    /// [`StoreError::Backend`]: then nothing is pruned.
    fn prune_output(
        &self,
        ids: &[CommandId],
        at: Timestamp,
    ) -> impl Future<Output = Result<Pruned, StoreError>> + Send;
}
