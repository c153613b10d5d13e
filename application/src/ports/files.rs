//! What crosses the gateway port in a file operation: byte streams, the facts of a file, and
//! why an operation failed. How the bytes travel (windows, acknowledgements, data frames,
//! checksums over the stream) is the gateway adapter's business.

use std::pin::Pin;

use bytes::Bytes;
use futures_core::Stream;
use rmm_domain::FileErrorCode;

use super::GatewayError;

/// Bytes to or from the technician's client; an error means the client's side broke.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// A download's bytes as the agent sends them; an error ends the transfer.
pub type FileBytes = Pin<Box<dyn Stream<Item = Result<Bytes, FileOpError>> + Send>>;

/// Why a file operation through the gateway failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileOpError {
    /// The agent refused or failed, for the reason `code` names.
    #[error("{message}")]
    Agent {
        code: FileErrorCode,
        message: String,
    },
    #[error("the agent of this session is not connected")]
    AgentGone,
    #[error("the agent does not support file transfer (upgrade the agent)")]
    Unsupported,
    #[error("the tunnel has too many transfers and commands in flight; try again")]
    Busy,
    /// The client's request body broke off.
    #[error("the upload was interrupted: {0}")]
    ClientAborted(String),
    #[error("the agent did not answer in time")]
    Timeout,
    #[error("the agent broke the protocol: {0}")]
    Protocol(String),
    /// A download's range starts at or past the end of the file (`size` bytes).
    #[error("the range starts at or past the end of the file ({size} bytes)")]
    RangeNotSatisfiable { size: u64 },
}

impl From<GatewayError> for FileOpError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::NotConnected | GatewayError::Disconnected => Self::AgentGone,
            GatewayError::Busy | GatewayError::Overloaded => Self::Busy,
            GatewayError::Unsupported => Self::Unsupported,
        }
    }
}

/// Where an upload goes: the file, the byte it starts from (a resume), and the SHA-256 of the
/// whole file when the client knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRequest {
    pub path: String,
    pub offset: u64,
    pub sha256: Option<String>,
}

/// A completed upload, as the agent confirmed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub path: String,
    pub size: u64,
    /// SHA-256 (hex) of the whole file as written.
    pub sha256: String,
}

/// A download the agent has started: the file's facts, and its bytes from the requested
/// offset. The stream hands on the file's last bytes only once the agent confirmed that the
/// file did not change while it was read, so a stream that reached `size` is complete.
pub struct AgentDownload {
    pub size: u64,
    /// SHA-256 (hex) of the whole file.
    pub sha256: String,
    pub body: FileBytes,
}

impl std::fmt::Debug for AgentDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentDownload")
            .field("size", &self.size)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// One directory entry on the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    pub size: u64,
    /// Unix permission bits.
    pub mode: Option<u32>,
    /// Seconds since the Unix epoch.
    pub modified: Option<i64>,
}
