//! The HTTP API (poem-openapi): DTOs, one response enum per operation, and the mapping from
//! use-case errors to status codes. Internal causes are logged, never returned.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Object, OpenApi, SecurityScheme, Tags};
use rmm_application::{
    App, AuditEntry, AuditQuery, CloseTunnelError, CommandRecord, FileAccessError, GetCommandError,
    GetTunnelStatusError, ListAgentsError, ListAuditError, LoginError, OpenTunnelError,
    OutputStream, Ports, RegisterAgentError, RunCommandError,
};
use rmm_domain::{Actor, AgentId, AgentName, CommandId, Session, SessionId, Timestamp, UserId};
use rmm_protocol::FileErrorCode;
use uuid::Uuid;

use rmm_auth::{Jwt, TokenError};
use rmm_gateway::agents::WsAgentGateway;
use rmm_gateway::files::TransferError;

#[derive(Tags)]
enum ApiTags {
    /// Logging in.
    Auth,
    /// Registering and listing agents.
    Agents,
    /// Opening, closing and inspecting tunnel sessions.
    Tunnel,
    /// Running commands in a tunnel and reading their output.
    Commands,
    /// The append-only audit log.
    Audit,
    /// Moving files to and from the agent.
    Files,
}

/// Every error body: a human-readable message naming the problem.
#[derive(Debug, Object)]
pub struct ErrorBody {
    /// What went wrong, and where possible how to fix it.
    pub error: String,
}

fn error(message: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody {
        error: message.into(),
    })
}

/// A JWT from `POST /api/v1/auth/login`, as `Authorization: Bearer <token>`.
#[derive(Debug, SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_token")]
pub struct TechAuth(Actor);

async fn check_token(req: &Request, bearer: Bearer) -> poem::Result<Actor> {
    let jwt = req.data::<Arc<Jwt>>().ok_or_else(|| {
        poem::Error::from_string(
            "authentication is not configured",
            poem::http::StatusCode::INTERNAL_SERVER_ERROR,
        )
    })?;
    jwt.verify(&bearer.token).map_err(|e| {
        let message = match e {
            TokenError::Expired => "token expired: log in again",
            TokenError::Invalid => "invalid token: log in again",
        };
        poem::Error::from_string(message, poem::http::StatusCode::UNAUTHORIZED)
    })
}

#[derive(Debug, Object)]
struct LoginBody {
    username: String,
    password: String,
}

#[derive(Debug, Object)]
struct TokenResponse {
    /// A JWT (HS256) to send as `Authorization: Bearer <token>`.
    token: String,
    expires_at: DateTime<Utc>,
}

