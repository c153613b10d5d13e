//! A command run in a tunnel: its text (validated), and its lifecycle from running to one of
//! the ends a technician needs to tell apart, with the reason for any end other than its
//! process exiting on its own.

use std::fmt;

use crate::session::CloseReason;

/// The text of a command, as typed by a technician.
#[derive(Clone, PartialEq, Eq)]
pub struct CommandText(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandTextError {
    #[error("command is empty")]
    Empty,
    #[error("command is longer than {max} characters", max = CommandText::MAX_LEN)]
    TooLong,
    #[error("command contains a NUL byte")]
    Nul,
}

impl CommandText {
    /// The longest command, in characters (a JSON Schema `maxLength` counts characters, so
    /// the API's spec can state the rule exactly).
    pub const MAX_LEN: usize = 64 * 1024;

    /// # Errors
    /// [`CommandTextError`] for an empty (or blank) command, one over 65,536 characters, or
    /// one with NUL (a shell cannot receive it).
    pub fn parse(value: &str) -> Result<Self, CommandTextError> {
        if value.trim().is_empty() {
            Err(CommandTextError::Empty)
        } else if value.chars().count() > Self::MAX_LEN {
            Err(CommandTextError::TooLong)
        } else if value.contains('\0') {
            Err(CommandTextError::Nul)
        } else {
            Ok(Self(value.to_owned()))
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CommandText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandText({:?})", self.0)
    }
}

/// Where a command is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandStatus {
    Running,
    /// The process exited (any exit code, a signal included) on its own.
    Completed,
    /// Killed because it ran past its timeout.
    TimedOut,
    /// Killed on request, or because its tunnel closed.
    Cancelled,
    /// It could not run to its end: the agent went away, reported an error, or never got it.
    Failed,
}

impl CommandStatus {
    pub const ALL: [Self; 5] = [
        Self::Running,
        Self::Completed,
        Self::TimedOut,
        Self::Cancelled,
        Self::Failed,
    ];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Moves a running command to its end.
    ///
    /// # Errors
    /// [`CommandStatusError`] when the command has ended already or `end` is not an end.
    pub fn finish(self, end: Self) -> Result<Self, CommandStatusError> {
        match (self, end) {
            (Self::Running, Self::Running) => Err(CommandStatusError::NotAnEnd),
            (Self::Running, end) => Ok(end),
            (Self::Completed | Self::TimedOut | Self::Cancelled | Self::Failed, _) => {
                Err(CommandStatusError::Ended(self))
            }
        }
    }

    #[must_use]
    pub const fn is_running(self) -> bool {
        matches!(self, Self::Running)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandStatusError {
    #[error("command has ended already ({})", .0.as_str())]
    Ended(CommandStatus),
    #[error("running is not an end")]
    NotAnEnd,
}

/// Why a command ended other than by its process exiting on its own: kept with the command
/// (its `end_reason`) and in its `command_end` audit entry. A command that completed has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandEndReason {
    /// Its session ended, for this reason; the wire string is the session's
    /// (`agent_disconnected`, `server_restart`, `closed_by_owner`, `idle`, ...).
    SessionClosed(CloseReason),
    /// The agent reported an error on its channel: it could not start it, or lost it.
    AgentError,
    /// The server could not hand it to the agent (the agent's connection was gone or full).
    NotDelivered,
    /// Another command held its channel, so it never ran.
    ChannelInUse,
    /// It ran past its timeout (killed by the agent, or ended by the server when the agent
    /// stayed silent past it).
    Timeout,
    /// A technician cancelled it.
    CancelledByUser,
    /// The agent stopped it on its own, unasked (e.g. while shutting down).
    CancelledByAgent,
}

/// How many reasons are not a session's.
const OWN_END_REASONS: usize = 6;

impl CommandEndReason {
    /// Every reason: one per [`CloseReason`], then the command's own.
    pub const ALL: [Self; CloseReason::ALL.len() + OWN_END_REASONS] = {
        let own = [
            Self::AgentError,
            Self::NotDelivered,
            Self::ChannelInUse,
            Self::Timeout,
            Self::CancelledByUser,
            Self::CancelledByAgent,
        ];
        let mut all = [Self::AgentError; CloseReason::ALL.len() + OWN_END_REASONS];
        let mut i = 0;
        while i < CloseReason::ALL.len() {
            all[i] = Self::SessionClosed(CloseReason::ALL[i]);
            i += 1;
        }
        let mut j = 0;
        while j < OWN_END_REASONS {
            all[i + j] = own[j];
            j += 1;
        }
        all
    };

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SessionClosed(reason) => reason.as_str(),
            Self::AgentError => "agent_error",
            Self::NotDelivered => "not_delivered",
            Self::ChannelInUse => "channel_in_use",
            Self::Timeout => "timeout",
            Self::CancelledByUser => "cancelled_by_user",
            Self::CancelledByAgent => "cancelled_by_agent",
        }
    }

    /// The inverse of [`Self::as_str`].
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == value)
    }

    /// The end this reason makes. A session closed by someone (its owner, an admin, a
    /// revocation, the idle timeout, a shutdown) cancels its commands; one that went with its
    /// agent (gone, reconnected, revoked, or a previous server process that died) fails them.
    #[must_use]
    pub const fn status(self) -> CommandStatus {
        match self {
            Self::SessionClosed(
                CloseReason::ClosedByOwner
                | CloseReason::ClosedByAdmin
                | CloseReason::Idle
                | CloseReason::ServerShutdown
                | CloseReason::UserDisabled
                | CloseReason::LoggedOut,
            )
            | Self::CancelledByUser
            | Self::CancelledByAgent => CommandStatus::Cancelled,
            Self::SessionClosed(
                CloseReason::Refused
                | CloseReason::OpenTimeout
                | CloseReason::AgentDisconnected
                | CloseReason::AgentReconnected
                | CloseReason::ServerRestart
                | CloseReason::AgentRevoked
                | CloseReason::NodeLost,
            )
            | Self::AgentError
            | Self::NotDelivered
            | Self::ChannelInUse => CommandStatus::Failed,
            Self::Timeout => CommandStatus::TimedOut,
        }
    }
}

