//! The technicians' API client, as the `rmm` CLI uses it: one typed method per HTTP operation
//! of [`crate::http`] (reqwest), the session stream WebSocket of [`crate::client_ws`]
//! (tokio-tungstenite), and [`ClientError`], whose messages name the cause and the fix in one
//! line. File transfers stream both ways: an upload's body is pulled from the caller's stream
//! as the connection takes it, a download's body is read chunk by chunk, so memory stays
//! bounded whatever the file's size.
//!
//! The response types here are the reading side of the server's DTOs: those are poem-openapi
//! objects that only serialize, so the client declares what it reads, with the same field
//! names (the end-to-end tests of the CLI hold the two together). Stream frames are decoded
//! with the server's own [`rmm_protocol`] types, not a copy.
//!
//! It must not know about terminals, config files or exit codes: that is the CLI's.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::{Stream, StreamExt as _};
use reqwest::{Method, Url};
use rmm_domain::{AgentId, CommandId, CommandStatus, SessionId};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use rmm_protocol::{AgentMessage, DecodeError};

/// How long to wait for a TCP (and TLS) connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an ordinary request may take. Opening a tunnel waits for the agent and
/// cancelling waits for the command's end (each at most 10 s by default on the server).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Added to a long poll's `wait`: the server holds the request that long, then answers.
const LONG_POLL_MARGIN: Duration = Duration::from_secs(30);
/// Longest server message echoed in one of our errors: they must stay one line.
const MAX_ECHOED: usize = 200;
/// How long a file transfer may show no progress (no upload chunk taken, no download chunk
/// given, no answer) before it is given up. Longer than the server's own wait for its agent
/// (600 s, hashing a large file included), which answers 504 first: this only catches a
/// server that went silent.
const TRANSFER_STALL: Duration = Duration::from_secs(630);
/// What an agent is called in file errors until [`ClientError::naming_agent`] names it.
const THE_AGENT: &str = "the agent";

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
    /// 409 on open: the agent already has a tunnel (one per agent) or refused it.
    #[error(
        "cannot open a session to agent {agent}: {reason}; close yours with `rmm close`, or retry when the other one ends"
    )]
    AgentBusy { agent: String, reason: String },
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
    /// 400 on a transfer: a relative path, a directory where a file is needed, an offset the
    /// agent cannot resume from.
    #[error("{agent} refused the transfer: {reason}")]
    TransferRefused { agent: String, reason: String },
    /// 409 on a transfer: the agent predates file transfer.
    #[error("{agent} cannot transfer files: its rmm-agent is too old; upgrade it")]
    FilesUnsupported { agent: String },
    /// 409 on a transfer: the session is no longer active.
    #[error(
        "session {session} cannot transfer files: {reason}; run again (a new session is opened) or `rmm open AGENT`"
    )]
    SessionInactive { session: SessionId, reason: String },
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
            Self::OpenTimedOut { .. } => Self::OpenTimedOut { agent },
            Self::RemoteFileNotFound { path, .. } => Self::RemoteFileNotFound { agent, path },
            Self::RemoteDirNotFound { dir, .. } => Self::RemoteDirNotFound { agent, dir },
            Self::RemotePermissionDenied { reason, verb, .. } => Self::RemotePermissionDenied {
                agent,
                reason,
                verb,
            },
            Self::TransferRefused { reason, .. } => Self::TransferRefused { agent, reason },
            Self::FilesUnsupported { .. } => Self::FilesUnsupported { agent },
            Self::AgentDiskFull { .. } => Self::AgentDiskFull { agent },
            Self::AgentTimedOut { .. } => Self::AgentTimedOut { agent },
            other => other,
        }
    }
}

/// A technician's JWT. Never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

/// Why a string is not usable as a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenParseError {
    #[error("the token is empty")]
    Empty,
    #[error("the token contains whitespace or control characters")]
    BadCharacter,
}

impl Token {
    /// A token as stored or pasted: surrounding whitespace is trimmed.
    ///
    /// # Errors
    /// [`TokenParseError`] when it is empty or has inner whitespace or control characters
    /// (it could not travel in an `Authorization` header).
    pub fn parse(value: &str) -> Result<Self, TokenParseError> {
        let value = value.trim();
        if value.is_empty() {
            Err(TokenParseError::Empty)
        } else if value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
        {
            Err(TokenParseError::BadCharacter)
        } else {
            Ok(Self(value.to_owned()))
        }
    }

    /// The secret itself, to store or send.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Self::parse(&value).map_err(serde::de::Error::custom)
    }
}

/// `POST /api/v1/auth/login`.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    pub token: Token,
    pub expires_at: DateTime<Utc>,
}

/// One agent of `GET /api/v1/agents`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentDto {
    pub agent_id: Uuid,
    pub name: String,
    /// Whether the agent holds a WebSocket to the server now.
    pub connected: bool,
    /// `heartbeat`, `tunnel`, or `offline`.
    pub mode: String,
    pub last_seen: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
}

impl AgentDto {
    #[must_use]
    pub fn id(&self) -> AgentId {
        AgentId::from_uuid(self.agent_id)
    }
}

/// `POST /api/v1/tunnel/open`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenedResponse {
    pub session_id: Uuid,
    pub status: String,
}

impl OpenedResponse {
    #[must_use]
    pub fn session(&self) -> SessionId {
        SessionId::from_uuid(self.session_id)
    }
}

/// `POST /api/v1/tunnel/close`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClosedResponse {
    pub status: String,
    pub session_id: Uuid,
    pub close_reason: String,
}

