//! Admins' calls on agents: revoke, a new key, rename or move to another group.

use reqwest::Method;
use rmm_domain::AgentId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::classify::About;
use crate::{ApiClient, ClientError, REQUEST_TIMEOUT};

/// `POST /api/v1/agents/{agent_id}/rotate-key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotatedKeyResponse {
    pub agent_id: Uuid,
    /// The new key, shown this once.
    pub agent_key: String,
}

/// `PATCH /api/v1/agents/{agent_id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdatedAgentResponse {
    pub agent_id: Uuid,
    pub name: String,
    pub group: String,
    pub revoked: bool,
}

#[derive(Serialize)]
struct UpdateBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
}

impl ApiClient {
    /// Revokes an agent (admins): its key is refused from then on.
    ///
    /// # Errors
    /// [`ClientError::Forbidden`] for non-admins; auth, transport and server errors.
    pub async fn revoke_agent(&self, agent: AgentId) -> Result<(), ClientError> {
        let path = format!("api/v1/agents/{agent}");
        let request = self.request(Method::DELETE, &path, true)?;
        self.send(request, About::Agents, Some(REQUEST_TIMEOUT))
            .await?;
        Ok(())
    }

    /// Gives an agent a new key (admins); the answer carries it, once.
    ///
    /// # Errors
    /// [`ClientError::Forbidden`], [`ClientError::Conflict`] for a revoked agent; auth,
    /// transport and server errors.
    pub async fn rotate_agent_key(
        &self,
        agent: AgentId,
    ) -> Result<RotatedKeyResponse, ClientError> {
        let path = format!("api/v1/agents/{agent}/rotate-key");
        let request = self.request(Method::POST, &path, true)?;
        self.json(request, About::Agents, REQUEST_TIMEOUT).await
    }

    /// Renames an agent and/or moves it to the group named `group` (admins).
    ///
    /// # Errors
    /// [`ClientError::BadRequest`] (an unknown group, a bad name), [`ClientError::Conflict`]
    /// (a taken name), [`ClientError::Forbidden`]; auth, transport and server errors.
    pub async fn update_agent(
        &self,
        agent: AgentId,
        name: Option<&str>,
        group: Option<&str>,
    ) -> Result<UpdatedAgentResponse, ClientError> {
        let path = format!("api/v1/agents/{agent}");
        let request = self
            .request(Method::PATCH, &path, true)?
            .json(&UpdateBody { name, group });
        self.json(request, About::Agents, REQUEST_TIMEOUT).await
    }
}
