//! [`ClientError`]: every way a call can fail, each a one-line message naming the cause and the
//! fix; and how text from the server or a library is made to fit in one.

use rmm_domain::{CommandId, SessionId};

/// Longest server message echoed in one of our errors: they must stay one line.
pub(crate) const MAX_ECHOED: usize = 200;

/// Every way a call can fail, each with a one-line message naming the cause and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL does not parse or is not http(s).
    #[error(
        "invalid server URL {url:?}: {reason}; pass --server http://HOST:PORT (or set RMM_SERVER)"
    )]
    InvalidServer { url: String, reason: String },
    /// No token to send: the user never logged in.
    #[error("not logged in: run `rmm login` (or set RMM_TOKEN)")]
    NotLoggedIn,
    /// The extra CA file (`--ca-file`) is unreadable or holds no certificate.
    #[error("cannot use the CA file {path} (--ca-file / RMM_CA_FILE): {reason}")]
    CaFile { path: String, reason: String },
    /// No connection to the server (refused, DNS, TLS, reset).
    #[error("cannot reach the server at {server}: {cause}; check --server / RMM_SERVER")]
    Unreachable { server: String, cause: String },
    /// Connected, but no answer in time.
    #[error(
        "the server at {server} did not answer within {secs} s: retry, or check --server / RMM_SERVER"
    )]
    TimedOut { server: String, secs: u64 },
    /// 401 on a token that has expired.
    #[error("your login expired: run `rmm login`")]
    TokenExpired,
    /// 401 on a token that is not valid here (another server's, or damaged).
    #[error("the server rejected your token ({0}): run `rmm login`")]
    TokenRejected(String),
    /// 401 on login.
    #[error("invalid username or password: check them and run `rmm login` again")]
    InvalidCredentials,
    /// 403 on a session or one of its commands.
    #[error("session {0} belongs to another user: use a session you opened (`rmm open AGENT`)")]
    SessionForbidden(SessionId),
    /// 403 elsewhere (e.g. a technician reading another user's audit entries).
    #[error("permission denied: {0}")]
    Forbidden(String),
    /// 404 on open: the agent is not connected to the server (or disconnected while opening).
    #[error("agent {agent} is offline: it is not connected to the server; check `rmm agents`")]
    AgentOffline { agent: String },
    /// 409 on open: the agent already has a tunnel (one per agent), perhaps another user's;
    /// the reason is the server's, which says whose.
    #[error(
        "cannot open a session to agent {agent}: {reason}; wait until that session ends, or have it closed (by whoever holds it, or by an admin with `rmm close SESSION`)"
    )]
    AgentBusy { agent: String, reason: String },
    /// 409 on open: the agent refused the tunnel.
    #[error("agent {agent} refused the tunnel: {reason}; check the agent's log")]
    AgentRefused { agent: String, reason: String },
    /// 504 on open: the agent did not confirm the tunnel in time; nothing was left open.
    #[error("agent {agent} did not confirm the tunnel in time: retry, or check the agent's log")]
    OpenTimedOut { agent: String },
    /// 404 on a session.
    #[error("session {0} not found: check the id, or open one with `rmm open AGENT`")]
    SessionNotFound(SessionId),
    /// 404 on a command of an existing session.
    #[error("command {0} not found in its session: check the id")]
    CommandNotFound(CommandId),
    /// 409 on a command: the session is closed, or its agent is gone, or the channel is busy.
    #[error(
        "session {session} cannot run commands: {reason}; open a new one with `rmm open AGENT`"
    )]
    SessionNotUsable { session: SessionId, reason: String },
    /// 409 elsewhere.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 400: the server found the request invalid.
    #[error("the server refused the request: {0}")]
    BadRequest(String),
    /// 503: overloaded, or the audit log cannot be written; nothing was done.
    #[error("the server is busy ({0}): retry shortly")]
    Unavailable(String),
    /// 500 and other 5xx.
    #[error("the server failed ({0}): see the server's log")]
    Server(String),
    /// An answer this client cannot read.
    #[error("unexpected answer from the server: {0}; is --server an rmm server of this version?")]
    Protocol(String),
    /// 404 on a download: the agent has no such file.
    #[error("no such file on {agent}: {path} (404); check the path")]
    RemoteFileNotFound { agent: String, path: String },
    /// 404 on an upload: the directory the file would go in does not exist.
    #[error("no such directory on {agent}: {dir} (404); create it first, or check the path")]
    RemoteDirNotFound { agent: String, dir: String },
    /// 403 from the agent: the operating system denied it (the reason says which).
    #[error("permission denied on {agent}: {reason}; pick a path the agent's user may {verb}")]
    RemotePermissionDenied {
        agent: String,
        reason: String,
        verb: &'static str,
    },
    /// 400 on a transfer: a relative path, a file where a directory is needed, an offset the
    /// agent cannot resume from (and, from a server without error codes, a directory where a
    /// file is needed).
    #[error("{agent} refused the transfer: {reason}")]
    TransferRefused { agent: String, reason: String },
    /// 400 on a transfer: the path on the agent is a directory, where a file is needed.
    #[error("{path} is a directory on {agent}: name a file")]
    RemoteIsDirectory { agent: String, path: String },
    /// 400 on a transfer: the path on the agent is a device, FIFO or socket (`/dev/zero`);
    /// nothing was read or written.
    #[error(
        "{path} on {agent} is not a regular file (a device, FIFO or socket): name a regular file"
    )]
    RemoteNotARegularFile { agent: String, path: String },
    /// 400 on a transfer: the path, or a name in it, is too long (for the server's limit or
    /// the agent's file system; the reason says which).
    #[error("the path is too long for {agent}: {reason}; use a shorter path")]
    RemotePathTooLong { agent: String, reason: String },
    /// 400 on a transfer: the path cannot name a file (a NUL byte).
    #[error("the path cannot name a file on {agent}: {reason}; remove the stray character")]
    RemoteInvalidPath { agent: String, reason: String },
    /// 409 on a transfer: the agent predates file transfer.
    #[error("{agent} cannot transfer files: its rmm-agent is too old; upgrade it")]
    FilesUnsupported { agent: String },
    /// 409 on a transfer: the session is no longer active.
    #[error(
        "session {session} cannot transfer files: {reason}; run again (a new session is opened) or `rmm open AGENT`"
    )]
    SessionInactive { session: SessionId, reason: String },
    /// 409 on a terminal: the agent predates interactive terminals (or runs where they are
    /// not supported yet).
    #[error(
        "{agent} cannot open terminals: its rmm-agent is too old or its platform has none yet; upgrade it, or use `rmm exec`"
    )]
    TerminalsUnsupported { agent: String },
    /// 409 on a command with stdin: the agent predates command stdin.
    #[error("{agent} cannot feed a command's standard input: its rmm-agent is too old; upgrade it")]
    StdinUnsupported { agent: String },
    /// 504 on a terminal: the agent did not start it in time.
    #[error("the agent did not start the terminal in time: retry, or check the agent's log")]
    TerminalTimedOut,
    /// 404 on a recording.
    #[error("no recording {0}; list them with `rmm recordings`")]
    RecordingNotFound(uuid::Uuid),
    /// 422, or a local check: the bytes that arrived do not hash to what was expected.
    #[error("checksum mismatch: the file changed during transfer; run again")]
    ChecksumMismatch,
    /// 507: the agent could not write for want of space.
    #[error("the agent's disk is full: free some space on {agent} and run again")]
    AgentDiskFull { agent: String },
    /// 504 on a transfer: the agent did not answer the server in time.
    #[error("{agent} did not answer in time: check `rmm agents`, then run again with --resume")]
    AgentTimedOut { agent: String },
    /// 503 on a transfer, or its body broke off: the agent went away or the tunnel is busy.
    #[error("the transfer stopped: {0}; run again with --resume to continue")]
    TransferStopped(String),
}