/// `GET /api/v1/tunnel/status/{session_id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusDto {
    pub session_id: Uuid,
    pub agent_id: Uuid,
    /// `pending`, `active` or `closed`.
    pub status: String,
    pub opened_at: DateTime<Utc>,
    pub last_activity: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<String>,
}

impl StatusDto {
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.status == "active"
    }
}

/// `POST /api/v1/tunnel/{session_id}/command` (202).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandStartedResponse {
    pub command_id: Uuid,
    /// The channel its frames carry on the session stream.
    pub channel_id: String,
    pub timeout_secs: u64,
}

impl CommandStartedResponse {
    #[must_use]
    pub fn id(&self) -> CommandId {
        CommandId::from_uuid(self.command_id)
    }
}

/// `GET /api/v1/tunnel/{session_id}/commands/{command_id}` (and its `DELETE`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandDto {
    pub command_id: Uuid,
    pub channel_id: String,
    pub session_id: Uuid,
    pub command: String,
    /// `running`, `completed`, `timed_out`, `cancelled` or `failed`.
    pub status: String,
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Stored output, decoded lossily: use [`ApiClient::command_output`] for the bytes.
    pub stdout: String,
    pub stderr: String,
    /// Bytes written in all, stored or not (final once the command has ended).
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub timeout_secs: u64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl CommandDto {
    /// The status as the domain's; `None` for a status this client does not know (a newer
    /// server), which callers treat as ended.
    #[must_use]
    pub fn state(&self) -> Option<CommandStatus> {
        CommandStatus::parse(&self.status)
    }

    #[must_use]
    pub fn is_running(&self) -> bool {
        self.state().is_some_and(CommandStatus::is_running)
    }

    /// Bytes written in all to `stream`.
    #[must_use]
    pub fn bytes_written(&self, stream: OutputKind) -> u64 {
        match stream {
            OutputKind::Stdout => self.stdout_bytes,
            OutputKind::Stderr => self.stderr_bytes,
        }
    }
}

/// One entry of `GET /api/v1/audit`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntryDto {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `tunnel_open`, `tunnel_close`, `command`, `command_end`, ...
    pub event: String,
    pub tech_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// A page of the audit log, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntryDto>,
    /// Pass as [`AuditFilter::before`] for the next (older) page; `None` on the last.
    pub next_before: Option<i64>,
}

/// The filters of `GET /api/v1/audit`; unset fields are not sent.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub agent: Option<AgentId>,
    pub session: Option<SessionId>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Entries per page (the server clamps to 1..=500; default 50).
    pub limit: Option<u32>,
    /// Only entries older than this entry id (paging).
    pub before: Option<i64>,
}

/// Which output stream of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Stdout,
    Stderr,
}

impl OutputKind {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// `PUT /api/v1/tunnel/{session_id}/files` (201): the file is in place and verified.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadedResponse {
    pub path: String,
    /// The whole file's size, resumed bytes included.
    pub size: u64,
    /// SHA-256 of the whole file (hex), as the agent computed it.
    pub sha256: String,
}

/// `GET /api/v1/tunnel/{session_id}/files/upload-status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadStatusResponse {
    pub path: String,
    /// Bytes the agent holds of an interrupted upload to `path` (0 when none): the offset to
    /// resume from.
    pub received: u64,
}

/// What a file request does: decides how its error statuses read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileOp {
    Upload,
    Download,
    UploadStatus,
}

#[derive(Serialize)]
struct LoginBody<'a> {
    username: &'a str,
    password: &'a str,
}

#[derive(Serialize)]
struct OpenBody {
    agent_id: Uuid,
}

#[derive(Serialize)]
struct CloseBody {
    session_id: Uuid,
}

#[derive(Serialize)]
struct CommandBody<'a> {
    command: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_secs: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// What a request was about: decides how an error status reads.
#[derive(Debug, Clone)]
enum About {
    Login,
    Agents,
    Open(AgentId),
    Session(SessionId),
    Command(SessionId, CommandId),
    Audit,
    File {
        session: SessionId,
        op: FileOp,
        path: String,
    },
}