#[derive(ApiResponse)]
enum LoginResponse {
    /// Logged in.
    #[oai(status = 200)]
    Ok(Json<TokenResponse>),
    /// Unknown user or wrong password.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The server failed; details are in its log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

#[derive(Debug, Object)]
struct RegisterAgentBody {
    /// A display name, unique among agents (e.g. the hostname).
    name: String,
}

#[derive(Debug, Object)]
struct RegisteredAgentResponse {
    agent_id: Uuid,
    /// The agent's secret key. Shown once: the server keeps only its SHA-256.
    agent_key: String,
}

#[derive(ApiResponse)]
enum RegisterAgentResponse {
    /// Registered; configure the agent with the key.
    #[oai(status = 201)]
    Created(Json<RegisteredAgentResponse>),
    /// The name is empty, too long or has control characters.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing, expired or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    /// Only admins register agents.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// An agent with this name exists.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The server failed; details are in its log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

#[derive(Debug, Object)]
struct AgentDto {
    agent_id: Uuid,
    name: String,
    /// Whether the agent holds a WebSocket to this server now.
    connected: bool,
    /// `heartbeat`, `tunnel`, or `offline` when not connected.
    mode: String,
    /// Last heartbeat or frame; null if never seen.
    last_seen: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    agent_version: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    hostname: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    os: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    uptime_secs: Option<u64>,
}

#[derive(ApiResponse)]
enum ListAgentsResponse {
    /// Every registered agent, by name.
    #[oai(status = 200)]
    Ok(Json<Vec<AgentDto>>),
    /// Missing, expired or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    /// The server failed; details are in its log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

#[derive(Debug, Object)]
struct OpenBody {
    agent_id: Uuid,
}

#[derive(Debug, Object)]
struct OpenedResponse {
    session_id: Uuid,
    /// Always `active`: the agent has confirmed the tunnel.
    status: String,
}

#[derive(ApiResponse)]
enum OpenResponse {
    /// The agent confirmed the tunnel (`tunnel_ready`).
    #[oai(status = 200)]
    Ok(Json<OpenedResponse>),
    /// Malformed JSON or an invalid `agent_id`.
    #[oai(status = 400)]
    #[allow(dead_code)] // Answered by the body parser; listed for the API docs.
    BadRequest(Json<ErrorBody>),
    /// Missing, expired or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    /// The agent is not connected.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The agent already has an active session, or refused the tunnel.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The server failed; details are in its log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The agent's connection is saturated; retry shortly.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
    /// The agent did not confirm within the open timeout; nothing was left open.
    #[oai(status = 504)]
    Timeout(Json<ErrorBody>),
}

#[derive(Debug, Object)]
struct CloseBody {
    session_id: Uuid,
}

#[derive(Debug, Object)]
struct ClosedResponse {
    /// Always `closed`.
    status: String,
    session_id: Uuid,
    close_reason: String,
}

#[derive(ApiResponse)]
enum CloseResponse {
    /// Closed (or already closed: closing is idempotent).
    #[oai(status = 200)]
    Ok(Json<ClosedResponse>),
    /// Malformed JSON or an invalid `session_id`.
    #[oai(status = 400)]
    #[allow(dead_code)] // Answered by the body parser; listed for the API docs.
    BadRequest(Json<ErrorBody>),
    /// Missing, expired or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    /// The session belongs to another user (admins may close any).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such session.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The server failed; details are in its log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

#[derive(Debug, Object)]
struct StatusDto {
    session_id: Uuid,
    agent_id: Uuid,
    /// `pending`, `active` or `closed`.
    status: String,
    opened_at: DateTime<Utc>,
    last_activity: DateTime<Utc>,
    #[oai(skip_serializing_if_is_none)]
    closed_at: Option<DateTime<Utc>>,
    /// Why it closed: `closed_by_owner`, `agent_disconnected`, `idle`, ...
    #[oai(skip_serializing_if_is_none)]
    close_reason: Option<String>,
}

impl From<&Session> for StatusDto {
    fn from(s: &Session) -> Self {
        Self {
            session_id: s.id().as_uuid(),
            agent_id: s.agent().as_uuid(),
            status: s.status().as_str().to_owned(),
            opened_at: to_datetime(s.opened_at()),
            last_activity: to_datetime(s.last_activity()),
            closed_at: s.closed_at().map(to_datetime),
            close_reason: s.close_reason().map(|r| r.as_str().to_owned()),
        }
    }
}

#[derive(ApiResponse)]
enum StatusResponse {
    /// The session, whatever its state (closed sessions included).
    #[oai(status = 200)]
    Ok(Json<StatusDto>),
    /// `session_id` is not a UUID.
    #[oai(status = 400)]
    #[allow(dead_code)] // Answered by the path parser; listed for the API docs.
    BadRequest(Json<ErrorBody>),
    /// Missing, expired or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    /// The session belongs to another user.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such session.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The server failed; details are in its log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

fn internal(operation: &str, e: &dyn std::error::Error) -> Json<ErrorBody> {
    tracing::error!(operation, error = %e, source = ?e.source(), "request failed");
    error("internal error; see the server log")
}

/// The API, generic over the ports so one handler set serves every store.
pub struct Api<P: Ports<Gateway = WsAgentGateway>> {
    app: Arc<App<P>>,
    jwt: Arc<Jwt>,
}

impl<P: Ports<Gateway = WsAgentGateway>> std::fmt::Debug for Api<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

impl<P: Ports<Gateway = WsAgentGateway>> Api<P> {
    pub fn new(app: Arc<App<P>>, jwt: Arc<Jwt>) -> Self {
        Self { app, jwt }
    }
}

#[OpenApi(prefix_path = "/api/v1")]
impl<P: Ports<Gateway = WsAgentGateway>> Api<P> {
    /// Log in with a username and password; returns a JWT.
    #[oai(path = "/auth/login", method = "post", tag = "ApiTags::Auth")]
    async fn login(&self, body: Json<LoginBody>) -> LoginResponse {
        match self.app.login(&body.username, &body.password).await {
            Ok(actor) => match self
                .jwt
                .issue(actor, rmm_application::Clock::now(self.app.clock()))
            {
                Ok(t) => LoginResponse::Ok(Json(TokenResponse {
                    token: t.token,
                    expires_at: to_datetime(t.expires_at),
                })),
                Err(e) => {
                    tracing::error!(error = %e, "token signing failed");
                    LoginResponse::Internal(error("internal error; see the server log"))
                }
            },
            Err(LoginError::InvalidCredentials) => {
                LoginResponse::Unauthorized(error("invalid username or password"))
            }
            Err(e @ LoginError::Store(_)) => LoginResponse::Internal(internal("login", &e)),
        }
    }

    /// Register an agent (admins only). The response carries the agent's key, once.
    #[oai(path = "/agents", method = "post", tag = "ApiTags::Agents")]
    async fn register_agent(
        &self,
        auth: TechAuth,
        body: Json<RegisterAgentBody>,
    ) -> RegisterAgentResponse {
        let name = match AgentName::parse(&body.name) {
            Ok(name) => name,
            Err(e) => return RegisterAgentResponse::BadRequest(error(e.to_string())),
        };
        match self.app.register_agent(auth.0, name).await {
            Ok(agent) => RegisterAgentResponse::Created(Json(RegisteredAgentResponse {
                agent_id: agent.id.as_uuid(),
                agent_key: agent.key.secret,
            })),
            Err(e @ RegisterAgentError::Forbidden) => {
                RegisterAgentResponse::Forbidden(error(e.to_string()))
            }
            Err(e @ RegisterAgentError::NameTaken(_)) => {
                RegisterAgentResponse::Conflict(error(e.to_string()))
            }
            Err(e @ RegisterAgentError::Store(_)) => {
                RegisterAgentResponse::Internal(internal("register_agent", &e))
            }
        }
    }

    /// List agents with their connection state and last heartbeat.
    #[oai(path = "/agents", method = "get", tag = "ApiTags::Agents")]
    async fn list_agents(&self, _auth: TechAuth) -> ListAgentsResponse {
        match self.app.list_agents().await {
            Ok(agents) => ListAgentsResponse::Ok(Json(
                agents
                    .into_iter()
                    .map(|a| AgentDto {
                        agent_id: a.record.id.as_uuid(),
                        name: a.record.name.as_str().to_owned(),
                        connected: a.mode.is_some(),
                        mode: a
                            .mode
                            .map_or("offline", rmm_domain::AgentMode::as_str)
                            .to_owned(),
                        last_seen: a.record.last_seen.map(to_datetime),
                        agent_version: a.record.facts.version,
                        hostname: a.record.facts.hostname,
                        os: a.record.facts.os,
                        uptime_secs: a.record.facts.uptime_secs,
                    })
                    .collect(),
            )),
            Err(e @ ListAgentsError::Store(_)) => {
                ListAgentsResponse::Internal(internal("list_agents", &e))
            }
        }
    }

