//! Agents managed by admins: revoke, a new key, rename or move to another group.

use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use rmm_application::{AgentAdminError, AgentChange, Ports};
use rmm_domain::{AgentId, AgentName, GroupName};
use rmm_protocol::api::ApiErrorCode;
use uuid::Uuid;

use crate::auth::TechAuth;
use crate::error::{ErrorBody, error};
use crate::rules::{AgentNameRule, GroupNameRule, Text};
use crate::{AgentAdmin, ApiTags, Handlers};

#[derive(Debug, Object)]
struct RotatedKey {
    agent_id: Uuid,
    /// The agent's new secret key. Shown once: the server keeps only its SHA-256.
    agent_key: String,
}

#[derive(Debug, Object)]
struct UpdateAgentBody {
    /// A new name, unique among agents.
    #[oai(nullable)]
    name: Option<Text<AgentNameRule>>,
    /// The name of an existing group to move the agent to.
    #[oai(nullable)]
    group: Option<Text<GroupNameRule>>,
}

#[derive(Debug, Object)]
struct UpdatedAgent {
    agent_id: Uuid,
    name: String,
    group: String,
    revoked: bool,
}

macro_rules! admin_response {
    ($name:ident { $($(#[$attr:meta])* $variant:ident $(($body:ty))?,)+ }) => {
        #[derive(ApiResponse)]
        enum $name {
            $($(#[$attr])* $variant $(($body))?,)+
            /// The request is malformed (a bad name or group name).
            #[oai(status = 400)]
            #[allow(dead_code)] // Not every operation takes a body.
            BadRequest(Json<ErrorBody>),
            /// Missing, expired or invalid token.
            #[oai(status = 401)]
            #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
            Unauthorized(Json<ErrorBody>),
            /// Only admins manage agents.
            #[oai(status = 403)]
            Forbidden(Json<ErrorBody>),
            /// No such agent (`agent_not_found`).
            #[oai(status = 404)]
            NotFound(Json<ErrorBody>),
            /// `agent_exists` (a taken name), `revoked_agent` (a revoked agent is kept as
            /// history: no new key, no change), or `group_not_found` (no group of that name
            /// to move it to).
            #[oai(status = 409)]
            #[allow(dead_code)] // Not every operation can conflict.
            Conflict(Json<ErrorBody>),
            /// The database does not answer; nothing was changed.
            #[oai(status = 503)]
            Unavailable(Json<ErrorBody>),
        }

        impl From<AgentAdminError> for $name {
            fn from(e: AgentAdminError) -> Self {
                let message = e.to_string();
                match e {
                    AgentAdminError::Forbidden => {
                        Self::Forbidden(error(ApiErrorCode::Forbidden, message))
                    }
                    AgentAdminError::NotFound(_) => {
                        Self::NotFound(error(ApiErrorCode::AgentNotFound, message))
                    }
                    AgentAdminError::Revoked(_) => {
                        Self::Conflict(error(ApiErrorCode::RevokedAgent, message))
                    }
                    AgentAdminError::NameTaken(_) => {
                        Self::Conflict(error(ApiErrorCode::AgentExists, message))
                    }
                    AgentAdminError::UnknownGroup(_) => {
                        Self::Conflict(error(ApiErrorCode::GroupNotFound, message))
                    }
                    AgentAdminError::Store(_) => {
                        tracing::error!(error = %e, source = ?std::error::Error::source(&e), "agent operation failed");
                        Self::Unavailable(error(
                            ApiErrorCode::DatabaseUnavailable,
                            "the change could not be made; nothing was changed",
                        ))
                    }
                }
            }
        }
    };
}

admin_response!(RevokeAgentResponse {
    /// Revoked (also when it was revoked already): the key is refused, the live connection
    /// ended, open sessions closed `agent_revoked`.
    #[oai(status = 204)]
    NoContent,
});

admin_response!(RotateKeyResponse {
    /// The new key; the old one is refused and the connection made with it ended.
    #[oai(status = 200)]
    Ok(Json<RotatedKey>),
});

admin_response!(UpdateAgentResponse {
    /// The agent as changed.
    #[oai(status = 200)]
    Ok(Json<UpdatedAgent>),
    /// The body is not JSON: send `Content-Type: application/json`.
    #[oai(status = 415)]
    #[allow(dead_code)] // Answered by the body parser; listed for the API docs.
    UnsupportedMediaType(Json<ErrorBody>),
});

fn invalid(message: String) -> UpdateAgentResponse {
    UpdateAgentResponse::BadRequest(error(ApiErrorCode::InvalidRequest, message))
}

#[OpenApi(prefix_path = "/api/v1")]
impl<P: Ports> Handlers<P, AgentAdmin> {
    /// Revoke an agent (admins only). Its key is refused from then on (401 on the agent
    /// WebSocket), its live connection is closed within a second and its open sessions are
    /// closed `agent_revoked`. It stays listed (`revoked: true`) with its history. Revoking
    /// a revoked agent answers 204 again and changes nothing.
    #[oai(
        path = "/agents/:agent_id",
        method = "delete",
        tag = "ApiTags::Agents",
        operation_id = "revokeAgent"
    )]
    async fn revoke_agent(
        &self,
        auth: TechAuth,
        /// The agent's id (from `listAgents`).
        #[oai(name = "agent_id", example = "crate::examples::id")]
        agent_id: Path<Uuid>,
    ) -> RevokeAgentResponse {
        let id = AgentId::from_uuid(agent_id.0);
        match self.app.revoke_agent(auth.0.actor, id).await {
            Ok(()) => RevokeAgentResponse::NoContent,
            Err(e) => e.into(),
        }
    }

    /// Give an agent a new key (admins only), shown once. The old key is refused from then
    /// on and the connection made with it is closed within a second.
    #[oai(
        path = "/agents/:agent_id/rotate-key",
        method = "post",
        tag = "ApiTags::Agents",
        operation_id = "rotateAgentKey"
    )]
    async fn rotate_agent_key(
        &self,
        auth: TechAuth,
        /// The agent's id (from `listAgents`).
        #[oai(name = "agent_id", example = "crate::examples::id")]
        agent_id: Path<Uuid>,
    ) -> RotateKeyResponse {
        let id = AgentId::from_uuid(agent_id.0);
        match self.app.rotate_agent_key(auth.0.actor, id).await {
            Ok(agent_key) => RotateKeyResponse::Ok(Json(RotatedKey {
                agent_id: agent_id.0,
                agent_key,
            })),
            Err(e) => e.into(),
        }
    }

    /// Rename an agent and/or move it to another group, by the group's name (admins only).
    #[oai(
        path = "/agents/:agent_id",
        method = "patch",
        tag = "ApiTags::Agents",
        operation_id = "updateAgent"
    )]
    async fn update_agent(
        &self,
        auth: TechAuth,
        /// The agent's id (from `listAgents`).
        #[oai(name = "agent_id", example = "crate::examples::id")]
        agent_id: Path<Uuid>,
        body: Json<UpdateAgentBody>,
    ) -> UpdateAgentResponse {
        let name = match body.name.as_deref().map(AgentName::parse).transpose() {
            Ok(name) => name,
            Err(e) => return invalid(e.to_string()),
        };
        let group = match body.group.as_deref().map(GroupName::parse).transpose() {
            Ok(group) => group,
            Err(e) => return invalid(e.to_string()),
        };
        let id = AgentId::from_uuid(agent_id.0);
        match self
            .app
            .update_agent(auth.0.actor, id, AgentChange { name, group })
            .await
        {
            Ok(agent) => UpdateAgentResponse::Ok(Json(UpdatedAgent {
                agent_id: agent.id.as_uuid(),
                name: agent.name.as_str().to_owned(),
                group: agent.group.as_str().to_owned(),
                revoked: agent.revoked,
            })),
            Err(e) => e.into(),
        }
    }
}
