//! How a file operation fails: a `file_error` with the protocol's code and the operating
//! system's reason.

use std::io;
use std::path::Path;

use rmm_protocol::{AgentMessage, FileErrorCode as Code};

/// The `file_error` code of an I/O error: every refusal of the path itself has its own code,
/// so the server answers it as the client's mistake (4xx), not as a failure of the agent.
pub(super) fn code_of(error: &io::Error) -> Code {
    match error.kind() {
        io::ErrorKind::NotFound => Code::NotFound,
        // EROFS: refused like a permission, whoever the agent runs as.
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            Code::PermissionDenied
        }
        io::ErrorKind::IsADirectory => Code::IsDirectory,
        io::ErrorKind::NotADirectory => Code::NotADirectory,
        io::ErrorKind::InvalidFilename => invalid_filename(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Code::DiskFull,
        _ => Code::Io,
    }
}

/// `InvalidFilename` is ENAMETOOLONG on Unix, and nothing else there.
#[cfg(unix)]
const fn invalid_filename() -> Code {
    Code::NameTooLong
}

/// On Windows it is also a name with a character the file system refuses: an invalid path
/// (the message has the system's reason). Untested.
#[cfg(not(unix))]
const fn invalid_filename() -> Code {
    Code::InvalidPath
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

    /// `path` names a device, a FIFO or a socket: reading one may never end (`/dev/zero`) or
    /// block, and writing one is not putting a file in place.
    pub(super) fn not_a_regular_file(path: &Path) -> Self {
        Self::new(
            Code::NotARegularFile,
            format!(
                "{} is not a regular file (a device, FIFO or socket); name a regular file",
                path.display()
            ),
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
