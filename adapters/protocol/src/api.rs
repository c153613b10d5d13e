//! The HTTP API's error contract: every error answer is `{"error": "<for people>", "code":
//! "<for programs>"}`. Clients match on [`ApiErrorCode`], never on the message text.

use serde::{Deserialize, Serialize};

use crate::FileErrorCode;

/// The body of every 4xx and 5xx answer of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong, in words for a person.
    pub error: String,
    /// What went wrong, stable for programs.
    pub code: ApiErrorCode,
}

macro_rules! api_error_codes {
    ($($variant:ident = $wire:literal: $doc:literal,)+) => {
        /// A stable, machine-readable reason for an API error (`code` in every error body).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum ApiErrorCode {
            $(#[doc = $doc] #[serde(rename = $wire)] $variant,)+
            /// A code this build does not know (a newer server's).
            #[serde(other, rename = "unknown")]
            Unknown,
        }

        impl ApiErrorCode {
            /// Every code a server sends, in documentation order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The code as it travels on the wire.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $wire,)+
                    Self::Unknown => "unknown",
                }
            }

            /// What the code means, as documented in the API reference.
            #[must_use]
            pub const fn description(self) -> &'static str {
                match self {
                    $(Self::$variant => $doc,)+
                    Self::Unknown => "a code this client does not know",
                }
            }
        }
    };
}

api_error_codes! {
    InvalidRequest = "invalid_request":
        "400: the request is malformed (JSON, a UUID, a parameter out of range, a bad name).",
    Unauthenticated = "unauthenticated":
        "401: no token, or a token that is invalid.",
    TokenExpired = "token_expired":
        "401: the token has expired; log in again.",
    TokenRevoked = "token_revoked":
        "401: the token was revoked (logout, a password change) or its user disabled or deleted; log in again.",
    InvalidCredentials = "invalid_credentials":
        "401: wrong username or password (403 on a password change: the current password is wrong).",
    Forbidden = "forbidden":
        "403: the caller may not do this (another user's session, or an admin-only operation).",
    SessionNotFound = "session_not_found":
        "404: no such session.",
    AgentNotFound = "agent_not_found":
        "404: no such agent.",
    AgentNotConnected = "agent_not_connected":
        "404: the agent exists but is not connected.",
    CommandNotFound = "command_not_found":
        "404: no such command in this session.",
    UserNotFound = "user_not_found":
        "404: no such user (or a deleted one).",
    EnrollmentNotFound = "enrollment_not_found":
        "404: no such enrollment token.",
    EnrollmentInvalid = "enrollment_invalid":
        "401: the enrollment token is unknown.",
    EnrollmentExpired = "enrollment_expired":
        "401: the enrollment token has expired.",
    EnrollmentUsedUp = "enrollment_used_up":
        "401: the enrollment token has been used as many times as it allows.",
    EnrollmentRevoked = "enrollment_revoked":
        "401: the enrollment token was revoked.",
    SessionExists = "session_exists":
        "409: the agent already has an active session (the message says whose).",
    AgentRefused = "agent_refused":
        "409: the agent refused to open the tunnel.",
    SessionNotActive = "session_not_active":
        "409: the session is not active (closed, or still opening).",
    ChannelBusy = "channel_busy":
        "409: the channel id is in use by a running command in this session.",
    AgentExists = "agent_exists":
        "409: an agent with this name exists.",
    RevokedAgent = "revoked_agent":
        "409: the agent is revoked (kept as history: no new key, no change).",
    UsernameTaken = "username_taken":
        "409: a user with this username exists.",
    LastAdmin = "last_admin":
        "409: refused because it would leave no enabled admin.",
    GroupNotFound = "group_not_found":
        "404 (the group in the path), 409 (a group a body names): no such group.",
    GroupExists = "group_exists":
        "409: a group with this name exists.",
    GroupNotEmpty = "group_not_empty":
        "409: the group still has agents; move or delete them first.",
    AgentUnsupported = "agent_unsupported":
        "409: the agent is too old for this operation (upgrade it).",
    AgentBusy = "agent_busy":
        "503: the agent's connection is saturated; try again shortly.",
    AgentGone = "agent_gone":
        "503: the agent disconnected during the operation.",
    DatabaseUnavailable = "database_unavailable":
        "503: the database does not answer; nothing was changed.",
    NodeUnreachable = "node_unreachable":
        "503: cluster mode: the agent or session is on another node, which this one cannot reach now (NATS is down, or that node was lost); retry shortly.",
    AgentTimeout = "agent_timeout":
        "504: the agent did not answer in time.",
    TerminalNotFound = "terminal_not_found":
        "404: no such live terminal in this session (it ended, or never was).",
    RecordingNotFound = "recording_not_found":
        "404: no such recording (or not one the caller may see).",
    OutputPruned = "output_pruned":
        "410: the retention sweep removed the command's stored output; its record (status, exit code, sizes) stays.",
    RecordingPruned = "recording_pruned":
        "410: the retention sweep removed the recording's content; its facts are still listed.",
    StdinClosed = "stdin_closed":
        "409: the command's stdin is closed: it was started without `stdin: true`, its stdin was already sent, or it ended.",
    FileNotFound = "file_not_found":
        "404 (files): no such file or directory on the agent.",
    PermissionDenied = "permission_denied":
        "403 (files): the agent's operating system refused access.",
    IsDirectory = "is_directory":
        "409 (files): a directory where a file is needed.",
    NotADirectory = "not_a_directory":
        "409 (files): a file where a directory is needed.",
    NotAbsolute = "not_absolute":
        "400 (files; 409 when the agent's system refuses a path the server took): the path is not absolute.",
    NotARegularFile = "not_a_regular_file":
        "409 (files): the path names a device, FIFO or socket, not a regular file; nothing was read or written.",
    NameTooLong = "name_too_long":
        "400 (files; 409 when the agent's system refuses a path the server took): the path is longer than 4096 bytes, a name in it longer than 255 characters, or either longer than the agent's file system allows.",
    InvalidPath = "invalid_path":
        "400 (files; 409 when the agent's system refuses a path the server took): the path cannot name a file (it contains a NUL byte).",
    BadOffset = "bad_offset":
        "409 (files): the offset to resume from does not match what the agent holds.",
    RangeNotSatisfiable = "range_not_satisfiable":
        "416 (files): the requested byte range starts at or past the end of the file (`Content-Range: bytes */SIZE` gives the size when known).",
    ChecksumMismatch = "checksum_mismatch":
        "422 (files): the SHA-256 does not match; the file changed or the transfer was damaged.",
    DiskFull = "disk_full":
        "507 (files): the agent's disk is full.",
    TransferAborted = "transfer_aborted":
        "400 (files): the request body ended before the declared size.",
    FileIo = "file_io":
        "500 (files): another I/O failure on the agent.",
    NotFound = "not_found":
        "404: no such route.",
    MethodNotAllowed = "method_not_allowed":
        "405: the route does not take this method.",
    RequestTimeout = "request_timeout":
        "408: the request body did not arrive in time.",
    PayloadTooLarge = "payload_too_large":
        "413: the JSON body is larger than the server accepts.",
    TooManyRequests = "too_many_requests":
        "429: too many failed logins (or enrollments) for this username or from this address; retry after `Retry-After` seconds.",
    TooManySessions = "too_many_sessions":
        "429: the caller holds as many open tunnel sessions as one user may; close one first.",
    ServerBusy = "server_busy":
        "503: the server is at capacity (password hashing at login, or agent handshakes); retry after `Retry-After` seconds.",
    Internal = "internal":
        "500: an internal error; the server log has the details.",
}