    /// Open a tunnel to a connected agent. Answers once the agent has confirmed it.
    #[oai(path = "/tunnel/open", method = "post", tag = "ApiTags::Tunnel")]
    async fn open(&self, auth: TechAuth, body: Json<OpenBody>) -> OpenResponse {
        match self
            .app
            .open_tunnel(auth.0, AgentId::from_uuid(body.agent_id))
            .await
        {
            Ok(session) => OpenResponse::Ok(Json(OpenedResponse {
                session_id: session.id().as_uuid(),
                status: session.status().as_str().to_owned(),
            })),
            Err(e @ (OpenTunnelError::AgentOffline(_) | OpenTunnelError::AgentGone)) => {
                OpenResponse::NotFound(error(e.to_string()))
            }
            Err(e @ (OpenTunnelError::Conflict | OpenTunnelError::Refused(_))) => {
                OpenResponse::Conflict(error(e.to_string()))
            }
            Err(e @ OpenTunnelError::Timeout(_)) => OpenResponse::Timeout(error(e.to_string())),
            Err(e @ OpenTunnelError::Overloaded) => OpenResponse::Unavailable(error(e.to_string())),
            Err(e @ OpenTunnelError::Store(_)) => {
                OpenResponse::Internal(internal("open_tunnel", &e))
            }
        }
    }

    /// Close a tunnel (its owner, or an admin). Idempotent.
    #[oai(path = "/tunnel/close", method = "post", tag = "ApiTags::Tunnel")]
    async fn close(&self, auth: TechAuth, body: Json<CloseBody>) -> CloseResponse {
        let id = SessionId::from_uuid(body.session_id);
        match self.app.close_tunnel(auth.0, id).await {
            Ok(session) => CloseResponse::Ok(Json(ClosedResponse {
                status: session.status().as_str().to_owned(),
                session_id: id.as_uuid(),
                close_reason: session.close_reason().map_or("", |r| r.as_str()).to_owned(),
            })),
            Err(e @ CloseTunnelError::NotFound(_)) => CloseResponse::NotFound(error(e.to_string())),
            Err(e @ CloseTunnelError::Forbidden(_)) => {
                CloseResponse::Forbidden(error(e.to_string()))
            }
            Err(e @ CloseTunnelError::Store(_)) => {
                CloseResponse::Internal(internal("close_tunnel", &e))
            }
        }
    }

    /// A session's status, for its owner.
    #[oai(
        path = "/tunnel/status/:session_id",
        method = "get",
        tag = "ApiTags::Tunnel"
    )]
    async fn status(
        &self,
        auth: TechAuth,
        #[oai(name = "session_id")] session_id: Path<Uuid>,
    ) -> StatusResponse {
        match self
            .app
            .tunnel_status(auth.0, SessionId::from_uuid(session_id.0))
            .await
        {
            Ok(session) => StatusResponse::Ok(Json(StatusDto::from(&session))),
            Err(e @ GetTunnelStatusError::NotFound(_)) => {
                StatusResponse::NotFound(error(e.to_string()))
            }
            Err(e @ GetTunnelStatusError::Forbidden(_)) => {
                StatusResponse::Forbidden(error(e.to_string()))
            }
            Err(e @ GetTunnelStatusError::Store(_)) => {
                StatusResponse::Internal(internal("tunnel_status", &e))
            }
        }
    }

