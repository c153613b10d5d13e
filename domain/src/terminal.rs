//! Interactive terminals: the rules for a terminal's size and `TERM`, and how one ends.

use std::fmt;

/// The largest number of columns or rows a terminal may have.
pub const MAX_TERMINAL_SIDE: u16 = 1000;

/// `TERM` when the client names none.
pub const DEFAULT_TERM: &str = "xterm-256color";

/// Why a terminal request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TerminalSpecError {
    #[error("cols and rows must be between 1 and {MAX_TERMINAL_SIDE}, got {cols}x{rows}")]
    BadSize { cols: u16, rows: u16 },
    #[error("term must be 1 to 64 characters of A-Z a-z 0-9 . _ + -")]
    BadTerm,
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermSize {
    cols: u16,
    rows: u16,
}

impl TermSize {
    /// # Errors
    /// [`TerminalSpecError::BadSize`] when a side is 0 or over [`MAX_TERMINAL_SIDE`].
    pub fn new(cols: u16, rows: u16) -> Result<Self, TerminalSpecError> {
        let ok = |side: u16| (1..=MAX_TERMINAL_SIDE).contains(&side);
        if ok(cols) && ok(rows) {
            Ok(Self { cols, rows })
        } else {
            Err(TerminalSpecError::BadSize { cols, rows })
        }
    }

    #[must_use]
    pub const fn cols(self) -> u16 {
        self.cols
    }

    #[must_use]
    pub const fn rows(self) -> u16 {
        self.rows
    }
}

impl fmt::Display for TermSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.cols, self.rows)
    }
}

/// A terminal type (`TERM`), from a conservative alphabet: it ends up in the remote
/// process's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermName(String);

impl TermName {
    /// # Errors
    /// [`TerminalSpecError::BadTerm`] when empty, over 64 characters or outside
    /// `A-Z a-z 0-9 . _ + -`.
    pub fn parse(value: &str) -> Result<Self, TerminalSpecError> {
        let ok = !value.is_empty()
            && value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(TerminalSpecError::BadTerm)
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TermName {
    fn default() -> Self {
        Self(DEFAULT_TERM.to_owned())
    }
}

/// How a terminal ended, as audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalEnd {
    /// Its process exited (or was killed by a signal it did not get from us).
    Exited,
    /// A user closed it (`DELETE .../terminals/{id}`).
    Closed,
    /// Nobody attached within the grace period.
    GraceExpired,
    /// Its tunnel session closed.
    SessionClosed,
    /// The agent's connection ended.
    AgentDisconnected,
    /// The agent refused or failed to start it.
    Failed,
}

impl TerminalEnd {
    pub const ALL: [Self; 6] = [
        Self::Exited,
        Self::Closed,
        Self::GraceExpired,
        Self::SessionClosed,
        Self::AgentDisconnected,
        Self::Failed,
    ];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Exited => "exited",
            Self::Closed => "closed",
            Self::GraceExpired => "grace_expired",
            Self::SessionClosed => "session_closed",
            Self::AgentDisconnected => "agent_disconnected",
            Self::Failed => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_between_one_and_the_limit_are_accepted() {
        assert_eq!(
            TermSize::new(80, 24).map(|s| s.to_string()),
            Ok("80x24".into())
        );
        assert!(TermSize::new(1, MAX_TERMINAL_SIDE).is_ok());
        assert_eq!(
            TermSize::new(0, 24),
            Err(TerminalSpecError::BadSize { cols: 0, rows: 24 })
        );
        assert!(TermSize::new(80, MAX_TERMINAL_SIDE + 1).is_err());
    }

    #[test]
    fn term_names_keep_to_a_safe_alphabet() {
        assert_eq!(
            TermName::parse("xterm-256color").map(|t| t.0),
            Ok("xterm-256color".into())
        );
        assert!(TermName::parse("screen.linux+x_1").is_ok());
        for bad in ["", "xterm 256", "x;rm", &"x".repeat(65), "vt100\n"] {
            assert_eq!(
                TermName::parse(bad),
                Err(TerminalSpecError::BadTerm),
                "{bad:?}"
            );
        }
        assert_eq!(TermName::default().as_str(), DEFAULT_TERM);
    }

    #[test]
    fn ends_name_themselves() {
        assert_eq!(TerminalEnd::GraceExpired.as_str(), "grace_expired");
        assert_eq!(
            TerminalEnd::AgentDisconnected.as_str(),
            "agent_disconnected"
        );
    }
}
