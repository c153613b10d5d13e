//! The HTTP API (poem-openapi): DTOs, one response enum per operation, and the mapping from
//! use-case errors to status codes. Internal causes are logged, never returned.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, SecurityScheme, Tags};
use rmm_application::{
    App, CloseTunnelError, GetTunnelStatusError, ListAgentsError, LoginError, OpenTunnelError,
    Ports, RegisterAgentError,
};
use rmm_domain::{Actor, AgentId, AgentName, Session, SessionId};
use uuid::Uuid;

use crate::credentials::{Jwt, TokenError};
use crate::system::to_datetime;

#[derive(Tags)]
enum ApiTags {
    /// Logging in.
    Auth,
    /// Registering and listing agents.
    Agents,
    /// Opening, closing and inspecting tunnel sessions.
    Tunnel,
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
pub struct Api<P: Ports> {
    app: Arc<App<P>>,
    jwt: Arc<Jwt>,
}

impl<P: Ports> std::fmt::Debug for Api<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

impl<P: Ports> Api<P> {
    pub fn new(app: Arc<App<P>>, jwt: Arc<Jwt>) -> Self {
        Self { app, jwt }
    }
}

#[OpenApi(prefix_path = "/api/v1")]
impl<P: Ports> Api<P> {
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
}
