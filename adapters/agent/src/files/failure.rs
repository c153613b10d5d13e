//! How a file operation fails: a `file_error` with the protocol's code and the operating
//! system's reason.

use std::io;
use std::path::Path;

use rmm_protocol::{AgentMessage, FileErrorCode as Code};

/// The `file_error` code of an I/O error.
pub(super) fn code_of(error: &io::Error) -> Code {
    match error.kind() {
        io::ErrorKind::NotFound => Code::NotFound,
        io::ErrorKind::PermissionDenied => Code::PermissionDenied,
        io::ErrorKind::IsADirectory => Code::IsDirectory,
        io::ErrorKind::NotADirectory => Code::NotADirectory,
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Code::DiskFull,
        _ => Code::Io,
    }
}

/// Why a file operation failed: its `file_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    pub(super) code: Code,
    pub(super) message: String,
}

impl Failure {
    pub(super) fn new(code: Code, message: String) -> Self {
        Self { code, message }
    }

    /// An I/O error while doing `what` to `path`. The message carries the operating system's
    /// reason: the technician needs it (a 403 says which permission), and the paths are the
    /// technician's own.
    pub(super) fn io(what: &str, path: &Path, error: &io::Error) -> Self {
        Self::new(
            code_of(error),
            format!("cannot {what} {}: {error}", path.display()),
        )
    }

    pub(super) fn bad_offset(message: String) -> Self {
        Self::new(Code::BadOffset, message)
    }

    pub(super) fn frame(&self, channel_id: &str) -> AgentMessage {
        AgentMessage::FileError {
            channel_id: channel_id.to_owned(),
            code: self.code,
            message: self.message.clone(),
        }
    }
}
