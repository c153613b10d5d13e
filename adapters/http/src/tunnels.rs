//! Opening, closing and inspecting tunnel sessions.

use chrono::{DateTime, Utc};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use rmm_application::{CloseTunnelError, GetTunnelStatusError, OpenTunnelError, Ports};
use rmm_domain::{AgentId, CloseReason, Session, SessionId, SessionStatus};
use rmm_protocol::api::ApiErrorCode;
use uuid::Uuid;

use crate::auth::TechAuth;
use crate::error::{ErrorBody, error, internal};
use crate::wire_enum::Wire;
use crate::{ApiTags, Handlers, Tunnels, to_datetime};

#[derive(Debug, Object)]
struct OpenBody {
    agent_id: Uuid,
}

/// The tunnel, open: `status` is always `active` (the agent has confirmed it).
#[derive(Debug, Object)]
struct OpenedResponse {
    session_id: Uuid,
    // Always `active`: the agent has confirmed the tunnel.
    status: Wire<SessionStatus>,
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
    /// Auditors open nothing.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// The agent is not connected (or, for a technician, not in one of their groups).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The agent already has an active session, or refused the tunnel.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The agent's connection is saturated (`agent_busy`), or the database cannot record the
    /// open with its audit entry (`database_unavailable`): nothing was left open. Retry
    /// shortly.
    /// The caller holds as many open sessions as one user may (`too_many_sessions`).
    #[oai(status = 429)]
    TooManySessions(Json<ErrorBody>),
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
    /// The agent did not confirm within the open timeout; nothing was left open.
    #[oai(status = 504)]
    Timeout(Json<ErrorBody>),
    /// The body is not JSON: send `Content-Type: application/json`.
    #[oai(status = 415)]
    #[allow(dead_code)] // Answered by the body parser; listed for the API docs.
    UnsupportedMediaType(Json<ErrorBody>),
}

#[derive(Debug, Object)]
struct CloseBody {
    session_id: Uuid,
}

/// The session, closed: `status` is always `closed`, `close_reason` says by whom.
#[derive(Debug, Object)]
struct ClosedResponse {
    // Always `closed`.
    status: Wire<SessionStatus>,
    session_id: Uuid,
    close_reason: Wire<CloseReason>,
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
    /// The database cannot record the close with its audit entry (`database_unavailable`):
    /// the session is unchanged. Retry shortly.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
    /// The body is not JSON: send `Content-Type: application/json`.
    #[oai(status = 415)]
    #[allow(dead_code)] // Answered by the body parser; listed for the API docs.
    UnsupportedMediaType(Json<ErrorBody>),
}

#[derive(Debug, Object)]
struct StatusDto {
    session_id: Uuid,
    agent_id: Uuid,
    // `pending`, `active` or `closed`.
    status: Wire<SessionStatus>,
    opened_at: DateTime<Utc>,
    last_activity: DateTime<Utc>,
    #[oai(skip_serializing_if_is_none)]
    closed_at: Option<DateTime<Utc>>,
    // Why it closed: `closed_by_owner`, `agent_disconnected`, `idle`, ...
    #[oai(skip_serializing_if_is_none)]
    close_reason: Option<Wire<CloseReason>>,
}

