//! How an error answer of the API becomes a [`ClientError`]: by the body's stable `code`
//! ([`ApiErrorCode`]) and what the request was about; from a server that sends no code (an
//! older one), by the HTTP status alone. Never by the message text: that is for people, and
//! it is only echoed.

use rmm_domain::{AgentId, CommandId, SessionId};
use rmm_protocol::api::{ApiError, ApiErrorCode};
use serde::Deserialize;
use uuid::Uuid;

use crate::error::{ClientError, one_line};

/// What an agent is called in errors until [`ClientError::naming_agent`] names it.
const THE_AGENT: &str = "the agent";

/// What a file request does: decides how its errors read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileOp {
    Upload,
    Download,
    UploadStatus,
}

impl FileOp {
    /// What the agent's user must be allowed to do with the path.
    const fn verb(self) -> &'static str {
        match self {
            Self::Upload => "write",
            Self::Download | Self::UploadStatus => "read",
        }
    }
}

/// What a request was about: decides how an error reads.
#[derive(Debug, Clone)]
pub(crate) enum About {
    Login,
    Agents,
    Open(AgentId),
    Session(SessionId),
    Command(SessionId, CommandId),
    Audit,
    Users,
    File {
        session: SessionId,
        op: FileOp,
        path: String,
    },
    /// A terminal of the session (opening, attaching, closing one).
    Terminal(SessionId),
    /// The recordings list.
    Recordings,
    /// One recording, by id.
    Recording(Uuid),
}

impl About {
    /// The session the request was about, if any.
    const fn session(&self) -> Option<SessionId> {
        match self {
            Self::Session(session)
            | Self::Command(session, _)
            | Self::File { session, .. }
            | Self::Terminal(session) => Some(*session),
            Self::Login
            | Self::Agents
            | Self::Open(_)
            | Self::Audit
            | Self::Users
            | Self::Recordings
            | Self::Recording(_) => None,
        }
    }
}

/// An error answer as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ErrorReply {
    pub status: u16,
    /// The stable reason; `None` from a server that sends none, or one this client does not
    /// know (a newer server's).
    pub code: Option<ApiErrorCode>,
    /// What went wrong, for people: one line, bounded; never matched on.
    pub message: String,
}

/// The body of an error from a server that predates `code`.
#[derive(Deserialize)]
struct UncodedBody {
    error: String,
}

impl ErrorReply {
    /// Reads an error body: the API's `{"error", "code"}`, an older `{"error"}`, or any text.
    /// An empty message reads as the status's reason phrase.
    pub(crate) fn parse(status: u16, body: &[u8]) -> Self {
        let (code, text) = match serde_json::from_slice::<ApiError>(body) {
            Ok(ApiError { error, code }) => (Some(code), error),
            Err(_) => match serde_json::from_slice::<UncodedBody>(body) {
                Ok(UncodedBody { error }) => (None, error),
                Err(_) => (None, String::from_utf8_lossy(body).into_owned()),
            },
        };
        let mut message = one_line(&text);
        if message.is_empty() {
            message = reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("no reason given")
                .to_owned();
        }
        Self {
            status,
            code: code.filter(|code| *code != ApiErrorCode::Unknown),
            message,
        }
    }

    /// The error this answer means for a request about `about`.
    pub(crate) fn into_error(self, about: About) -> ClientError {
        match self.code {
            Some(code) => by_code(code, self, about),
            None => by_status(self, about),
        }
    }
}

/// The codes that tell apart what a status alone cannot; every other code reads as its
/// status does.
fn by_code(code: ApiErrorCode, reply: ErrorReply, about: About) -> ClientError {
    use ApiErrorCode as Code;
    let agent = THE_AGENT.to_owned();
    let message = reply.message.clone();
    match (code, &about) {
        (Code::InvalidCredentials, _) => ClientError::InvalidCredentials,
        (Code::TokenExpired, _) => ClientError::TokenExpired,
        // 429 on an open: the caller's own sessions are the conflict (the message says so).
        (Code::TooManySessions, _) => ClientError::Conflict(message),
        (Code::Unauthenticated, _) => ClientError::TokenRejected(message),
        (Code::Forbidden, about) => match about.session() {
            Some(session) => ClientError::SessionForbidden(session),
            None => ClientError::Forbidden(message),
        },
        (Code::SessionNotFound, about) => match about.session() {
            Some(session) => ClientError::SessionNotFound(session),
            None => by_status(reply, about.clone()),
        },
        (Code::CommandNotFound, About::Command(_, command)) => {
            ClientError::CommandNotFound(*command)
        }
        (Code::AgentNotFound | Code::AgentNotConnected, About::Open(id)) => {
            ClientError::AgentOffline {
                agent: id.to_string(),
            }
        }
        (Code::SessionExists, About::Open(id)) => ClientError::AgentBusy {
            agent: id.to_string(),
            reason: message,
        },
        (Code::AgentRefused, About::Open(id)) => ClientError::AgentRefused {
            agent: id.to_string(),
            reason: message,
        },
        (Code::SessionNotActive, About::File { session, .. }) => ClientError::SessionInactive {
            session: *session,
            reason: message,
        },
        (Code::SessionNotActive, About::Session(session) | About::Command(session, _)) => {
            ClientError::SessionNotUsable {
                session: *session,
                reason: message,
            }
        }
        (Code::AgentUnsupported, About::File { .. }) => ClientError::FilesUnsupported { agent },
        (Code::AgentUnsupported, About::Terminal(_)) => ClientError::TerminalsUnsupported { agent },
        (Code::AgentUnsupported, About::Session(_)) => ClientError::StdinUnsupported { agent },
        (Code::PermissionDenied, About::File { op, .. }) => ClientError::RemotePermissionDenied {
            agent,
            reason: message,
            verb: op.verb(),
        },
        (Code::FileNotFound, About::File { op, path, .. }) => missing_file(*op, path),
        (Code::IsDirectory, About::File { path, .. }) => ClientError::RemoteIsDirectory {
            agent,
            path: path.clone(),
        },
        (Code::NotARegularFile, About::File { path, .. }) => ClientError::RemoteNotARegularFile {
            agent,
            path: path.clone(),
        },
        (Code::NameTooLong, About::File { .. }) => ClientError::RemotePathTooLong {
            agent,
            reason: message,
        },
        (Code::InvalidPath, About::File { .. }) => ClientError::RemoteInvalidPath {
            agent,
            reason: message,
        },
        (Code::ChecksumMismatch, _) => ClientError::ChecksumMismatch,
        (Code::DiskFull, About::File { .. }) => ClientError::AgentDiskFull { agent },
        _ => by_status(reply, about),
    }
}

