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
    #[error("command is longer than {max} bytes", max = CommandText::MAX_LEN)]
    TooLong,
    #[error("command contains a NUL byte")]
    Nul,
}

impl CommandText {
    pub const MAX_LEN: usize = 64 * 1024;

    /// # Errors
    /// [`CommandTextError`] for an empty (or blank) command, one over 64 KiB, or one with NUL
    /// (a shell cannot receive it).
    pub fn parse(value: &str) -> Result<Self, CommandTextError> {
        if value.trim().is_empty() {
            Err(CommandTextError::Empty)
        } else if value.len() > Self::MAX_LEN {
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
    fn statuses_round_trip_through_text() {
        for s in CommandStatus::ALL {
            assert_eq!(CommandStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(CommandStatus::parse("done"), None);
    }
}