/// The client. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct ApiClient {
    base: Url,
    /// The server as the user gave it, for messages.
    server: String,
    http: reqwest::Client,
    token: Option<Token>,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("server", &self.server)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client of the server at `server` (`http://host:port`, optionally with a path prefix),
    /// sending `token` where the API needs one. A TLS crypto provider must be installed
    /// (`rustls::crypto::ring::default_provider().install_default()`) before this is called.
    ///
    /// # Errors
    /// [`ClientError::InvalidServer`] when `server` is not an http(s) URL;
    /// [`ClientError::Protocol`] when the HTTP client cannot be built.
    pub fn new(server: &str, token: Option<Token>) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidServer {
            url: server.to_owned(),
            reason: reason.to_owned(),
        };
        let mut base = Url::parse(server.trim()).map_err(|e| invalid(&e.to_string()))?;
        // The agent's RMM_SERVER is ws(s)://: the same variable in a shared environment
        // names the same server.
        let scheme = match base.scheme() {
            "http" | "ws" => "http",
            "https" | "wss" => "https",
            _ => return Err(invalid("the scheme must be http or https")),
        };
        base.set_scheme(scheme)
            .map_err(|()| invalid("the scheme must be http or https"))?;
        if base.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no host"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("no query or fragment allowed"));
        }
        // Endpoint paths are joined relative to the base, so a path prefix must end with '/'.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("rmm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Protocol(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            server: base.as_str().trim_end_matches('/').to_owned(),
            base,
            http,
            token,
        })
    }

    /// The server's base URL, as shown in messages.
    #[must_use]
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Logs in.
    ///
    /// # Errors
    /// [`ClientError::InvalidCredentials`] on a wrong username or password; transport and
    /// server errors as for every call.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<TokenResponse, ClientError> {
        let request = self
            .request(Method::POST, "api/v1/auth/login", false)?
            .json(&LoginBody { username, password });
        self.json(request, About::Login, REQUEST_TIMEOUT).await
    }

    /// Every registered agent, by name.
    ///
    /// # Errors
    /// [`ClientError::NotLoggedIn`], [`ClientError::TokenExpired`], transport and server
    /// errors.
    pub async fn agents(&self) -> Result<Vec<AgentDto>, ClientError> {
        let request = self.request(Method::GET, "api/v1/agents", true)?;
        self.json(request, About::Agents, REQUEST_TIMEOUT).await
    }

    /// Opens a tunnel; answers once the agent has confirmed it.
    ///
    /// # Errors
    /// [`ClientError::AgentOffline`] (404), [`ClientError::AgentBusy`] (409),
    /// [`ClientError::OpenTimedOut`] (504), [`ClientError::Unavailable`] (503), auth,
    /// transport and server errors. Name the agent with [`ClientError::naming_agent`].
    pub async fn open_tunnel(&self, agent: AgentId) -> Result<OpenedResponse, ClientError> {
        let request = self
            .request(Method::POST, "api/v1/tunnel/open", true)?
            .json(&OpenBody {
                agent_id: agent.as_uuid(),
            });
        self.json(request, About::Open(agent), REQUEST_TIMEOUT)
            .await
    }

    /// Closes a tunnel (idempotent).
    ///
    /// # Errors
    /// [`ClientError::SessionNotFound`], [`ClientError::SessionForbidden`], auth, transport
    /// and server errors.
    pub async fn close_tunnel(&self, session: SessionId) -> Result<ClosedResponse, ClientError> {
        let request = self
            .request(Method::POST, "api/v1/tunnel/close", true)?
            .json(&CloseBody {
                session_id: session.as_uuid(),
            });
        self.json(request, About::Session(session), REQUEST_TIMEOUT)
            .await
    }

    /// A session's status, closed sessions included.
    ///
    /// # Errors
    /// [`ClientError::SessionNotFound`], [`ClientError::SessionForbidden`], auth, transport
    /// and server errors.
    pub async fn tunnel_status(&self, session: SessionId) -> Result<StatusDto, ClientError> {
        let path = format!("api/v1/tunnel/status/{session}");
        let request = self.request(Method::GET, &path, true)?;
        self.json(request, About::Session(session), REQUEST_TIMEOUT)
            .await
    }

    /// Runs `command` (through the agent's shell) in the session; answers at once.
    ///
    /// # Errors
    /// [`ClientError::BadRequest`] for an empty or too long command or a bad timeout,
    /// [`ClientError::SessionNotUsable`] (409: closed, agent gone, channel busy),
    /// [`ClientError::Unavailable`] (503: agent saturated or audit log unwritable), session,
    /// auth, transport and server errors.
    pub async fn run_command(
        &self,
        session: SessionId,
        command: &str,
        timeout_secs: Option<u64>,
    ) -> Result<CommandStartedResponse, ClientError> {
        let path = format!("api/v1/tunnel/{session}/command");
        let request = self.request(Method::POST, &path, true)?.json(&CommandBody {
            command,
            timeout_secs,
        });
        self.json(request, About::Session(session), REQUEST_TIMEOUT)
            .await
    }

    /// A command's status and stored output; with `wait`, the server holds the request until
    /// the command ends or `wait` passes (it honours at most 300 s).
    ///
    /// # Errors
    /// [`ClientError::CommandNotFound`], session, auth, transport and server errors.
    pub async fn command(
        &self,
        session: SessionId,
        command: CommandId,
        wait: Option<Duration>,
    ) -> Result<CommandDto, ClientError> {
        let path = format!("api/v1/tunnel/{session}/commands/{command}");
        let mut url = self.url(&path)?;
        if let Some(wait) = wait {
            url.query_pairs_mut()
                .append_pair("wait", &wait.as_secs().to_string());
        }
        let request = self.authorized(self.http.get(url))?;
        let timeout = wait.map_or(REQUEST_TIMEOUT, |w| w + LONG_POLL_MARGIN);
        self.json(request, About::Command(session, command), timeout)
            .await
    }

    /// Cancels a running command (the agent kills its process group); answers with the
    /// command once it has ended, or after the server's wait (10 s).
    ///
    /// # Errors
    /// As [`Self::command`].
    pub async fn cancel_command(
        &self,
        session: SessionId,
        command: CommandId,
    ) -> Result<CommandDto, ClientError> {
        let path = format!("api/v1/tunnel/{session}/commands/{command}");
        let request = self.request(Method::DELETE, &path, true)?;
        self.json(request, About::Command(session, command), REQUEST_TIMEOUT)
            .await
    }

    /// The exact stored bytes of one output stream, streamed in chunks.
    ///
    /// # Errors
    /// As [`Self::command`].
    pub async fn command_output(
        &self,
        session: SessionId,
        command: CommandId,
        stream: OutputKind,
    ) -> Result<RawOutput, ClientError> {
        let path = format!(
            "api/v1/tunnel/{session}/commands/{command}/{}",
            stream.as_str()
        );
        let request = self.request(Method::GET, &path, true)?;
        // No timeout on the whole request: the body may be large. The answer's head and then
        // each chunk are awaited with one instead.
        let sending = self.send(request, About::Command(session, command), None);
        let response = tokio::time::timeout(REQUEST_TIMEOUT, sending)
            .await
            .map_err(|_| ClientError::TimedOut {
                server: self.server.clone(),
                secs: REQUEST_TIMEOUT.as_secs(),
            })??;
        Ok(RawOutput {
            response,
            server: self.server.clone(),
        })
    }

    /// One page of the audit log, newest first.
    ///
    /// # Errors
    /// [`ClientError::Forbidden`] when a technician asks for other users' entries, auth,
    /// transport and server errors.
    pub async fn audit(&self, filter: &AuditFilter) -> Result<AuditPage, ClientError> {
        let mut url = self.url("api/v1/audit")?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(agent) = filter.agent {
                query.append_pair("agent_id", &agent.to_string());
            }
            if let Some(session) = filter.session {
                query.append_pair("session_id", &session.to_string());
            }
            if let Some(since) = filter.since {
                query.append_pair("since", &since.to_rfc3339_opts(SecondsFormat::AutoSi, true));
            }
            if let Some(until) = filter.until {
                query.append_pair("until", &until.to_rfc3339_opts(SecondsFormat::AutoSi, true));
            }
            if let Some(limit) = filter.limit {
                query.append_pair("limit", &limit.to_string());
            }
            if let Some(before) = filter.before {
                query.append_pair("before", &before.to_string());
            }
        }
        let request = self.authorized(self.http.get(url))?;
        self.json(request, About::Audit, REQUEST_TIMEOUT).await
    }

    /// Uploads `body` to `path` on the session's agent, from byte `offset`: 0 for a whole
    /// file; to resume, the `received` of [`Self::upload_status`], with `body` the rest of the
    /// file. `sha256` is the whole file's (hex): the agent renames the file into place only
    /// when what it holds hashes to it. The body is pulled as the connection takes it, so
    /// memory stays bounded; an upload broken off leaves the agent's partial file for a resume.
    ///
    /// # Errors
    /// [`ClientError::ChecksumMismatch`] (422), [`ClientError::RemoteDirNotFound`] (404),
    /// [`ClientError::RemotePermissionDenied`] (403), [`ClientError::TransferRefused`] (400:
    /// not absolute, a directory, an offset the agent does not hold),
    /// [`ClientError::AgentDiskFull`] (507), [`ClientError::FilesUnsupported`] and
    /// [`ClientError::SessionInactive`] (409), [`ClientError::TransferStopped`] (503),
    /// [`ClientError::AgentTimedOut`] (504), [`ClientError::TimedOut`] when nothing moves for
    /// 630 s; session, auth, transport and server errors. A connection that breaks once the
    /// body flows, and a `body` that fails (the caller knows its own error better), read as
    /// [`ClientError::TransferStopped`]. Name the agent with [`ClientError::naming_agent`].
    pub async fn upload_file<S>(
        &self,
        session: SessionId,
        path: &str,
        offset: u64,
        sha256: &str,
        body: S,
    ) -> Result<UploadedResponse, ClientError>
    where
        S: Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static,
    {
        let mut url = self.url(&format!("api/v1/tunnel/{session}/files"))?;
        url.query_pairs_mut()
            .append_pair("path", path)
            .append_pair("offset", &offset.to_string())
            .append_pair("sha256", sha256);
        let activity = Activity::new();
        let body = {
            let activity = activity.clone();
            body.inspect(move |_| activity.touch())
        };
        let request = self
            .authorized(self.http.put(url))?
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body));
        let about = About::File {
            session,
            op: FileOp::Upload,
            path: path.to_owned(),
        };
        // No timeout on the whole request: the body may take hours. It fails when it stops
        // moving instead.
        let response = tokio::select! {
            response = self.send(request, about, None) => response.map_err(|e| match e {
                // Once the body flows, a broken connection is a transfer cut short (or an early
                // answer lost: an HTTP/1 server that refuses mid-body answers and closes, and
                // the write can fail before the answer is read). Either way the agent keeps
                // what it received.
                ClientError::Unreachable { cause, .. } if activity.moved() => {
                    ClientError::TransferStopped(format!("the connection broke during the upload ({cause})"))
                }
                other => other,
            })?,
            () = activity.stalled(TRANSFER_STALL) => return Err(self.timed_out(TRANSFER_STALL)),
        };
        self.read_json(response, REQUEST_TIMEOUT).await
    }

    /// How many bytes of an interrupted upload to `path` the agent holds: the offset to
    /// resume from (0 when none).
    ///
    /// # Errors
    /// As [`Self::upload_file`], less the checksum and disk errors.
    pub async fn upload_status(
        &self,
        session: SessionId,
        path: &str,
    ) -> Result<UploadStatusResponse, ClientError> {
        let mut url = self.url(&format!("api/v1/tunnel/{session}/files/upload-status"))?;
        url.query_pairs_mut().append_pair("path", path);
        let request = self.authorized(self.http.get(url))?;
        let about = About::File {
            session,
            op: FileOp::UploadStatus,
            path: path.to_owned(),
        };
        self.json(request, about, REQUEST_TIMEOUT).await
    }

    /// Downloads `path` from the session's agent, from byte `from` (`Range: bytes=from-`
    /// when not 0). Answers once the agent has hashed the file: the answer carries the whole
    /// file's size and SHA-256, and the body follows through [`FileDownload::chunk`].
    ///
    /// # Errors
    /// [`ClientError::RemoteFileNotFound`] (404), [`ClientError::RemotePermissionDenied`]
    /// (403), [`ClientError::TransferRefused`] (400: not absolute, a directory, `from` past
    /// the end), [`ClientError::FilesUnsupported`] and [`ClientError::SessionInactive`]
    /// (409), [`ClientError::TransferStopped`] (503), [`ClientError::AgentTimedOut`] (504),
    /// [`ClientError::Protocol`] when the size, range or SHA-256 headers are missing or do not
    /// fit; session, auth, transport and server errors. Name the agent with
    /// [`ClientError::naming_agent`].
    pub async fn download_file(
        &self,
        session: SessionId,
        path: &str,
        from: u64,
    ) -> Result<FileDownload, ClientError> {
        let mut url = self.url(&format!("api/v1/tunnel/{session}/files"))?;
        url.query_pairs_mut().append_pair("path", path);
        let mut request = self.authorized(self.http.get(url))?;
        if from > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={from}-"));
        }
        let about = About::File {
            session,
            op: FileOp::Download,
            path: path.to_owned(),
        };
        // The agent hashes the whole file before the answer: its head may take minutes.
        let response = tokio::time::timeout(TRANSFER_STALL, self.send(request, about, None))
            .await
            .map_err(|_| self.timed_out(TRANSFER_STALL))??;
        FileDownload::new(response, from, self.server.clone())
    }

    /// Connects to the session's stream WebSocket: every frame of the session from now on,
    /// after a replay of the recent ones. Connect before running a command so none of its
    /// output is missed.
    ///
    /// # Errors
    /// Session, auth and transport errors, as for the HTTP calls.
    pub async fn stream(&self, session: SessionId) -> Result<SessionStream, ClientError> {
        let mut url = self.url(&format!("api/v1/tunnel/{session}/stream"))?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .map_err(|()| ClientError::Protocol("cannot form the stream URL".into()))?;
        let token = self.token.as_ref().ok_or(ClientError::NotLoggedIn)?;
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::Protocol(format!("cannot form the stream request: {e}")))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| ClientError::TokenRejected("it is not a valid header value".into()))?;
        request.headers_mut().insert("authorization", bearer);
        let connecting = tokio_tungstenite::connect_async(request);
        match tokio::time::timeout(REQUEST_TIMEOUT, connecting).await {
            Ok(Ok((socket, _))) => Ok(SessionStream {
                socket,
                server: self.server.clone(),
                close_reason: None,
            }),
            Ok(Err(WsError::Http(response))) => {
                let message = response
                    .body()
                    .as_deref()
                    .map(error_text)
                    .unwrap_or_default();
                Err(status_error(
                    response.status().as_u16(),
                    message,
                    About::Session(session),
                ))
            }
            Ok(Err(WsError::Io(e))) => Err(ClientError::Unreachable {
                server: self.server.clone(),
                cause: e.to_string(),
            }),
            Ok(Err(e)) => Err(ClientError::Protocol(format!(
                "the stream handshake failed: {}",
                one_line(&e.to_string())
            ))),
            Err(_) => Err(ClientError::TimedOut {
                server: self.server.clone(),
                secs: REQUEST_TIMEOUT.as_secs(),
            }),
        }
    }

    fn url(&self, path: &str) -> Result<Url, ClientError> {
        self.base
            .join(path)
            .map_err(|e| ClientError::Protocol(format!("cannot form the URL of {path}: {e}")))
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        authorized: bool,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let request = self.http.request(method, self.url(path)?);
        if authorized {
            self.authorized(request)
        } else {
            Ok(request)
        }
    }

    fn authorized(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let token = self.token.as_ref().ok_or(ClientError::NotLoggedIn)?;
        Ok(request.bearer_auth(token.expose()))
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        about: About,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let response = self.send(request, about, Some(timeout)).await?;
        self.read_json(response, timeout).await
    }

    /// The JSON body of a successful answer, read within `timeout`.
    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        response: reqwest::Response,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let url = response.url().path().to_owned();
        let body = tokio::time::timeout(timeout, response.bytes())
            .await
            .map_err(|_| self.timed_out(timeout))?
            .map_err(|e| self.transport(&e, timeout))?;
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::Protocol(format!("cannot read the answer to {url}: {e}")))
    }

    fn timed_out(&self, after: Duration) -> ClientError {
        ClientError::TimedOut {
            server: self.server.clone(),
            secs: after.as_secs(),
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        about: About,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, ClientError> {
        let request = match timeout {
            Some(timeout) => request.timeout(timeout),
            None => request,
        };
        let (client, request) = request.build_split();
        let request = request.map_err(|e| {
            ClientError::Protocol(format!("cannot form the request: {}", root_cause(&e)))
        })?;
        // A GET that fails in transit is sent once more: a pooled connection the server has
        // just closed fails the first request sent on it, and a GET is safe to repeat.
        let again = if request.method() == Method::GET {
            request.try_clone()
        } else {
            None
        };
        let response = match (client.execute(request).await, again) {
            (Err(e), Some(again)) if !e.is_timeout() && !e.is_connect() => {
                client.execute(again).await
            }
            (sent, _) => sent,
        }
        .map_err(|e| self.transport(&e, timeout.unwrap_or(REQUEST_TIMEOUT)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        let mut message = error_text(&body);
        if message.is_empty() {
            message = status
                .canonical_reason()
                .unwrap_or("no reason given")
                .to_owned();
        }
        Err(status_error(status.as_u16(), message, about))
    }

    fn transport(&self, e: &reqwest::Error, timeout: Duration) -> ClientError {
        if e.is_timeout() {
            ClientError::TimedOut {
                server: self.server.clone(),
                secs: timeout.as_secs(),
            }
        } else if e.is_decode() {
            ClientError::Protocol(root_cause(e))
        } else {
            ClientError::Unreachable {
                server: self.server.clone(),
                cause: root_cause(e),
            }
        }
    }
}

/// The stored bytes of one output stream, as they arrive.
#[derive(Debug)]
pub struct RawOutput {
    response: reqwest::Response,
    server: String,
}

impl RawOutput {
    /// The next chunk; `None` at the end.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] when the connection fails mid-body,
    /// [`ClientError::TimedOut`] when no chunk arrives for a minute.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, ClientError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.response.chunk()).await {
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(e)) => Err(ClientError::Unreachable {
                server: self.server.clone(),
                cause: root_cause(&e),
            }),
            Err(_) => Err(ClientError::TimedOut {
                server: self.server.clone(),
                secs: REQUEST_TIMEOUT.as_secs(),
            }),
        }
    }
}