    /// Run a command in the session's tunnel. Answers at once; output streams live on
    /// `GET /api/v1/tunnel/{session_id}/stream` and is kept for
    /// `GET /api/v1/tunnel/{session_id}/commands/{command_id}`.
    #[oai(
        path = "/tunnel/:session_id/command",
        method = "post",
        tag = "ApiTags::Commands"
    )]
    async fn run_command(
        &self,
        auth: TechAuth,
        #[oai(name = "session_id")] session_id: Path<Uuid>,
        body: Json<CommandBody>,
    ) -> RunCommandResponse {
        let session = SessionId::from_uuid(session_id.0);
        match self
            .app
            .run_command(auth.0, session, &body.command, body.timeout_secs, None)
            .await
        {
            Ok(record) => RunCommandResponse::Accepted(Json(CommandStartedDto {
                command_id: record.id.as_uuid(),
                channel_id: record.channel.to_string(),
                timeout_secs: record.timeout_secs,
            })),
            Err(e @ RunCommandError::Invalid(_)) => {
                RunCommandResponse::BadRequest(error(e.to_string()))
            }
            Err(e @ RunCommandError::NotFound(_)) => {
                RunCommandResponse::NotFound(error(e.to_string()))
            }
            Err(e @ RunCommandError::Forbidden(_)) => {
                RunCommandResponse::Forbidden(error(e.to_string()))
            }
            Err(
                e @ (RunCommandError::NotActive(_)
                | RunCommandError::AgentOffline(_)
                | RunCommandError::ChannelBusy(_)),
            ) => RunCommandResponse::Conflict(error(e.to_string())),
            Err(e @ RunCommandError::Overloaded) => {
                RunCommandResponse::Unavailable(error(e.to_string()))
            }
            Err(e @ RunCommandError::AuditUnavailable(_)) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "command refused: audit log unavailable");
                RunCommandResponse::Unavailable(error(e.to_string()))
            }
            Err(e @ RunCommandError::Store(_)) => {
                RunCommandResponse::Internal(internal("run_command", &e))
            }
        }
    }

    /// A command's status and stored output. With `wait`, holds the request until the
    /// command ends or `wait` seconds pass (at most 300).
    #[oai(
        path = "/tunnel/:session_id/commands/:command_id",
        method = "get",
        tag = "ApiTags::Commands"
    )]
    async fn get_command(
        &self,
        auth: TechAuth,
        #[oai(name = "session_id")] session_id: Path<Uuid>,
        #[oai(name = "command_id")] command_id: Path<Uuid>,
        wait: Query<Option<u64>>,
    ) -> CommandResponse {
        let wait = wait
            .0
            .map(|secs| Duration::from_secs(secs.min(MAX_WAIT_SECS)));
        let (session, id) = (
            SessionId::from_uuid(session_id.0),
            CommandId::from_uuid(command_id.0),
        );
        let result = self.app.get_command(auth.0, session, id, wait).await;
        self.command_response(auth.0, session, result).await
    }

    /// Cancel a running command: the agent kills its whole process group (TERM, then KILL).
    /// Answers with the command once it has ended (or after 10 s).
    #[oai(
        path = "/tunnel/:session_id/commands/:command_id",
        method = "delete",
        tag = "ApiTags::Commands"
    )]
    async fn cancel_command(
        &self,
        auth: TechAuth,
        #[oai(name = "session_id")] session_id: Path<Uuid>,
        #[oai(name = "command_id")] command_id: Path<Uuid>,
    ) -> CommandResponse {
        let (session, id) = (
            SessionId::from_uuid(session_id.0),
            CommandId::from_uuid(command_id.0),
        );
        let result = self
            .app
            .cancel_command(auth.0, session, id, Duration::from_secs(10))
            .await;
        self.command_response(auth.0, session, result).await
    }

    /// The exact bytes the command wrote to stdout (up to the stored cap).
    #[oai(
        path = "/tunnel/:session_id/commands/:command_id/stdout",
        method = "get",
        tag = "ApiTags::Commands"
    )]
    async fn command_stdout(
        &self,
        auth: TechAuth,
        #[oai(name = "session_id")] session_id: Path<Uuid>,
        #[oai(name = "command_id")] command_id: Path<Uuid>,
    ) -> RawOutputResponse {
        self.raw_output(auth.0, session_id.0, command_id.0, OutputStream::Stdout)
            .await
    }

    /// The exact bytes the command wrote to stderr (up to the stored cap).
    #[oai(
        path = "/tunnel/:session_id/commands/:command_id/stderr",
        method = "get",
        tag = "ApiTags::Commands"
    )]
    async fn command_stderr(
        &self,
        auth: TechAuth,
        #[oai(name = "session_id")] session_id: Path<Uuid>,
        #[oai(name = "command_id")] command_id: Path<Uuid>,
    ) -> RawOutputResponse {
        self.raw_output(auth.0, session_id.0, command_id.0, OutputStream::Stderr)
            .await
    }

    /// Upload the request body to `path` on the agent (any size, streamed). The agent writes
    /// a temporary file beside the target and renames it into place only when every byte has
    /// arrived and the SHA-256 matches: an interrupted upload leaves no file at `path`. Resume
    /// with `offset` = the size `files/upload-status` reports (pass `sha256` of the whole file
    /// so the resumed result is verified).
    #[oai(
        path = "/tunnel/:session_id/files",
        method = "put",
        tag = "ApiTags::Files"
    )]
    async fn upload_file(
        &self,
        auth: TechAuth,
        #[oai(name = "session_id")] session_id: Path<Uuid>,
        /// Absolute path of the file on the agent.
        path: Query<String>,
        /// Resume from this byte (the bytes before it are already on the agent).
        offset: Query<Option<u64>>,
        /// Expected SHA-256 (hex) of the whole file.
        sha256: Query<Option<String>>,
        body: RawBody,
    ) -> UploadResponse {
        let stream = body.0.into_bytes_stream();
        let session = SessionId::from_uuid(session_id.0);
        let offset = offset.0.unwrap_or(0);
        match rmm_gateway::files::upload(
            &self.app, auth.0, session, &path.0, offset, sha256.0, stream,
        )
        .await
        {
            Ok(done) => UploadResponse::Created(Json(UploadedDto {
                path: done.path,
                size: done.size,
                sha256: done.sha256,
            })),
            Err(e) => UploadResponse::from(FileErrorResponse::from(e)),
        }
    }

    /// Download `path` from the agent, streamed, with its SHA-256 in `X-Content-SHA256`.
    /// `Range: bytes=N-` resumes from byte N (206).
    #[oai(
        path = "/tunnel/:session_id/files",
        method = "get",
        tag = "ApiTags::Files"
    )]
    async fn download_file(
        &self,
        auth: TechAuth,
        #[oai(name = "session_id")] session_id: Path<Uuid>,
        /// Absolute path of the file on the agent.
        path: Query<String>,
        /// `bytes=N-` to resume from byte N.
        #[oai(name = "Range")]
        range: Header<Option<String>>,
    ) -> DownloadResponse {
        let offset = rmm_gateway::files::range_start(range.0.as_deref());
        let session = SessionId::from_uuid(session_id.0);
        match rmm_gateway::files::download(&self.app, auth.0, session, &path.0, offset.unwrap_or(0))
            .await
        {
            Ok(d) => {
                let length = d.size.saturating_sub(d.offset);
                let body = Binary(poem::Body::from_bytes_stream(d.body));
                match offset {
                    Some(start) => DownloadResponse::Partial(
                        body,
                        d.sha256,
                        length,
                        format!(
                            "bytes {start}-{}/{}",
                            d.size.saturating_sub(1).max(start),
                            d.size
                        ),
                        "bytes".into(),
                    ),
                    None => DownloadResponse::Ok(body, d.sha256, length, "bytes".into()),
                }
            }
            Err(e) => DownloadResponse::from(FileErrorResponse::from(e)),
        }
    }

    /// List a directory on the agent: name, type, size, mode and modification time.
    #[oai(
        path = "/tunnel/:session_id/files/list",
        method = "get",
        tag = "ApiTags::Files"
    )]
    async fn list_files(
        &self,
        auth: TechAuth,
        #[oai(name = "session_id")] session_id: Path<Uuid>,
        /// Absolute path of the directory on the agent.
        path: Query<String>,
    ) -> ListFilesResponse {
        let session = SessionId::from_uuid(session_id.0);
        match rmm_gateway::files::list(&self.app, auth.0, session, &path.0).await {
            Ok(entries) => ListFilesResponse::Ok(Json(DirectoryDto {
                path: path.0,
                entries: entries
                    .into_iter()
                    .map(|e| FileEntryDto {
                        name: e.name,
                        kind: e.kind,
                        size: e.size,
                        mode: e.mode,
                        modified: e.modified,
                    })
                    .collect(),
            })),
            Err(e) => ListFilesResponse::from(FileErrorResponse::from(e)),
        }
    }

    /// How many bytes of an interrupted upload to `path` the agent holds (0 when none): the
    /// `offset` to resume from.
    #[oai(
        path = "/tunnel/:session_id/files/upload-status",
        method = "get",
        tag = "ApiTags::Files"
    )]
    async fn upload_status(
        &self,
        auth: TechAuth,
        #[oai(name = "session_id")] session_id: Path<Uuid>,
        /// Absolute path of the file being uploaded.
        path: Query<String>,
    ) -> UploadStatusResponse {
        let session = SessionId::from_uuid(session_id.0);
        match rmm_gateway::files::upload_status(&self.app, auth.0, session, &path.0).await {
            Ok(size) => UploadStatusResponse::Ok(Json(UploadStatusDto {
                path: path.0,
                received: size,
            })),
            Err(e) => UploadStatusResponse::from(FileErrorResponse::from(e)),
        }
    }

    /// The audit log, newest first. Admins read everything; technicians their own entries.
    /// Page with `before` = the `next_before` of the previous page.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/audit", method = "get", tag = "ApiTags::Audit")]
    async fn audit(
        &self,
        auth: TechAuth,
        agent_id: Query<Option<Uuid>>,
        tech_id: Query<Option<Uuid>>,
        session_id: Query<Option<Uuid>>,
        since: Query<Option<DateTime<Utc>>>,
        until: Query<Option<DateTime<Utc>>>,
        limit: Query<Option<u32>>,
        before: Query<Option<i64>>,
    ) -> AuditResponse {
        let query = AuditQuery {
            user: tech_id.0.map(UserId::from_uuid),
            agent: agent_id.0.map(AgentId::from_uuid),
            session: session_id.0.map(SessionId::from_uuid),
            since: since.0.map(from_datetime),
            until: until.0.map(from_datetime),
            before: before.0,
            limit: limit.0.unwrap_or(50),
        };
        match self.app.list_audit(auth.0, query).await {
            Ok(entries) => {
                let next_before = entries.last().map(|e| e.id).filter(|_| {
                    entries.len()
                        >= usize::try_from(limit.0.unwrap_or(50).clamp(1, 500))
                            .unwrap_or(usize::MAX)
                });
                AuditResponse::Ok(Json(AuditPage {
                    entries: entries.iter().map(AuditEntryDto::from).collect(),
                    next_before,
                }))
            }
            Err(e @ ListAuditError::Forbidden) => AuditResponse::Forbidden(error(e.to_string())),
            Err(e @ ListAuditError::Store(_)) => {
                AuditResponse::Internal(internal("list_audit", &e))
            }
        }
    }
}

