//! What the API answers, as the client reads it: the reading side of the server's DTOs (those
//! are poem-openapi objects that only serialize), with the same field names; the end-to-end
//! tests of the CLI hold the two together. And the audit log's filters.

use chrono::{DateTime, Utc};
use rmm_domain::{AgentId, CloseReason, CommandEndReason, CommandId, CommandStatus, SessionId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Token;

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
    /// Its group (older servers send none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Revoked: its key is refused; listed for its history.
    #[serde(default)]
    pub revoked: bool,
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

    /// Why the session closed, when it has and the reason is one this client knows.
    #[must_use]
    pub fn why_closed(&self) -> Option<CloseReason> {
        self.close_reason.as_deref().and_then(CloseReason::parse)
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
    /// Why it ended, for every end but `completed` (`agent_disconnected`, `server_restart`,
    /// `timeout`, ...); absent while running, for a completion, and from older servers.
    #[serde(default)]
    pub end_reason: Option<String>,
    /// Stored output, decoded lossily: use [`crate::ApiClient::command_output`] for the bytes.
    pub stdout: String,
    pub stderr: String,
    /// Bytes written in all, stored or not (final once the command has ended).
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// The server's retention sweep removed the stored output (older servers: false).
    #[serde(default)]
    pub output_pruned: bool,
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

    /// Why it ended, when it has an end reason this client knows (a newer server's is kept
    /// as text in [`Self::end_reason`]).
    #[must_use]
    pub fn why_ended(&self) -> Option<CommandEndReason> {
        self.end_reason.as_deref().and_then(CommandEndReason::parse)
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
    /// The acting user's name (absent for no user, a deleted one, or an older server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
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

/// One user of `GET /api/v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserDto {
    pub user_id: Uuid,
    pub username: String,
    /// `admin`, `technician` or `auditor`.
    pub role: String,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
    /// The groups granted (technicians see only these groups' agents).
    #[serde(default)]
    pub groups: Vec<String>,
}