/// A download under way: the whole file's facts, and its bytes from [`Self::offset`].
#[derive(Debug)]
pub struct FileDownload {
    /// The whole file's size.
    pub size: u64,
    /// SHA-256 of the whole file (lowercase hex), as the agent computed it before sending.
    pub sha256: String,
    /// The byte the body starts at: the one asked for, or 0 when the server sent the whole
    /// file (a server that ignores ranges).
    pub offset: u64,
    response: reqwest::Response,
    server: String,
}

impl FileDownload {
    fn new(response: reqwest::Response, from: u64, server: String) -> Result<Self, ClientError> {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let bad = |what: &str| ClientError::Protocol(format!("the download {what}"));
        let sha256 = header("x-content-sha256")
            .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| bad("has no valid X-Content-SHA256 header"))?
            .to_ascii_lowercase();
        let length: u64 = header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("has no Content-Length"))?;
        let (offset, size) = if response.status() == reqwest::StatusCode::PARTIAL_CONTENT {
            header("content-range")
                .and_then(content_range)
                .ok_or_else(|| bad("has no valid Content-Range"))?
        } else {
            (0, length)
        };
        if (offset != from && offset != 0) || offset > size || size - offset != length {
            return Err(bad(&format!(
                "does not fit: asked from byte {from}, got {length} bytes from {offset} of {size}"
            )));
        }
        Ok(Self {
            size,
            sha256,
            offset,
            response,
            server,
        })
    }

    /// The next chunk; `None` at the end of the body.
    ///
    /// # Errors
    /// [`ClientError::TransferStopped`] when the body breaks off (the agent went away, the
    /// connection failed), [`ClientError::TimedOut`] when no chunk arrives for 630 s.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, ClientError> {
        match tokio::time::timeout(TRANSFER_STALL, self.response.chunk()).await {
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(e)) => Err(ClientError::TransferStopped(format!(
                "the download broke off ({})",
                root_cause(&e)
            ))),
            Err(_) => Err(ClientError::TimedOut {
                server: self.server.clone(),
                secs: TRANSFER_STALL.as_secs(),
            }),
        }
    }
}