/// The longest `?wait=` honoured, seconds.
const MAX_WAIT_SECS: u64 = 300;
/// Chunks read from the store per round while streaming raw output.
const RAW_CHUNKS_PER_READ: u32 = 16;

impl<P: Ports<Gateway = WsAgentGateway>> Api<P> {
    async fn command_response(
        &self,
        actor: Actor,
        session: SessionId,
        result: Result<CommandRecord, GetCommandError>,
    ) -> CommandResponse {
        let record = match result {
            Ok(record) => record,
            Err(e @ (GetCommandError::NotFound(_) | GetCommandError::SessionNotFound(_))) => {
                return CommandResponse::NotFound(error(e.to_string()));
            }
            Err(e @ GetCommandError::Forbidden(_)) => {
                return CommandResponse::Forbidden(error(e.to_string()));
            }
            Err(e @ GetCommandError::Store(_)) => {
                return CommandResponse::Internal(internal("get_command", &e));
            }
        };
        let mut streams = Vec::with_capacity(2);
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            match self
                .app
                .command_output_chunks(actor, session, record.id, stream, 0, u32::MAX)
                .await
            {
                Ok(chunks) => streams.push(
                    chunks
                        .into_iter()
                        .flat_map(|(_, bytes)| bytes)
                        .collect::<Vec<u8>>(),
                ),
                Err(e) => return CommandResponse::Internal(internal("read_output", &e)),
            }
        }
        let stderr = streams.pop().unwrap_or_default();
        let stdout = streams.pop().unwrap_or_default();
        CommandResponse::Ok(Json(Box::new(CommandDto::new(&record, &stdout, &stderr))))
    }

    async fn raw_output(
        &self,
        actor: Actor,
        session: Uuid,
        command: Uuid,
        stream: OutputStream,
    ) -> RawOutputResponse {
        let (session, id) = (SessionId::from_uuid(session), CommandId::from_uuid(command));
        // The first read checks access, so errors are answered before any byte is streamed.
        let first = match self
            .app
            .command_output_chunks(actor, session, id, stream, 0, RAW_CHUNKS_PER_READ)
            .await
        {
            Ok(chunks) => chunks,
            Err(e @ (GetCommandError::NotFound(_) | GetCommandError::SessionNotFound(_))) => {
                return RawOutputResponse::NotFound(error(e.to_string()));
            }
            Err(e @ GetCommandError::Forbidden(_)) => {
                return RawOutputResponse::Forbidden(error(e.to_string()));
            }
            Err(e @ GetCommandError::Store(_)) => {
                return RawOutputResponse::Internal(internal("read_output", &e));
            }
        };
        let app = Arc::clone(&self.app);
        // Streamed a few chunks at a time: memory stays bounded whatever the output size.
        let body = futures_util::stream::unfold(Some(first), move |state| {
            let app = Arc::clone(&app);
            async move {
                let chunks = state?;
                if chunks.is_empty() {
                    return None;
                }
                let next_seq = chunks.last().map_or(0, |(seq, _)| seq + 1);
                let full = chunks.len() >= RAW_CHUNKS_PER_READ as usize;
                let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, b)| b).collect();
                let next = if full {
                    match app
                        .command_output_chunks(
                            actor,
                            session,
                            id,
                            stream,
                            next_seq,
                            RAW_CHUNKS_PER_READ,
                        )
                        .await
                    {
                        Ok(chunks) => Some(chunks),
                        Err(e) => {
                            tracing::error!(error = %e, "reading output while streaming failed");
                            return Some((Err(std::io::Error::other("output store failed")), None));
                        }
                    }
                } else {
                    Some(Vec::new())
                };
                Some((Ok::<_, std::io::Error>(bytes), next))
            }
        });
        RawOutputResponse::Ok(Binary(poem::Body::from_bytes_stream(
            futures_util::StreamExt::map(body, |r| r.map(bytes::Bytes::from)),
        )))
    }
}

