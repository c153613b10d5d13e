//! Interactive terminals in a tunnel (the bytes flow over
//! `GET /api/v1/tunnel/{session_id}/terminals/{terminal_id}/ws`), and a command's stdin.

use chrono::{DateTime, Utc};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use rmm_application::{
    ByteStream, NewTerminal, Ports, TerminalError, TerminalExit, TerminalView, WriteStdinError,
};
use rmm_domain::{CommandId, SessionId, TerminalEnd, TerminalId};
use rmm_protocol::api::ApiErrorCode;
use uuid::Uuid;

use crate::auth::TechAuth;
use crate::error::{ErrorBody, error};
use crate::files::RawBody;
use crate::rules::{CommandRule, TermRule, Text};
use crate::wire_enum::Wire;
use crate::{ApiTags, Handlers, Terminals, to_datetime};

#[OpenApi(prefix_path = "/api/v1")]
impl<P: Ports> Handlers<P, Terminals> {
    /// Start an interactive terminal (a PTY on the agent) in the session's tunnel: the
    /// command, or the login shell of the agent's user. Audited and recorded from its first
    /// byte. Attach with `GET .../terminals/{terminal_id}/ws` (binary frames: the bytes;
    /// text frames: `{"type":"resize","cols":C,"rows":R}` in, `{"type":"exit",...}` out).
    /// A terminal nobody attaches to within the grace period (60 s) is ended.
    #[oai(
        path = "/tunnel/:session_id/terminals",
        method = "post",
        tag = "ApiTags::Terminals",
        operation_id = "openTerminal"
    )]
    async fn open_terminal(
        &self,
        auth: TechAuth,
        /// The tunnel session's id (from `openTunnel`).
        #[oai(name = "session_id", example = "crate::examples::id")]
        session_id: Path<Uuid>,
        body: Json<TerminalBody>,
    ) -> OpenTerminalResponse {
        let request = NewTerminal {
            cols: body.0.cols,
            rows: body.0.rows,
            term: body.0.term.map(Text::into_string),
            command: body.0.command.map(Text::into_string),
        };
        let session = SessionId::from_uuid(session_id.0);
        match self.app.open_terminal(auth.0.actor, session, request).await {
            Ok(view) => OpenTerminalResponse::Created(Json(TerminalDto::from(&view))),
            Err(e) => OpenTerminalResponse::from(TerminalRefusal::from(e)),
        }
    }

    /// The session's live terminals (to reattach to one).
    #[oai(
        path = "/tunnel/:session_id/terminals",
        method = "get",
        tag = "ApiTags::Terminals",
        operation_id = "listTerminals"
    )]
    async fn list_terminals(
        &self,
        auth: TechAuth,
        /// The tunnel session's id (from `openTunnel`).
        #[oai(name = "session_id", example = "crate::examples::id")]
        session_id: Path<Uuid>,
    ) -> ListTerminalsResponse {
        let session = SessionId::from_uuid(session_id.0);
        match self.app.list_terminals(auth.0.actor, session).await {
            Ok(views) => ListTerminalsResponse::Ok(Json(TerminalList {
                terminals: views.iter().map(TerminalDto::from).collect(),
            })),
            Err(e) => ListTerminalsResponse::from(TerminalRefusal::from(e)),
        }
    }

    /// End a terminal: `SIGHUP` to its process group, then `SIGTERM`, then `SIGKILL`.
    /// Answers once it has ended, with its exit status.
    #[oai(
        path = "/tunnel/:session_id/terminals/:terminal_id",
        method = "delete",
        tag = "ApiTags::Terminals",
        operation_id = "closeTerminal"
    )]
    async fn close_terminal(
        &self,
        auth: TechAuth,
        /// The tunnel session's id (from `openTunnel`).
        #[oai(name = "session_id", example = "crate::examples::id")]
        session_id: Path<Uuid>,
        /// The terminal's id (from `openTerminal`).
        #[oai(name = "terminal_id", example = "crate::examples::id")]
        terminal_id: Path<Uuid>,
    ) -> CloseTerminalResponse {
        let (session, id) = (
            SessionId::from_uuid(session_id.0),
            TerminalId::from_uuid(terminal_id.0),
        );
        match self.app.close_terminal(auth.0.actor, session, id).await {
            Ok(exit) => CloseTerminalResponse::Ok(Json(TerminalEndDto::new(id, exit))),
            Err(e) => CloseTerminalResponse::from(TerminalRefusal::from(e)),
        }
    }

    /// Send the request body to the stdin of a command started with `"stdin": true`
    /// (streamed; any size), then close its stdin (EOF). One upload per command.
    #[oai(
        path = "/tunnel/:session_id/commands/:command_id/stdin",
        method = "put",
        tag = "ApiTags::Commands",
        operation_id = "writeCommandStdin"
    )]
    async fn write_stdin(
        &self,
        auth: TechAuth,
        /// The tunnel session's id (from `openTunnel`).
        #[oai(name = "session_id", example = "crate::examples::id")]
        session_id: Path<Uuid>,
        /// The command's id (from `runCommand`).
        #[oai(name = "command_id", example = "crate::examples::id")]
        command_id: Path<Uuid>,
        body: RawBody,
    ) -> StdinResponse {
        let stream: ByteStream = Box::pin(body.into_inner().into_bytes_stream());
        let (session, command) = (
            SessionId::from_uuid(session_id.0),
            CommandId::from_uuid(command_id.0),
        );
        match self
            .app
            .write_stdin(auth.0.actor, session, command, stream)
            .await
        {
            Ok(bytes) => StdinResponse::Ok(Json(StdinDto {
                command_id: command_id.0,
                bytes,
            })),
            Err(e @ WriteStdinError::NotFound(_)) => {
                StdinResponse::NotFound(error(ApiErrorCode::SessionNotFound, e.to_string()))
            }
            Err(e @ WriteStdinError::Forbidden(_)) => {
                StdinResponse::Forbidden(error(ApiErrorCode::Forbidden, e.to_string()))
            }
            Err(e @ WriteStdinError::Closed(_)) => {
                StdinResponse::Conflict(error(ApiErrorCode::StdinClosed, e.to_string()))
            }
            Err(e @ WriteStdinError::AgentGone(_)) => {
                StdinResponse::Unavailable(error(ApiErrorCode::AgentGone, e.to_string()))
            }
            Err(e @ WriteStdinError::ClientAborted(_)) => {
                StdinResponse::BadRequest(error(ApiErrorCode::TransferAborted, e.to_string()))
            }
            Err(e @ WriteStdinError::Store(_)) => {
                tracing::error!(error = %e, "stdin refused: the database cannot say whose session it is");
                StdinResponse::Unavailable(error(ApiErrorCode::DatabaseUnavailable, e.to_string()))
            }
        }
    }
}