/// `bytes START-END/TOTAL`: START and TOTAL.
fn content_range(value: &str) -> Option<(u64, u64)> {
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// When a transfer last moved, shared with the body stream that moves it.
#[derive(Debug, Clone)]
struct Activity {
    start: tokio::time::Instant,
    /// Milliseconds from `start` to the last move.
    last: Arc<AtomicU64>,
    /// Whether it ever moved.
    moved: Arc<AtomicBool>,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: tokio::time::Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
            moved: Arc::new(AtomicBool::new(false)),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
        self.moved.store(true, Ordering::Relaxed);
    }

    fn moved(&self) -> bool {
        self.moved.load(Ordering::Relaxed)
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Resolves once nothing has moved for `limit`.
    async fn stalled(&self, limit: Duration) {
        loop {
            let idle = self.idle();
            if idle >= limit {
                return;
            }
            tokio::time::sleep(limit - idle).await;
        }
    }
}

/// A session's stream: the agent's frames (`tunnel_data`, `tunnel_error`) in the reference
/// format with the lossless extension, decoded with the server's [`AgentMessage`].
#[derive(Debug)]
pub struct SessionStream {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    server: String,
    close_reason: Option<String>,
}

impl SessionStream {
    /// The next message; `Ok(None)` once the server has closed the stream (see
    /// [`Self::close_reason`]). Frames of types this client does not know are skipped.
    /// Cancel-safe: no frame is lost when the future is dropped.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] when the connection fails, [`ClientError::Protocol`] for a
    /// frame that does not parse.
    pub async fn next_message(&mut self) -> Result<Option<AgentMessage>, ClientError> {
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Text(text))) => match AgentMessage::decode(&text) {
                    Ok(message) => return Ok(Some(message)),
                    Err(DecodeError::UnknownType(_)) => {}
                    Err(e) => {
                        return Err(ClientError::Protocol(format!(
                            "bad frame on the stream: {e}"
                        )));
                    }
                },
                Some(Ok(Message::Close(frame))) => {
                    self.close_reason = frame.map(|f| one_line(f.reason.as_str()));
                    return Ok(None);
                }
                Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Frame(_))) => {}
                Some(Err(e)) => {
                    return Err(ClientError::Unreachable {
                        server: self.server.clone(),
                        cause: format!("the session stream failed: {}", one_line(&e.to_string())),
                    });
                }
                None => return Ok(None),
            }
        }
    }

    /// Why the server closed the stream, if it said.
    #[must_use]
    pub fn close_reason(&self) -> Option<&str> {
        self.close_reason.as_deref()
    }

    /// Closes the stream politely (best effort).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.socket.close(None)).await;
    }
}