fn from_datetime(t: DateTime<Utc>) -> Timestamp {
    Timestamp::from_unix_micros(t.timestamp_micros())
}

#[derive(Debug, Object)]
struct CommandBody {
    /// Run through the agent's shell (`sh -c` on Unix), stdin closed.
    command: String,
    /// Kill the command (its whole process group) after this many seconds; default 300.
    timeout_secs: Option<u64>,
}

#[derive(Debug, Object)]
struct CommandStartedDto {
    command_id: Uuid,
    /// The channel its output frames carry on the session stream.
    channel_id: String,
    timeout_secs: u64,
}

#[derive(ApiResponse)]
enum RunCommandResponse {
    /// Sent to the agent.
    #[oai(status = 202)]
    Accepted(Json<CommandStartedDto>),
    /// Empty, too long or otherwise invalid command or timeout.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing, expired or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    /// The session belongs to another user.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such session.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The session is closed (or still pending), or its agent is gone.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The server failed; details are in its log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The agent is saturated, or the audit log cannot be written (commands are never run
    /// unaudited).
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(Debug, Object)]
struct CommandDto {
    command_id: Uuid,
    channel_id: String,
    session_id: Uuid,
    command: String,
    /// `running`, `completed`, `timed_out`, `cancelled` or `failed` (agent gone).
    status: String,
    /// Null while running; 128 + signal number when killed by a signal.
    exit_code: Option<i32>,
    /// The signal that killed the process, e.g. `SIGKILL`.
    #[oai(skip_serializing_if_is_none)]
    signal: Option<String>,
    /// Stored stdout, decoded as UTF-8 (invalid bytes replaced: use `.../stdout` for bytes).
    stdout: String,
    stderr: String,
    /// Bytes written in all (stored or not).
    stdout_bytes: u64,
    stderr_bytes: u64,
    /// True when the stored output stops at the server's cap.
    stdout_truncated: bool,
    stderr_truncated: bool,
    timeout_secs: u64,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl CommandDto {
    fn new(r: &CommandRecord, stdout: &[u8], stderr: &[u8]) -> Self {
        Self {
            command_id: r.id.as_uuid(),
            channel_id: r.channel.to_string(),
            session_id: r.session.as_uuid(),
            command: r.text.clone(),
            status: r.status.as_str().to_owned(),
            exit_code: r.exit_code,
            signal: r.signal.clone(),
            stdout: String::from_utf8_lossy(stdout).into_owned(),
            stderr: String::from_utf8_lossy(stderr).into_owned(),
            stdout_bytes: r.stdout_bytes,
            stderr_bytes: r.stderr_bytes,
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            timeout_secs: r.timeout_secs,
            started_at: to_datetime(r.started_at),
            finished_at: r.finished_at.map(to_datetime),
        }
    }
}

#[derive(ApiResponse)]
enum CommandResponse {
    /// The command.
    #[oai(status = 200)]
    Ok(Json<Box<CommandDto>>),
    /// A path parameter is not a UUID.
    #[oai(status = 400)]
    #[allow(dead_code)] // Answered by the path parser; listed for the API docs.
    BadRequest(Json<ErrorBody>),
    /// Missing, expired or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    /// The session belongs to another user.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such session, or no such command in it.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The server failed; details are in its log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum RawOutputResponse {
    /// The bytes, streamed.
    #[oai(status = 200)]
    Ok(Binary<poem::Body>),
    /// A path parameter is not a UUID.
    #[oai(status = 400)]
    #[allow(dead_code)] // Answered by the path parser; listed for the API docs.
    BadRequest(Json<ErrorBody>),
    /// Missing, expired or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    /// The session belongs to another user.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such session, or no such command in it.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The server failed; details are in its log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

#[derive(Debug, Object)]
struct AuditEntryDto {
    /// Increasing position in the log; pass as `before` to page.
    id: i64,
    at: DateTime<Utc>,
    /// `tunnel_open`, `tunnel_close`, `tunnel_refused`, `tunnel_timeout`, `command`,
    /// `command_end`, `file_upload`, `file_download`.
    event: String,
    tech_id: Option<Uuid>,
    agent_id: Option<Uuid>,
    session_id: Option<Uuid>,
    #[oai(skip_serializing_if_is_none)]
    detail: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    command_id: Option<Uuid>,
    #[oai(skip_serializing_if_is_none)]
    command: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    status: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    exit_code: Option<i32>,
    #[oai(skip_serializing_if_is_none)]
    stdout_bytes: Option<u64>,
    #[oai(skip_serializing_if_is_none)]
    stderr_bytes: Option<u64>,
    #[oai(skip_serializing_if_is_none)]
    duration_ms: Option<u64>,
    #[oai(skip_serializing_if_is_none)]
    path: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    direction: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    size: Option<u64>,
    #[oai(skip_serializing_if_is_none)]
    sha256: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    result: Option<String>,
}

impl From<&AuditEntry> for AuditEntryDto {
    fn from(entry: &AuditEntry) -> Self {
        let e = &entry.event;
        let command = e.command.clone().unwrap_or_default();
        let file = e.file.as_ref();
        Self {
            id: entry.id,
            at: to_datetime(e.at),
            event: e.action.as_str().to_owned(),
            tech_id: e.user.map(|u| u.as_uuid()),
            agent_id: e.agent.map(|a| a.as_uuid()),
            session_id: e.session.map(|s| s.as_uuid()),
            detail: e.detail.clone(),
            command_id: command.command_id.map(|c| c.as_uuid()),
            command: command.text,
            status: command.status,
            exit_code: command.exit_code,
            stdout_bytes: command.stdout_bytes,
            stderr_bytes: command.stderr_bytes,
            duration_ms: command.duration_ms,
            path: file.map(|f| f.path.clone()),
            direction: file.map(|f| f.direction.clone()),
            size: file.and_then(|f| f.size),
            sha256: file.and_then(|f| f.sha256.clone()),
            result: file.map(|f| f.result.clone()),
        }
    }
}

#[derive(Debug, Object)]
struct AuditPage {
    entries: Vec<AuditEntryDto>,
    /// Pass as `before` for the next (older) page; null on the last page.
    next_before: Option<i64>,
}

#[derive(ApiResponse)]
enum AuditResponse {
    /// A page of entries, newest first.
    #[oai(status = 200)]
    Ok(Json<AuditPage>),
    /// A query parameter is malformed.
    #[oai(status = 400)]
    #[allow(dead_code)] // Answered by the query parser; listed for the API docs.
    BadRequest(Json<ErrorBody>),
    /// Missing, expired or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    /// A technician asked for another user's entries.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// The server failed; details are in its log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

/// A request body taken as raw bytes, streamed, whatever its `Content-Type` (or none: `curl
/// -T` sends none, and a file's bytes need no media type).
pub struct RawBody(poem::Body);

impl std::fmt::Debug for RawBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawBody(..)")
    }
}

impl<'a> poem_openapi::ApiExtractor<'a> for RawBody {
    const TYPES: &'static [poem_openapi::ApiExtractorType] =
        &[poem_openapi::ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut poem_openapi::registry::Registry) {
        <Binary<poem::Body> as poem_openapi::payload::Payload>::register(registry);
    }