impl From<&Session> for StatusDto {
    fn from(s: &Session) -> Self {
        Self {
            session_id: s.id().as_uuid(),
            agent_id: s.agent().as_uuid(),
            status: Wire(s.status()),
            opened_at: to_datetime(s.opened_at()),
            last_activity: to_datetime(s.last_activity()),
            closed_at: s.closed_at().map(to_datetime),
            close_reason: s.close_reason().map(Wire),
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
#[OpenApi(prefix_path = "/api/v1")]
impl<P: Ports> Handlers<P, Tunnels> {
    /// Open a tunnel to a connected agent. Answers once the agent has confirmed it.
    #[oai(
        path = "/tunnel/open",
        method = "post",
        tag = "ApiTags::Tunnel",
        operation_id = "openTunnel"
    )]
    async fn open(&self, auth: TechAuth, body: Json<OpenBody>) -> OpenResponse {
        match self
            .app
            .open_tunnel_with(
                auth.0.actor,
                Some(auth.0.token),
                AgentId::from_uuid(body.agent_id),
            )
            .await
        {
            Ok(session) => OpenResponse::Ok(Json(OpenedResponse {
                session_id: session.id().as_uuid(),
                status: Wire(session.status()),
            })),
            Err(e @ OpenTunnelError::Forbidden) => {
                OpenResponse::Forbidden(error(ApiErrorCode::Forbidden, e.to_string()))
            }
            Err(e @ (OpenTunnelError::AgentOffline(_) | OpenTunnelError::AgentGone)) => {
                OpenResponse::NotFound(error(ApiErrorCode::AgentNotConnected, e.to_string()))
            }
            Err(e @ OpenTunnelError::Conflict(_)) => {
                OpenResponse::Conflict(error(ApiErrorCode::SessionExists, e.to_string()))
            }
            Err(e @ OpenTunnelError::Refused(_)) => {
                OpenResponse::Conflict(error(ApiErrorCode::AgentRefused, e.to_string()))
            }
            Err(e @ OpenTunnelError::Timeout(_)) => {
                OpenResponse::Timeout(error(ApiErrorCode::AgentTimeout, e.to_string()))
            }
            Err(e @ OpenTunnelError::TooManySessions(_)) => {
                OpenResponse::TooManySessions(error(ApiErrorCode::TooManySessions, e.to_string()))
            }
            Err(e @ OpenTunnelError::Overloaded) => {
                OpenResponse::Unavailable(error(ApiErrorCode::AgentBusy, e.to_string()))
            }
            Err(e @ OpenTunnelError::Store(_)) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "tunnel not opened: database unavailable");
                OpenResponse::Unavailable(error(ApiErrorCode::DatabaseUnavailable, e.to_string()))
            }
        }
    }

    /// Close a tunnel (its owner, or an admin). Idempotent.
    #[oai(
        path = "/tunnel/close",
        method = "post",
        tag = "ApiTags::Tunnel",
        operation_id = "closeTunnel"
    )]
    async fn close(&self, auth: TechAuth, body: Json<CloseBody>) -> CloseResponse {
        let id = SessionId::from_uuid(body.session_id);
        match self.app.close_tunnel(auth.0.actor, id).await {
            Ok(session) => CloseResponse::Ok(Json(ClosedResponse {
                status: Wire(session.status()),
                session_id: id.as_uuid(),
                // A closed session has its reason; closing by hand is the owner's (or an
                // admin's, which the session then names).
                close_reason: Wire(session.close_reason().unwrap_or(CloseReason::ClosedByOwner)),
            })),
            Err(e @ CloseTunnelError::NotFound(_)) => {
                CloseResponse::NotFound(error(ApiErrorCode::SessionNotFound, e.to_string()))
            }
            Err(e @ CloseTunnelError::Forbidden(_)) => {
                CloseResponse::Forbidden(error(ApiErrorCode::Forbidden, e.to_string()))
            }
            Err(e @ CloseTunnelError::Store(_)) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "tunnel not closed: database unavailable");
                CloseResponse::Unavailable(error(ApiErrorCode::DatabaseUnavailable, e.to_string()))
            }
        }
    }

    /// A session's status, for its owner.
    #[oai(
        path = "/tunnel/status/:session_id",
        method = "get",
        tag = "ApiTags::Tunnel",
        operation_id = "getTunnelStatus"
    )]
    async fn status(
        &self,
        auth: TechAuth,
        /// The tunnel session's id (from `openTunnel`).
        #[oai(name = "session_id", example = "crate::examples::id")]
        session_id: Path<Uuid>,
    ) -> StatusResponse {
        match self
            .app
            .tunnel_status(auth.0.actor, SessionId::from_uuid(session_id.0))
            .await
        {
            Ok(session) => StatusResponse::Ok(Json(StatusDto::from(&session))),
            Err(e @ GetTunnelStatusError::NotFound(_)) => {
                StatusResponse::NotFound(error(ApiErrorCode::SessionNotFound, e.to_string()))
            }
            Err(e @ GetTunnelStatusError::Forbidden(_)) => {
                StatusResponse::Forbidden(error(ApiErrorCode::Forbidden, e.to_string()))
            }
            Err(e @ GetTunnelStatusError::Store(_)) => {
                StatusResponse::Internal(internal("tunnel_status", &e))
            }
        }
    }
}