fn status_error(status: u16, message: String, about: About) -> ClientError {
    match (status, about) {
        (401, About::Login) => ClientError::InvalidCredentials,
        (401, _) if message.contains("expired") => ClientError::TokenExpired,
        (401, _) => ClientError::TokenRejected(message),
        (_, About::File { session, op, path }) => file_error(status, message, session, op, &path),
        (403, About::Session(session) | About::Command(session, _)) => {
            ClientError::SessionForbidden(session)
        }
        (403, _) => ClientError::Forbidden(message),
        (404, About::Open(agent)) => ClientError::AgentOffline {
            agent: agent.to_string(),
        },
        (404, About::Session(session)) => ClientError::SessionNotFound(session),
        // The server names what it did not find: the session, or the command in it.
        (404, About::Command(_, command)) if message.starts_with("command") => {
            ClientError::CommandNotFound(command)
        }
        (404, About::Command(session, _)) => ClientError::SessionNotFound(session),
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

/// An error status of a file request. The server says "session ..." when the session is the
/// problem; any other message is the agent's, about the file.
fn file_error(
    status: u16,
    message: String,
    session: SessionId,
    op: FileOp,
    path: &str,
) -> ClientError {
    let agent = THE_AGENT.to_owned();
    let about_session = message.starts_with("session ");
    match status {
        403 if about_session => ClientError::SessionForbidden(session),
        403 => ClientError::RemotePermissionDenied {
            agent,
            reason: message,
            verb: match op {
                FileOp::Upload => "write",
                FileOp::Download | FileOp::UploadStatus => "read",
            },
        },
        404 if about_session => ClientError::SessionNotFound(session),
        404 => match op {
            FileOp::Upload => ClientError::RemoteDirNotFound {
                agent,
                dir: parent_dir(path),
            },
            FileOp::Download | FileOp::UploadStatus => ClientError::RemoteFileNotFound {
                agent,
                path: path.to_owned(),
            },
        },
        409 if message.contains("does not support file transfer") => {
            ClientError::FilesUnsupported { agent }
        }
        409 => ClientError::SessionInactive {
            session,
            reason: message,
        },
        400 => ClientError::TransferRefused {
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

/// The directory part of a path on the agent (Unix or Windows separators).
fn parent_dir(path: &str) -> String {
    let trimmed = path.trim_end_matches(['/', '\\']);
    match trimmed.rfind(['/', '\\']) {
        Some(0) => "/".to_owned(),
        Some(end) => trimmed.get(..end).unwrap_or(trimmed).to_owned(),
        None => path.to_owned(),
    }
}

/// The `error` of a JSON error body, else the body as text; one line, bounded.
fn error_text(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => error,
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    one_line(&text)
}

/// Collapses whitespace and control characters so a message stays on one line, and bounds
/// its length.
fn one_line(text: &str) -> String {
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    line.retain(|c| !c.is_control());
    if line.chars().count() > MAX_ECHOED {
        line = line.chars().take(MAX_ECHOED).collect::<String>() + "…";
    }
    line
}

/// The innermost cause of an error: reqwest's own message only says which request failed.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    one_line(&cause.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const S: SessionId = SessionId::from_uuid(Uuid::from_u128(1));
    const A: AgentId = AgentId::from_uuid(Uuid::from_u128(2));
    const C: CommandId = CommandId::from_uuid(Uuid::from_u128(3));

    #[test]
    fn expired_tokens_are_told_apart_from_rejected_ones_and_from_bad_passwords() {
        assert!(matches!(
            status_error(401, "token expired: log in again".into(), About::Agents),
            ClientError::TokenExpired
        ));
        assert!(matches!(
            status_error(
                401,
                "token is expired: log in again".into(),
                About::Session(S)
            ),
            ClientError::TokenExpired
        ));
        assert!(matches!(
            status_error(401, "invalid token: log in again".into(), About::Agents),
            ClientError::TokenRejected(_)
        ));
        assert!(matches!(
            status_error(401, "invalid username or password".into(), About::Login),
            ClientError::InvalidCredentials
        ));
        assert_eq!(
            ClientError::TokenExpired.to_string(),
            "your login expired: run `rmm login`"
        );
    }

    #[test]
    fn statuses_read_according_to_what_was_asked() {
        let offline = status_error(404, "agent x is not connected".into(), About::Open(A));
        assert_eq!(
            offline.naming_agent("web-01").to_string(),
            "agent web-01 is offline: it is not connected to the server; check `rmm agents`"
        );
        assert!(matches!(
            status_error(403, "owned by another".into(), About::Command(S, C)),
            ClientError::SessionForbidden(s) if s == S
        ));
        assert!(matches!(
            status_error(404, "command x not found in this session".into(), About::Command(S, C)),
            ClientError::CommandNotFound(c) if c == C
        ));
        assert!(matches!(
            status_error(404, "session x not found".into(), About::Command(S, C)),
            ClientError::SessionNotFound(s) if s == S
        ));
        assert!(matches!(
            status_error(
                409,
                "agent already has an active session".into(),
                About::Open(A)
            ),
            ClientError::AgentBusy { .. }
        ));
        assert!(matches!(
            status_error(409, "session x is not active".into(), About::Session(S)),
            ClientError::SessionNotUsable { .. }
        ));
        assert!(matches!(
            status_error(504, "late".into(), About::Open(A)),
            ClientError::OpenTimedOut { .. }
        ));
        assert!(matches!(
            status_error(418, "teapot".into(), About::Audit),
            ClientError::Protocol(_)
        ));
    }

    fn file(op: FileOp, path: &str) -> About {
        About::File {
            session: S,
            op,
            path: path.to_owned(),
        }
    }

    #[test]
    fn file_errors_tell_the_session_from_the_file_and_name_the_agent() {
        let missing = status_error(
            404,
            "cannot open /x: No such file or directory (os error 2)".into(),
            file(FileOp::Download, "/x"),
        );
        assert_eq!(
            missing.naming_agent("web-01").to_string(),
            "no such file on web-01: /x (404); check the path"
        );
        let no_dir = status_error(
            404,
            "cannot create /a/b/.c.rmm-partial: No such file or directory".into(),
            file(FileOp::Upload, "/a/b/c"),
        );
        assert_eq!(
            no_dir.naming_agent("web-01").to_string(),
            "no such directory on web-01: /a/b (404); create it first, or check the path"
        );
        assert!(matches!(
            status_error(404, format!("session {S} not found"), file(FileOp::Download, "/x")),
            ClientError::SessionNotFound(s) if s == S
        ));
        assert!(matches!(
            status_error(403, format!("session {S} is owned by another user"), file(FileOp::Upload, "/x")),
            ClientError::SessionForbidden(s) if s == S
        ));
        assert!(matches!(
            status_error(
                403,
                "cannot create /sys/x: Permission denied".into(),
                file(FileOp::Upload, "/sys/x")
            ),
            ClientError::RemotePermissionDenied { verb: "write", .. }
        ));
        assert!(matches!(
            status_error(
                409,
                "the agent does not support file transfer (upgrade the agent)".into(),
                file(FileOp::Upload, "/x")
            ),
            ClientError::FilesUnsupported { .. }
        ));
        assert!(matches!(
            status_error(
                409,
                format!("session {S} is not active"),
                file(FileOp::Download, "/x")
            ),
            ClientError::SessionInactive { .. }
        ));
        assert_eq!(
            status_error(422, "sha differs".into(), file(FileOp::Upload, "/x")).to_string(),
            "checksum mismatch: the file changed during transfer; run again"
        );
        assert_eq!(
            status_error(507, "no space".into(), file(FileOp::Upload, "/x"))
                .naming_agent("web-01")
                .to_string(),
            "the agent's disk is full: free some space on web-01 and run again"
        );
        assert!(matches!(
            status_error(
                400,
                "/tmp is a directory".into(),
                file(FileOp::Download, "/tmp")
            ),
            ClientError::TransferRefused { .. }
        ));
        assert!(matches!(
            status_error(401, "token expired".into(), file(FileOp::Download, "/x")),
            ClientError::TokenExpired
        ));
    }

    #[test]
    fn the_parent_of_a_remote_path_is_its_directory() {
        assert_eq!(parent_dir("/a/b/c"), "/a/b");
        assert_eq!(parent_dir("/c"), "/");
        assert_eq!(parent_dir("/a/b/"), "/a");
        assert_eq!(parent_dir(r"C:\dir\f"), r"C:\dir");
        assert_eq!(parent_dir("f"), "f");
    }

    #[test]
    fn content_ranges_give_the_start_and_the_total() {
        assert_eq!(content_range("bytes 100-199/200"), Some((100, 200)));
        assert_eq!(content_range("bytes 200-200/200"), Some((200, 200)));
        assert_eq!(content_range("bytes */200"), None);
        assert_eq!(content_range("items 1-2/3"), None);
    }

    #[tokio::test]
    async fn a_transfer_is_stalled_only_after_the_limit_without_a_move() {
        let activity = Activity::new();
        let limit = Duration::from_millis(400);
        tokio::time::sleep(Duration::from_millis(300)).await;
        activity.touch();
        let started = tokio::time::Instant::now();
        activity.stalled(limit).await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(350), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
    }

    #[test]
    fn echoed_server_text_stays_on_one_bounded_line() {
        assert_eq!(error_text(br#"{"error":"a\nb\tc"}"#), "a b c");
        assert_eq!(error_text(b"plain\r\ntext"), "plain text");
        let long = error_text("x".repeat(1000).as_bytes());
        assert!(long.chars().count() <= MAX_ECHOED + 1);
    }

    #[test]
    fn server_urls_must_be_http_and_get_a_trailing_slash() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = ApiClient::new("http://127.0.0.1:8080", None).unwrap();
        assert_eq!(client.server(), "http://127.0.0.1:8080");
        assert_eq!(
            client.url("api/v1/agents").unwrap().as_str(),
            "http://127.0.0.1:8080/api/v1/agents"
        );
        let agent_style = ApiClient::new("wss://rmm.example:8443", None).unwrap();
        assert_eq!(agent_style.server(), "https://rmm.example:8443");
        let prefixed = ApiClient::new("https://rmm.example/base", None).unwrap();
        assert_eq!(
            prefixed.url("api/v1/agents").unwrap().as_str(),
            "https://rmm.example/base/api/v1/agents"
        );
        for bad in ["ftp://x", "not a url", "http://x/?q=1"] {
            assert!(
                matches!(
                    ApiClient::new(bad, None),
                    Err(ClientError::InvalidServer { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn tokens_are_trimmed_validated_and_never_shown() {
        let token = Token::parse(" abc.def.ghi\n").unwrap();
        assert_eq!(token.expose(), "abc.def.ghi");
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        assert_eq!(Token::parse("  "), Err(TokenParseError::Empty));
        assert_eq!(Token::parse("a b"), Err(TokenParseError::BadCharacter));
    }
}