    fn request_meta() -> Option<poem_openapi::registry::MetaRequest> {
        Some(poem_openapi::registry::MetaRequest {
            description: Some("The file's bytes, any Content-Type."),
            content: vec![poem_openapi::registry::MetaMediaType {
                content_type: "application/octet-stream",
                schema: <Binary<poem::Body> as poem_openapi::payload::Payload>::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        _request: &'a Request,
        body: &mut poem::RequestBody,
        _param_opts: poem_openapi::ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        Ok(Self(body.take()?))
    }
}

#[derive(Debug, Object)]
struct UploadedDto {
    path: String,
    size: u64,
    /// SHA-256 (hex) of the whole file as written.
    sha256: String,
}

#[derive(Debug, Object)]
struct UploadStatusDto {
    path: String,
    /// Bytes of the interrupted upload on the agent: resume with `offset` = this.
    received: u64,
}

#[derive(Debug, Object)]
struct FileEntryDto {
    name: String,
    /// `file`, `dir`, `symlink` or `other`.
    #[oai(rename = "type")]
    kind: String,
    size: u64,
    /// Unix permission bits.
    #[oai(skip_serializing_if_is_none)]
    mode: Option<u32>,
    /// Seconds since the Unix epoch.
    #[oai(skip_serializing_if_is_none)]
    modified: Option<i64>,
}

#[derive(Debug, Object)]
struct DirectoryDto {
    path: String,
    entries: Vec<FileEntryDto>,
}

/// The error statuses shared by every file operation.
enum FileErrorResponse {
    BadRequest(Json<ErrorBody>),
    Forbidden(Json<ErrorBody>),
    NotFound(Json<ErrorBody>),
    Conflict(Json<ErrorBody>),
    Unprocessable(Json<ErrorBody>),
    Internal(Json<ErrorBody>),
    Unavailable(Json<ErrorBody>),
    Timeout(Json<ErrorBody>),
    InsufficientStorage(Json<ErrorBody>),
}

impl From<TransferError> for FileErrorResponse {
    fn from(e: TransferError) -> Self {
        let body = error(e.to_string());
        match &e {
            TransferError::Access(FileAccessError::NotAbsolute(_)) => Self::BadRequest(body),
            TransferError::Access(FileAccessError::NotFound(_)) => Self::NotFound(body),
            TransferError::Access(FileAccessError::Forbidden(_)) => Self::Forbidden(body),
            TransferError::Access(FileAccessError::NotActive(_)) | TransferError::Unsupported => {
                Self::Conflict(body)
            }
            TransferError::Access(FileAccessError::Store(_)) => {
                Self::Internal(internal("file_access", &e))
            }
            TransferError::Agent { code, .. } => match code {
                FileErrorCode::NotFound => Self::NotFound(body),
                FileErrorCode::PermissionDenied => Self::Forbidden(body),
                FileErrorCode::NotAbsolute
                | FileErrorCode::IsDirectory
                | FileErrorCode::NotADirectory
                | FileErrorCode::BadOffset => Self::BadRequest(body),
                FileErrorCode::ChecksumMismatch => Self::Unprocessable(body),
                FileErrorCode::DiskFull => Self::InsufficientStorage(body),
                FileErrorCode::Io => Self::Internal(body),
            },
            TransferError::AgentGone | TransferError::Busy => Self::Unavailable(body),
            TransferError::ClientAborted(_) => Self::BadRequest(body),
            TransferError::Timeout => Self::Timeout(body),
            TransferError::Protocol(_) => Self::Internal(internal("file_transfer", &e)),
        }
    }
}

/// One response enum per file operation, all with the shared error statuses.
macro_rules! file_response {
    ($name:ident { $($(#[$meta:meta])* $variant:ident($($(#[$fmeta:meta])* $ty:ty),+ $(,)?)),+ $(,)? }) => {
        #[derive(ApiResponse)]
        enum $name {
            $($(#[$meta])* $variant($($(#[$fmeta])* $ty),+),)+
            /// Path not absolute, a directory where a file is needed (or the reverse), an
            /// offset the agent cannot resume from, or an interrupted request body.
            #[oai(status = 400)]
            BadRequest(Json<ErrorBody>),
            /// Missing, expired or invalid token.
            #[oai(status = 401)]
            #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
            Unauthorized(Json<ErrorBody>),
            /// The session belongs to another user, or the agent was denied access (its
            /// reason is in the message).
            #[oai(status = 403)]
            Forbidden(Json<ErrorBody>),
            /// No such session, file or directory.
            #[oai(status = 404)]
            NotFound(Json<ErrorBody>),
            /// The session is not active, or its agent does not support file transfer.
            #[oai(status = 409)]
            Conflict(Json<ErrorBody>),
            /// The file's SHA-256 does not match the expected one (nothing was written).
            #[oai(status = 422)]
            Unprocessable(Json<ErrorBody>),
            /// The server or agent failed; details are in the server log.
            #[oai(status = 500)]
            Internal(Json<ErrorBody>),
            /// The agent is gone or too busy; try again.
            #[oai(status = 503)]
            Unavailable(Json<ErrorBody>),
            /// The agent did not answer in time.
            #[oai(status = 504)]
            Timeout(Json<ErrorBody>),
            /// The agent's disk is full.
            #[oai(status = 507)]
            InsufficientStorage(Json<ErrorBody>),
        }

        impl From<FileErrorResponse> for $name {
            fn from(e: FileErrorResponse) -> Self {
                match e {
                    FileErrorResponse::BadRequest(b) => Self::BadRequest(b),
                    FileErrorResponse::Forbidden(b) => Self::Forbidden(b),
                    FileErrorResponse::NotFound(b) => Self::NotFound(b),
                    FileErrorResponse::Conflict(b) => Self::Conflict(b),
                    FileErrorResponse::Unprocessable(b) => Self::Unprocessable(b),
                    FileErrorResponse::Internal(b) => Self::Internal(b),
                    FileErrorResponse::Unavailable(b) => Self::Unavailable(b),
                    FileErrorResponse::Timeout(b) => Self::Timeout(b),
                    FileErrorResponse::InsufficientStorage(b) => Self::InsufficientStorage(b),
                }
            }
        }
    };
}

file_response!(UploadResponse {
    /// Every byte arrived, the SHA-256 matched, and the file is in place.
    #[oai(status = 201)]
    Created(Json<UploadedDto>),
});

file_response!(DownloadResponse {
    /// The whole file.
    #[oai(status = 200)]
    Ok(
        Binary<poem::Body>,
        #[oai(header = "X-Content-SHA256")] String,
        #[oai(header = "Content-Length")] u64,
        #[oai(header = "Accept-Ranges")] String,
    ),
    /// The file from the requested byte (`Range: bytes=N-`).
    #[oai(status = 206)]
    Partial(
        Binary<poem::Body>,
        #[oai(header = "X-Content-SHA256")] String,
        #[oai(header = "Content-Length")] u64,
        #[oai(header = "Content-Range")] String,
        #[oai(header = "Accept-Ranges")] String,
    ),
});

file_response!(ListFilesResponse {
    /// The directory's entries, by name.
    #[oai(status = 200)]
    Ok(Json<DirectoryDto>),
});

file_response!(UploadStatusResponse {
    /// Bytes held of an interrupted upload.
    #[oai(status = 200)]
    Ok(Json<UploadStatusDto>),
});

/// Converts a domain timestamp for the wire.
#[must_use]
pub fn to_datetime(t: Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(t.as_unix_micros()).unwrap_or_default()
}
