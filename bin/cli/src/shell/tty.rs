//! The local terminal: raw mode for the length of a shell (restored when the guard drops:
//! on every return, error and unwinding panic; the signals that would end rmm are caught by
//! the shell and end it through a return), and its size.

/// The size when stdout is not a terminal.
const DEFAULT_SIZE: (u16, u16) = (80, 24);

/// Raw mode on standard input while held; the settings before it come back on drop.
#[derive(Debug)]
pub struct RawMode {
    #[cfg(unix)]
    original: rustix::termios::Termios,
}

#[cfg(unix)]
impl RawMode {
    /// Puts standard input (a terminal) in raw mode: no echo, no line editing, no signals
    /// from keys (Ctrl-C is a byte for the remote side).
    ///
    /// # Errors
    /// The terminal's settings cannot be read or set.
    pub fn enter() -> std::io::Result<Self> {
        use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let original = tcgetattr(&stdin)?;
        let mut raw = original.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw)?;
        Ok(Self { original })
    }
}

#[cfg(unix)]
impl Drop for RawMode {
    fn drop(&mut self) {
        use rustix::termios::{OptionalActions, tcsetattr};
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &self.original);
    }
}

#[cfg(not(unix))]
impl RawMode {
    /// Raw mode is not built on this platform yet.
    ///
    /// # Errors
    /// Always.
    pub fn enter() -> std::io::Result<Self> {
        Err(std::io::Error::other(
            "raw terminal mode is not supported on this platform yet",
        ))
    }
}

/// The local terminal's size (cols, rows): stdout's, else stdin's, else 80x24.
#[must_use]
pub fn size() -> (u16, u16) {
    #[cfg(unix)]
    {
        use rustix::termios::tcgetwinsize;
        let stdout = tcgetwinsize(std::io::stdout());
        let found = stdout.or_else(|_| tcgetwinsize(std::io::stdin()));
        if let Ok(size) = found
            && size.ws_col > 0
            && size.ws_row > 0
        {
            return (size.ws_col, size.ws_row);
        }
    }
    DEFAULT_SIZE
}
