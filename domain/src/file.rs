//! Why a file operation failed on an agent: one set of codes, shared by the agent that
//! reports them, the protocol that carries them and the server that maps them to answers.

use std::fmt;

/// Why a file operation failed on the agent (`file_error.code` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

    /// The inverse of [`Self::as_str`]; a code this build does not know (a newer agent's)
    /// reads as [`Self::Io`], so an unknown failure is still a failure.
    #[must_use]
    pub fn from_wire(value: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == value)
            .unwrap_or(Self::Io)
    }
}

impl fmt::Display for FileErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::FileErrorCode;

    #[test]
    fn codes_round_trip_through_their_wire_names_and_unknown_ones_read_as_io() {
        for code in FileErrorCode::ALL {
            assert_eq!(FileErrorCode::from_wire(code.as_str()), code);
            assert_eq!(code.to_string(), code.as_str());
        }
        assert_eq!(
            FileErrorCode::from_wire("quota_exceeded"),
            FileErrorCode::Io
        );
        assert_eq!(FileErrorCode::from_wire(""), FileErrorCode::Io);
        assert_eq!(FileErrorCode::NotFound.as_str(), "not_found");
    }
}