/// An answer without a code (or with one that does not fit the request): by its status and
/// what was asked.
fn by_status(reply: ErrorReply, about: About) -> ClientError {
    let ErrorReply {
        status, message, ..
    } = reply;
    match (status, about) {
        (401, About::Login) => ClientError::InvalidCredentials,
        (404, About::Recording(id)) => ClientError::RecordingNotFound(id),
        (504, About::Terminal(_)) => ClientError::TerminalTimedOut,
        // Otherwise a terminal's errors are its session's.
        (status, About::Terminal(session)) => by_status(
            ErrorReply {
                status,
                code: None,
                message,
            },
            About::Session(session),
        ),
        // Expired or not valid here: only the code tells which; both mean logging in again.
        (401, _) => ClientError::TokenRejected(message),
        (_, About::File { session, op, path }) => {
            file_by_status(status, message, session, op, &path)
        }
        (403, About::Session(session) | About::Command(session, _)) => {
            ClientError::SessionForbidden(session)
        }
        (403, _) => ClientError::Forbidden(message),
        (404, About::Open(agent)) => ClientError::AgentOffline {
            agent: agent.to_string(),
        },
        (404, About::Session(session)) => ClientError::SessionNotFound(session),
        // The session or the command in it: the command, the more specific.
        (404, About::Command(_, command)) => ClientError::CommandNotFound(command),
        (409, About::Open(agent)) => ClientError::AgentBusy {
            agent: agent.to_string(),
            reason: message,
        },
        (409, About::Session(session) | About::Command(session, _)) => {
            ClientError::SessionNotUsable {
                session,
                reason: message,
            }
        }
        (409, _) => ClientError::Conflict(message),
        (504, About::Open(agent)) => ClientError::OpenTimedOut {
            agent: agent.to_string(),
        },
        (400, _) => ClientError::BadRequest(message),
        (503, _) => ClientError::Unavailable(message),
        (500..=599, _) => ClientError::Server(message),
        _ => ClientError::Protocol(format!("HTTP {status}: {message}")),
    }
}

/// An error status of a file request without a code. Where the session and the file share a
/// status, the file is the likelier subject (the session was just checked or opened); a 403
/// says only what the server said, as it may be either.
fn file_by_status(
    status: u16,
    message: String,
    session: SessionId,
    op: FileOp,
    path: &str,
) -> ClientError {
    let agent = THE_AGENT.to_owned();
    match status {
        403 => ClientError::Forbidden(message),
        404 => missing_file(op, path),
        409 => ClientError::SessionInactive {
            session,
            reason: message,
        },
        400 | 416 => ClientError::TransferRefused {
            agent,
            reason: message,
        },
        422 => ClientError::ChecksumMismatch,
        503 => ClientError::TransferStopped(message),
        504 => ClientError::AgentTimedOut { agent },
        507 => ClientError::AgentDiskFull { agent },
        500..=599 => ClientError::Server(message),
        _ => ClientError::Protocol(format!("HTTP {status}: {message}")),
    }
}

/// No such file on the agent: the file to read, or the directory an upload would go in.
fn missing_file(op: FileOp, path: &str) -> ClientError {
    let agent = THE_AGENT.to_owned();
    match op {
        FileOp::Upload => ClientError::RemoteDirNotFound {
            agent,
            dir: parent_dir(path),
        },
        FileOp::Download | FileOp::UploadStatus => ClientError::RemoteFileNotFound {
            agent,
            path: path.to_owned(),
        },
    }
}

/// The directory part of a path on the agent (Unix or Windows separators).
fn parent_dir(path: &str) -> String {
    let trimmed = path.trim_end_matches(['/', '\\']);
    match trimmed.rfind(['/', '\\']) {
        Some(0) => "/".to_owned(),
        Some(end) => trimmed.get(..end).unwrap_or(trimmed).to_owned(),
        None => path.to_owned(),
    }
}

#[cfg(test)]
mod tests;
