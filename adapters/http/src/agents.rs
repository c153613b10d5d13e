//! Registering and listing agents.

use chrono::{DateTime, Utc};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use rmm_application::{AgentView, ListAgentsError, Ports, RegisterAgentError};
use rmm_domain::AgentName;
use rmm_protocol::api::ApiErrorCode;
use uuid::Uuid;

use crate::auth::TechAuth;
use crate::error::{ErrorBody, error, internal};
use crate::rules::{AgentNameRule, Text};
use crate::wire_enum::{AgentModeDto, Wire};
use crate::{Agents, ApiTags, Handlers, to_datetime};

#[derive(Debug, Object)]
struct RegisterAgentBody {
    /// A display name, unique among agents (e.g. the hostname).
    name: Text<AgentNameRule>,
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
    /// The body is not JSON: send `Content-Type: application/json`.
    #[oai(status = 415)]
    #[allow(dead_code)] // Answered by the body parser; listed for the API docs.
    UnsupportedMediaType(Json<ErrorBody>),
}

#[derive(Debug, Object)]
pub(crate) struct AgentDto {
    agent_id: Uuid,
    name: String,
    /// The group (customer, site) it belongs to.
    group: String,
    /// Revoked (`DELETE /api/v1/agents/{agent_id}`): its key is refused; listed for its
    /// history.
    revoked: bool,
    /// Whether the agent holds a WebSocket to this server now; in cluster mode, to any node
    /// of the cluster (as this node last heard from the others, within a second).
    connected: bool,
    // `heartbeat`, `tunnel`, or `offline` when not connected.
    mode: Wire<AgentModeDto>,
    /// Last heartbeat or frame; null if never seen.
    #[oai(nullable)]
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

#[OpenApi(prefix_path = "/api/v1")]
impl<P: Ports> Handlers<P, Agents> {
    /// Register an agent (admins only). The response carries the agent's key, once.
    #[oai(
        path = "/agents",
        method = "post",
        tag = "ApiTags::Agents",
        operation_id = "registerAgent"
    )]
    async fn register_agent(
        &self,
        auth: TechAuth,
        body: Json<RegisterAgentBody>,
    ) -> RegisterAgentResponse {
        let name = match AgentName::parse(&body.name) {
            Ok(name) => name,
            Err(e) => {
                return RegisterAgentResponse::BadRequest(error(
                    ApiErrorCode::InvalidRequest,
                    e.to_string(),
                ));
            }
        };
        match self.app.register_agent(auth.0.actor, name).await {
            Ok(agent) => RegisterAgentResponse::Created(Json(RegisteredAgentResponse {
                agent_id: agent.id.as_uuid(),
                agent_key: agent.key.secret,
            })),
            Err(e @ RegisterAgentError::Forbidden) => {
                RegisterAgentResponse::Forbidden(error(ApiErrorCode::Forbidden, e.to_string()))
            }
            Err(e @ RegisterAgentError::NameTaken(_)) => {
                RegisterAgentResponse::Conflict(error(ApiErrorCode::AgentExists, e.to_string()))
            }
            Err(e @ RegisterAgentError::Store(_)) => {
                RegisterAgentResponse::Internal(internal("register_agent", &e))
            }
        }
    }

    /// List agents with their connection state and last heartbeat: every agent for admins
    /// and auditors, the agents of their groups for technicians.
    #[oai(
        path = "/agents",
        method = "get",
        tag = "ApiTags::Agents",
        operation_id = "listAgents"
    )]
    async fn list_agents(&self, auth: TechAuth) -> ListAgentsResponse {
        match self.app.list_agents_for(auth.0.actor).await {
            Ok(agents) => ListAgentsResponse::Ok(Json(agent_dtos(agents))),
            Err(e @ ListAgentsError::Store(_)) => {
                ListAgentsResponse::Internal(internal("list_agents", &e))
            }
        }
    }
}

/// Agents as `GET /api/v1/agents` lists them (the live list sends the same).
pub(crate) fn agent_dtos(agents: Vec<AgentView>) -> Vec<AgentDto> {
    agents
        .into_iter()
        .map(|a| AgentDto {
            agent_id: a.record.id.as_uuid(),
            name: a.record.name.as_str().to_owned(),
            group: a.record.group.as_str().to_owned(),
            revoked: a.record.revoked,
            connected: a.mode.is_some(),
            mode: Wire(AgentModeDto::of(a.mode)),
            last_seen: a.record.last_seen.map(to_datetime),
            agent_version: a.record.facts.version,
            hostname: a.record.facts.hostname,
            os: a.record.facts.os,
            uptime_secs: a.record.facts.uptime_secs,
        })
        .collect()
}
