//! Why a file operation failed on an agent: one set of codes, shared by the agent that
//! reports them, the protocol that carries them and the server that maps them to answers.
//! And what a path must be before it is sent to an agent at all ([`check_agent_path`]).

use std::fmt;

/// Why a file operation failed on the agent (`file_error.code` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileErrorCode {
    NotFound,
    PermissionDenied,
    IsDirectory,
    NotADirectory,
    NotAbsolute,
    /// The path names something that is neither a regular file nor a directory (a device, a
    /// FIFO, a socket): never read from or written to.
    NotARegularFile,
    /// The path, or one of its names, is longer than the agent's file system allows.
    NameTooLong,
    /// The path cannot name a file at all (a NUL byte).
    InvalidPath,
    DiskFull,
    ChecksumMismatch,
    BadOffset,
    /// Any other I/O failure; also what a code unknown to this build (a newer agent's) reads as.
    Io,
}

impl FileErrorCode {
    /// Every code, in documentation order.
    pub const ALL: [Self; 12] = [
        Self::NotFound,
        Self::PermissionDenied,
        Self::IsDirectory,
        Self::NotADirectory,
        Self::NotAbsolute,
        Self::NotARegularFile,
        Self::NameTooLong,
        Self::InvalidPath,
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
            Self::NotARegularFile => "not_a_regular_file",
            Self::NameTooLong => "name_too_long",
            Self::InvalidPath => "invalid_path",
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

/// The longest path a client may name on an agent, in bytes of UTF-8: Linux's `PATH_MAX`.
/// Longer ones are refused before anything is sent to the agent.
pub const MAX_PATH_BYTES: usize = 4096;

/// The longest name (one component of a path) a client may use, in characters: what the
/// common file systems allow (255 bytes on Linux's, 255 UTF-16 units on NTFS). Counted in
/// characters so that no name Windows accepts is refused; an agent whose file system counts
/// bytes still refuses a longer one itself (`name_too_long`).
pub const MAX_NAME_CHARS: usize = 255;

/// Why a path cannot be sent to an agent (see [`check_agent_path`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    /// A NUL byte: no operating system has a file name with one.
    #[error("the path contains a NUL byte (at byte {at}); no file name can hold one")]
    Nul { at: usize },
    #[error("the path is {len} bytes long; at most {MAX_PATH_BYTES} are allowed")]
    TooLong { len: usize },
    /// `name` is the start of the name, for the message.
    #[error(
        "the name {name:?} in the path is {len} characters long; at most {MAX_NAME_CHARS} are allowed"
    )]
    NameTooLong { name: String, len: usize },
}

impl PathProblem {
    /// The code an agent would have answered with: one code for one problem, wherever it
    /// was found.
    #[must_use]
    pub const fn code(&self) -> FileErrorCode {
        match self {
            Self::Nul { .. } => FileErrorCode::InvalidPath,
            Self::TooLong { .. } | Self::NameTooLong { .. } => FileErrorCode::NameTooLong,
        }
    }
}

/// Checks a path a client wants to use on an agent: no NUL byte, at most [`MAX_PATH_BYTES`],
/// no name longer than [`MAX_NAME_CHARS`] (names are split at `/` and at `\`, so a Windows
/// path is checked too). Whether it is absolute is the caller's check.
///
/// # Errors
/// The first [`PathProblem`] found, in the order above.
pub fn check_agent_path(path: &str) -> Result<(), PathProblem> {
    if let Some(at) = path.find('\0') {
        return Err(PathProblem::Nul { at });
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathProblem::TooLong { len: path.len() });
    }
    for name in path.split(['/', '\\']) {
        let len = name.chars().count();
        if len > MAX_NAME_CHARS {
            let mut start: String = name.chars().take(32).collect();
            start.push('…');
            return Err(PathProblem::NameTooLong { name: start, len });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{FileErrorCode, MAX_NAME_CHARS, MAX_PATH_BYTES, PathProblem, check_agent_path};

    #[test]
    fn paths_with_a_nul_too_long_or_with_a_too_long_name_are_refused() {
        assert_eq!(check_agent_path("/etc/hosts"), Ok(()));
        assert_eq!(check_agent_path("C:\\Windows\\win.ini"), Ok(()));
        assert_eq!(
            check_agent_path("/tmp/a\0b"),
            Err(PathProblem::Nul { at: 6 })
        );
        let longest = format!("/{}", "a/".repeat((MAX_PATH_BYTES - 1) / 2));
        assert!(longest.len() <= MAX_PATH_BYTES);
        assert_eq!(check_agent_path(&longest), Ok(()));
        let long = "/a".repeat(2500);
        assert_eq!(
            check_agent_path(&long),
            Err(PathProblem::TooLong { len: 5000 })
        );
        let name = "n".repeat(MAX_NAME_CHARS);
        assert_eq!(check_agent_path(&format!("/tmp/{name}")), Ok(()));
        // Characters, not bytes: 255 two-byte letters are one name NTFS accepts.
        assert_eq!(check_agent_path(&format!("/{}", "é".repeat(255))), Ok(()));
        let refused = check_agent_path(&format!("/tmp/{name}x/f"));
        assert!(
            matches!(&refused, Err(PathProblem::NameTooLong { len: 256, name }) if name.starts_with("nnn")),
            "{refused:?}"
        );
        assert!(
            check_agent_path(&format!("C:\\{name}x")).is_err(),
            "a Windows name is checked too"
        );
    }

    #[test]
    fn each_path_problem_reads_as_the_code_an_agent_would_send() {
        assert_eq!(
            PathProblem::Nul { at: 0 }.code(),
            FileErrorCode::InvalidPath
        );
        assert_eq!(
            PathProblem::TooLong { len: 5000 }.code(),
            FileErrorCode::NameTooLong
        );
        let e = PathProblem::TooLong { len: 5000 };
        assert_eq!(
            e.to_string(),
            "the path is 5000 bytes long; at most 4096 are allowed"
        );
    }

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
