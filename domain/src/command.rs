//! A command run in a tunnel: its text (validated), and its lifecycle from running to one of
//! the ends a technician needs to tell apart.

use std::fmt;

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
    /// The agent went away before reporting an end.
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
    #[error("only the agent can report that a command completed")]
    AgentOnly,
}

/// How a command ended: which end, and what that end carries. An end the agent reports
/// carries the process's exit code (and the signal that killed it, if one did); an end the
/// server decides on its own carries neither, because nobody saw the process end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandEnd {
    status: CommandStatus,
    exit_code: Option<i32>,
    signal: Option<String>,
}

/// The agent's `end_reason` when it killed a command itself.
const AGENT_TIMED_OUT: &str = "timed_out";
const AGENT_CANCELLED: &str = "cancelled";

impl CommandEnd {
    /// The end the agent reported with its last output chunk. The agent's `end_reason`
    /// (`timed_out`, `cancelled`) says it killed the process; a command whose cancel was
    /// requested ends cancelled however the process exited; otherwise it completed. A timeout
    /// outranks a cancel: the process was killed for running too long either way.
    #[must_use]
    pub fn reported(
        exit_code: i32,
        signal: Option<String>,
        end_reason: Option<&str>,
        cancel_requested: bool,
    ) -> Self {
        let status = match (end_reason, cancel_requested) {
            (Some(AGENT_TIMED_OUT), _) => CommandStatus::TimedOut,
            (Some(AGENT_CANCELLED), _) | (_, true) => CommandStatus::Cancelled,
            _ => CommandStatus::Completed,
        };
        Self {
            status,
            exit_code: Some(exit_code),
            signal,
        }
    }

    /// An end the server decides without the agent's word: the tunnel closed (cancelled),
    /// the agent went away or refused the channel (failed), the agent stayed silent past the
    /// timeout (timed out). It carries no exit code.
    ///
    /// # Errors
    /// [`CommandStatusError::NotAnEnd`] for `Running`; [`CommandStatusError::AgentOnly`] for
    /// `Completed`, which only the agent can report.
    pub fn decided(status: CommandStatus) -> Result<Self, CommandStatusError> {
        match status {
            CommandStatus::Running => Err(CommandStatusError::NotAnEnd),
            CommandStatus::Completed => Err(CommandStatusError::AgentOnly),
            CommandStatus::TimedOut | CommandStatus::Cancelled | CommandStatus::Failed => {
                Ok(Self {
                    status,
                    exit_code: None,
                    signal: None,
                })
            }
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

    /// The status, exit code and signal, to store.
    #[must_use]
    pub fn into_parts(self) -> (CommandStatus, Option<i32>, Option<String>) {
        (self.status, self.exit_code, self.signal)
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
mod tests {
    use super::*;

    #[test]
    fn command_text_rejects_blank_long_and_nul() {
        assert_eq!(CommandText::parse("ls -la").unwrap().as_str(), "ls -la");
        assert_eq!(CommandText::parse("  \n"), Err(CommandTextError::Empty));
        assert_eq!(
            CommandText::parse(&"x".repeat(CommandText::MAX_LEN + 1)),
            Err(CommandTextError::TooLong)
        );
        // Characters, not bytes: the longest command of 2-byte characters is accepted.
        assert!(CommandText::parse(&"é".repeat(CommandText::MAX_LEN)).is_ok());
        assert_eq!(CommandText::parse("a\0b"), Err(CommandTextError::Nul));
    }

    #[test]
    fn running_ends_once_in_any_end() {
        for end in [
            CommandStatus::Completed,
            CommandStatus::TimedOut,
            CommandStatus::Cancelled,
            CommandStatus::Failed,
        ] {
            assert_eq!(CommandStatus::Running.finish(end), Ok(end));
            assert_eq!(
                end.finish(CommandStatus::Completed),
                Err(CommandStatusError::Ended(end))
            );
        }
        assert_eq!(
            CommandStatus::Running.finish(CommandStatus::Running),
            Err(CommandStatusError::NotAnEnd)
        );
    }

    #[test]
    fn the_agents_end_reason_and_a_requested_cancel_decide_a_reported_end() {
        let end = |reason, cancel| CommandEnd::reported(0, None, reason, cancel).status();
        assert_eq!(end(None, false), CommandStatus::Completed);
        assert_eq!(end(Some("timed_out"), false), CommandStatus::TimedOut);
        assert_eq!(end(Some("timed_out"), true), CommandStatus::TimedOut);
        assert_eq!(end(Some("cancelled"), false), CommandStatus::Cancelled);
        assert_eq!(end(None, true), CommandStatus::Cancelled);
        assert_eq!(end(Some("something_new"), false), CommandStatus::Completed);
        let killed = CommandEnd::reported(137, Some("SIGKILL".into()), None, false);
        assert_eq!(killed.exit_code(), Some(137));
        assert_eq!(killed.signal(), Some("SIGKILL"));
    }

    #[test]
    fn the_server_decides_only_ends_without_an_exit_code_and_never_a_completion() {
        for status in [
            CommandStatus::TimedOut,
            CommandStatus::Cancelled,
            CommandStatus::Failed,
        ] {
            let end = CommandEnd::decided(status).unwrap();
            assert_eq!(end.clone().into_parts(), (status, None, None));
        }
        assert_eq!(
            CommandEnd::decided(CommandStatus::Completed),
            Err(CommandStatusError::AgentOnly)
        );
        assert_eq!(
            CommandEnd::decided(CommandStatus::Running),
            Err(CommandStatusError::NotAnEnd)
        );
    }

    #[test]
    fn a_run_takes_one_end_and_refuses_cancels_after_it() {
        let mut run = CommandRun::new();
        assert_eq!(run.status(), CommandStatus::Running);
        run.request_cancel().unwrap();
        assert!(run.cancel_requested());
        let cancelled = CommandEnd::reported(0, None, None, run.cancel_requested());
        run.end(&cancelled).unwrap();
        assert_eq!(run.status(), CommandStatus::Cancelled);
        let failed = CommandEnd::decided(CommandStatus::Failed).unwrap();
        assert_eq!(
            run.end(&failed),
            Err(CommandStatusError::Ended(CommandStatus::Cancelled))
        );
        assert_eq!(
            run.request_cancel(),
            Err(CommandStatusError::Ended(CommandStatus::Cancelled))
        );
        assert_eq!(run.status(), CommandStatus::Cancelled);
    }

    #[test]
    fn statuses_round_trip_through_text() {
        for s in CommandStatus::ALL {
            assert_eq!(CommandStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(CommandStatus::parse("done"), None);
    }
}
