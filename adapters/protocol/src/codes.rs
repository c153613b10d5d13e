//! The agent's `file_error` codes: one enum, shared by the agent that sends them and the
//! server that maps them to HTTP statuses.

use serde::{Deserialize, Serialize};

/// Why a file operation failed on the agent (`file_error.code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileErrorCode {
    NotFound,
    PermissionDenied,
    IsDirectory,
    NotADirectory,
    NotAbsolute,
    DiskFull,
    ChecksumMismatch,
    BadOffset,
    /// Any other I/O failure; also what a code unknown to this build (a newer agent's) reads as.
    #[serde(other)]
    Io,
}

impl FileErrorCode {
    /// Every code, in documentation order.
    pub const ALL: [Self; 9] = [
        Self::NotFound,
        Self::PermissionDenied,
        Self::IsDirectory,
        Self::NotADirectory,
        Self::NotAbsolute,
        Self::DiskFull,
        Self::ChecksumMismatch,
        Self::BadOffset,
        Self::Io,
    ];

    /// The code as it travels on the wire.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::PermissionDenied => "permission_denied",
            Self::IsDirectory => "is_directory",
            Self::NotADirectory => "not_a_directory",
            Self::NotAbsolute => "not_absolute",
            Self::DiskFull => "disk_full",
            Self::ChecksumMismatch => "checksum_mismatch",
            Self::BadOffset => "bad_offset",
            Self::Io => "io",
        }
    }
}

impl std::fmt::Display for FileErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