/// How a command ended: which end, and what that end carries. An end the agent reports
/// carries the process's exit code (and the signal that killed it, if one did); an end the
/// server decides on its own carries neither, because nobody saw the process end. Every end
/// but a completion carries its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandEnd {
    status: CommandStatus,
    exit_code: Option<i32>,
    signal: Option<String>,
    reason: Option<CommandEndReason>,
}

/// What a [`CommandEnd`] stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandEndParts {
    pub status: CommandStatus,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub reason: Option<CommandEndReason>,
}

/// The agent's `end_reason` when it killed a command itself.
const AGENT_TIMED_OUT: &str = "timed_out";
const AGENT_CANCELLED: &str = "cancelled";

impl CommandEnd {
    /// The end the agent reported with its last output chunk. The agent's `end_reason`
    /// (`timed_out`, `cancelled`) says it killed the process; a command whose cancel was
    /// requested ends cancelled however the process exited; otherwise it completed. A timeout
    /// outranks a cancel: the process was killed for running too long either way. A cancel
    /// the agent reports unasked is its own (it was shutting down).
    #[must_use]
    pub fn reported(
        exit_code: i32,
        signal: Option<String>,
        end_reason: Option<&str>,
        cancel_requested: bool,
    ) -> Self {
        let reason = match (end_reason, cancel_requested) {
            (Some(AGENT_TIMED_OUT), _) => Some(CommandEndReason::Timeout),
            (_, true) => Some(CommandEndReason::CancelledByUser),
            (Some(AGENT_CANCELLED), false) => Some(CommandEndReason::CancelledByAgent),
            _ => None,
        };
        Self {
            status: reason.map_or(CommandStatus::Completed, CommandEndReason::status),
            exit_code: Some(exit_code),
            signal,
            reason,
        }
    }

    /// An end the server decides without the agent's word, for `reason`: the tunnel closed,
    /// the agent went away or refused the channel, the agent stayed silent past the timeout.
    /// It carries no exit code, and is never a completion (only the agent can report one).
    #[must_use]
    pub fn decided(reason: CommandEndReason) -> Self {
        Self {
            status: reason.status(),
            exit_code: None,
            signal: None,
            reason: Some(reason),
        }
    }

    #[must_use]
    pub fn status(&self) -> CommandStatus {
        self.status
    }

    #[must_use]
    pub fn exit_code(&self) -> Option<i32> {
        self.exit_code
    }

    #[must_use]
    pub fn signal(&self) -> Option<&str> {
        self.signal.as_deref()
    }

    #[must_use]
    pub fn reason(&self) -> Option<CommandEndReason> {
        self.reason
    }

    /// The status, exit code, signal and reason, to store.
    #[must_use]
    pub fn into_parts(self) -> CommandEndParts {
        CommandEndParts {
            status: self.status,
            exit_code: self.exit_code,
            signal: self.signal,
            reason: self.reason,
        }
    }
}

/// A command the server is running, as far as its lifecycle goes: running (perhaps with a
/// cancel requested), then exactly one end. The first end taken wins; later ones (the agent's
/// last chunk racing the tunnel's close) are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommandRun {
    cancel_requested: bool,
    end: Option<CommandStatus>,
}

impl CommandRun {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// `Running` until an end is taken, then that end.
    #[must_use]
    pub fn status(&self) -> CommandStatus {
        self.end.unwrap_or(CommandStatus::Running)
    }

    #[must_use]
    pub fn cancel_requested(&self) -> bool {
        self.cancel_requested
    }

    /// A technician asked to cancel: when the process ends, it ended cancelled.
    ///
    /// # Errors
    /// [`CommandStatusError::Ended`] when the command has an end already.
    pub fn request_cancel(&mut self) -> Result<(), CommandStatusError> {
        match self.end {
            Some(end) => Err(CommandStatusError::Ended(end)),
            None => {
                self.cancel_requested = true;
                Ok(())
            }
        }
    }

    /// Takes `end` as the command's end.
    ///
    /// # Errors
    /// [`CommandStatusError::Ended`] when it has one already.
    pub fn end(&mut self, end: &CommandEnd) -> Result<(), CommandStatusError> {
        self.end = Some(self.status().finish(end.status)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