#[derive(Debug, Object)]
struct TerminalBody {
    /// Columns, 1 to 1000.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    cols: u16,
    /// Rows, 1 to 1000.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    rows: u16,
    /// `TERM` for the remote process; default `xterm-256color`.
    #[oai(nullable)]
    term: Option<Text<TermRule>>,
    /// Run this (through `sh -c`) instead of the login shell of the agent's user.
    #[oai(nullable)]
    command: Option<Text<CommandRule>>,
}

#[derive(Debug, Object)]
struct TerminalDto {
    terminal_id: Uuid,
    session_id: Uuid,
    cols: u16,
    rows: u16,
    term: String,
    /// Null: the login shell.
    #[oai(nullable)]
    command: Option<String>,
    started_at: DateTime<Utc>,
    /// Whether its owner's client is attached now.
    attached: bool,
    /// Its recording (`GET /api/v1/recordings/{recording_id}`).
    recording_id: Uuid,
}

impl From<&TerminalView> for TerminalDto {
    fn from(view: &TerminalView) -> Self {
        Self {
            terminal_id: view.id.as_uuid(),
            session_id: view.session.as_uuid(),
            cols: view.size.cols(),
            rows: view.size.rows(),
            term: view.term.clone(),
            command: view.command.clone(),
            started_at: to_datetime(view.started_at),
            attached: view.attached,
            recording_id: view.id.as_uuid(),
        }
    }
}

#[derive(Debug, Object)]
struct TerminalList {
    terminals: Vec<TerminalDto>,
}

#[derive(Debug, Object)]
struct TerminalEndDto {
    terminal_id: Uuid,
    // `exited`, `closed`, `grace_expired`, `session_closed`, `agent_disconnected`, `failed`.
    reason: Wire<TerminalEnd>,
    #[oai(nullable)]
    exit_code: Option<i32>,
    /// The number of the signal that ended the process.
    #[oai(nullable)]
    signal: Option<i32>,
}

impl TerminalEndDto {
    fn new(id: TerminalId, exit: TerminalExit) -> Self {
        Self {
            terminal_id: id.as_uuid(),
            reason: Wire(exit.end),
            exit_code: exit.exit_code,
            signal: exit.signal,
        }
    }
}