impl ClientError {
    /// The same error naming the agent as the user did (`web-01` rather than its id).
    #[must_use]
    pub fn naming_agent(self, label: &str) -> Self {
        let agent = label.to_owned();
        match self {
            Self::AgentOffline { .. } => Self::AgentOffline { agent },
            Self::AgentBusy { reason, .. } => Self::AgentBusy { agent, reason },
            Self::AgentRefused { reason, .. } => Self::AgentRefused { agent, reason },
            Self::OpenTimedOut { .. } => Self::OpenTimedOut { agent },
            Self::RemoteFileNotFound { path, .. } => Self::RemoteFileNotFound { agent, path },
            Self::RemoteDirNotFound { dir, .. } => Self::RemoteDirNotFound { agent, dir },
            Self::RemotePermissionDenied { reason, verb, .. } => Self::RemotePermissionDenied {
                agent,
                reason,
                verb,
            },
            Self::TransferRefused { reason, .. } => Self::TransferRefused { agent, reason },
            Self::RemoteIsDirectory { path, .. } => Self::RemoteIsDirectory { agent, path },
            Self::RemoteNotARegularFile { path, .. } => Self::RemoteNotARegularFile { agent, path },
            Self::RemotePathTooLong { reason, .. } => Self::RemotePathTooLong { agent, reason },
            Self::RemoteInvalidPath { reason, .. } => Self::RemoteInvalidPath { agent, reason },
            Self::FilesUnsupported { .. } => Self::FilesUnsupported { agent },
            Self::TerminalsUnsupported { .. } => Self::TerminalsUnsupported { agent },
            Self::StdinUnsupported { .. } => Self::StdinUnsupported { agent },
            Self::AgentDiskFull { .. } => Self::AgentDiskFull { agent },
            Self::AgentTimedOut { .. } => Self::AgentTimedOut { agent },
            other => other,
        }
    }
}

/// Collapses whitespace and control characters so a message stays on one line, and bounds
/// its length.
pub(crate) fn one_line(text: &str) -> String {
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    line.retain(|c| !c.is_control());
    if line.chars().count() > MAX_ECHOED {
        line = line.chars().take(MAX_ECHOED).collect::<String>() + "…";
    }
    line
}

/// The innermost cause of an error: reqwest's own message only says which request failed.
/// A certificate the client does not trust gets the hint of the fix.
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    with_certificate_hint(one_line(&cause.to_string()))
}

/// `cause`, with how to trust a private CA when it is rustls refusing the server's certificate.
pub(crate) fn with_certificate_hint(cause: String) -> String {
    if cause.contains("invalid peer certificate") {
        format!("{cause} (a certificate from a private CA? pass --ca-file PATH or set RMM_CA_FILE)")
    } else {
        cause
    }
}