impl From<FileErrorCode> for ApiErrorCode {
    fn from(code: FileErrorCode) -> Self {
        match code {
            FileErrorCode::NotFound => Self::FileNotFound,
            FileErrorCode::PermissionDenied => Self::PermissionDenied,
            FileErrorCode::IsDirectory => Self::IsDirectory,
            FileErrorCode::NotADirectory => Self::NotADirectory,
            FileErrorCode::NotAbsolute => Self::NotAbsolute,
            FileErrorCode::NotARegularFile => Self::NotARegularFile,
            FileErrorCode::NameTooLong => Self::NameTooLong,
            FileErrorCode::InvalidPath => Self::InvalidPath,
            FileErrorCode::DiskFull => Self::DiskFull,
            FileErrorCode::ChecksumMismatch => Self::ChecksumMismatch,
            FileErrorCode::BadOffset => Self::BadOffset,
            FileErrorCode::Io => Self::FileIo,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_as_their_wire_names() {
        for &code in ApiErrorCode::ALL {
            let json = serde_json::to_string(&code).expect("serialise");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(
                serde_json::from_str::<ApiErrorCode>(&json).expect("parse"),
                code
            );
            assert!(
                !code.description().is_empty(),
                "{code:?} has no description"
            );
        }
    }

    #[test]
    fn a_code_from_a_newer_server_reads_as_unknown() {
        let body: ApiError =
            serde_json::from_str(r#"{"error":"x","code":"quota_exceeded"}"#).expect("parse");
        assert_eq!(body.code, ApiErrorCode::Unknown);
    }

    #[test]
    fn wire_names_are_unique() {
        let mut names: Vec<_> = ApiErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ApiErrorCode::ALL.len());
    }
}