#[derive(Debug, Object)]
struct StdinDto {
    command_id: Uuid,
    /// Bytes the command's stdin took.
    bytes: u64,
}

/// A refusal of a terminal operation, as its status and body.
enum TerminalRefusal {
    BadRequest(Json<ErrorBody>),
    Forbidden(Json<ErrorBody>),
    NotFound(Json<ErrorBody>),
    Conflict(Json<ErrorBody>),
    Unavailable(Json<ErrorBody>),
    Timeout(Json<ErrorBody>),
}

impl From<TerminalError> for TerminalRefusal {
    fn from(e: TerminalError) -> Self {
        let text = e.to_string();
        match e {
            TerminalError::Invalid(_) => {
                Self::BadRequest(error(ApiErrorCode::InvalidRequest, text))
            }
            TerminalError::NotFound(_) => {
                Self::NotFound(error(ApiErrorCode::SessionNotFound, text))
            }
            TerminalError::TerminalNotFound(_) => {
                Self::NotFound(error(ApiErrorCode::TerminalNotFound, text))
            }
            TerminalError::Forbidden(_) => Self::Forbidden(error(ApiErrorCode::Forbidden, text)),
            TerminalError::NotActive(_) => {
                Self::Conflict(error(ApiErrorCode::SessionNotActive, text))
            }
            TerminalError::AgentOffline(_) => {
                Self::Conflict(error(ApiErrorCode::AgentNotConnected, text))
            }
            TerminalError::Unsupported => {
                Self::Conflict(error(ApiErrorCode::AgentUnsupported, text))
            }
            TerminalError::Busy => Self::Conflict(error(ApiErrorCode::ChannelBusy, text)),
            TerminalError::Refused(_) => Self::Conflict(error(ApiErrorCode::AgentRefused, text)),
            TerminalError::Overloaded => Self::Unavailable(error(ApiErrorCode::AgentBusy, text)),
            TerminalError::Timeout => Self::Timeout(error(ApiErrorCode::AgentTimeout, text)),
            TerminalError::AuditUnavailable(_) | TerminalError::Store(_) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "terminal refused: the database cannot record it");
                Self::Unavailable(error(ApiErrorCode::DatabaseUnavailable, text))
            }
        }
    }
}

macro_rules! refusals_into {
    ($($response:ident),+) => {$(
        impl From<TerminalRefusal> for $response {
            fn from(refusal: TerminalRefusal) -> Self {
                match refusal {
                    TerminalRefusal::BadRequest(body) => Self::BadRequest(body),
                    TerminalRefusal::Forbidden(body) => Self::Forbidden(body),
                    TerminalRefusal::NotFound(body) => Self::NotFound(body),
                    TerminalRefusal::Conflict(body) => Self::Conflict(body),
                    TerminalRefusal::Unavailable(body) => Self::Unavailable(body),
                    TerminalRefusal::Timeout(body) => Self::Timeout(body),
                }
            }
        }
    )+};
}

refusals_into!(
    OpenTerminalResponse,
    ListTerminalsResponse,
    CloseTerminalResponse
);

#[derive(ApiResponse)]
enum OpenTerminalResponse {
    /// The terminal runs.
    #[oai(status = 201)]
    Created(Json<TerminalDto>),
    /// A bad size, `TERM` or command.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing, expired or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    /// Another user's session.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such session.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The session is not active, the agent is not connected, too old, refused, or its
    /// tunnel is full.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The agent is overloaded, or the terminal cannot be audited and recorded.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
    /// The agent did not start it in time.
    #[oai(status = 504)]
    Timeout(Json<ErrorBody>),
    /// The body is not JSON: send `Content-Type: application/json`.
    #[oai(status = 415)]
    #[allow(dead_code)] // Answered by the body parser; listed for the API docs.
    UnsupportedMediaType(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum ListTerminalsResponse {
    #[oai(status = 200)]
    Ok(Json<TerminalList>),
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing, expired or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
    #[oai(status = 504)]
    Timeout(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum CloseTerminalResponse {
    /// The terminal ended.
    #[oai(status = 200)]
    Ok(Json<TerminalEndDto>),
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing, expired or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such session, or no such live terminal in it.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
    #[oai(status = 504)]
    Timeout(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum StdinResponse {
    /// Every byte was handed to the command's stdin, and it was closed.
    #[oai(status = 200)]
    Ok(Json<StdinDto>),
    /// The request body broke off (stdin was closed at what arrived).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing, expired or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The command takes no stdin now (`stdin_closed`).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The agent disconnected, or the database is unavailable.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}
