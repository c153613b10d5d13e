//! Enrollment tokens (admins): create, list, revoke.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::classify::About;
use crate::{ApiClient, ClientError, REQUEST_TIMEOUT};

/// `POST /api/v1/enrollment-tokens`: the token is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedEnrollmentDto {
    pub enrollment_id: Uuid,
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// One token of `GET /api/v1/enrollment-tokens` (never the token itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollmentDto {
    pub enrollment_id: Uuid,
    pub group: String,
    pub uses: u32,
    pub uses_allowed: u32,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct CreateBody<'a> {
    group: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    uses: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in_secs: Option<u64>,
}

impl ApiClient {
    /// Creates an enrollment token for `group`.
    ///
    /// # Errors
    /// [`ClientError::BadRequest`] for an unknown group or out-of-range values,
    /// [`ClientError::Forbidden`] for non-admins, auth, transport and server errors.
    pub async fn create_enrollment(
        &self,
        group: &str,
        uses: Option<u32>,
        expires_in_secs: Option<u64>,
    ) -> Result<CreatedEnrollmentDto, ClientError> {
        let request = self
            .request(Method::POST, "api/v1/enrollment-tokens", true)?
            .json(&CreateBody {
                group,
                uses,
                expires_in_secs,
            });
        self.json(request, About::Agents, REQUEST_TIMEOUT).await
    }

    /// Every enrollment token, newest first.
    ///
    /// # Errors
    /// As [`Self::create_enrollment`].
    pub async fn enrollments(&self) -> Result<Vec<EnrollmentDto>, ClientError> {
        let request = self.request(Method::GET, "api/v1/enrollment-tokens", true)?;
        self.json(request, About::Agents, REQUEST_TIMEOUT).await
    }

    /// Revokes an enrollment token.
    ///
    /// # Errors
    /// As [`Self::create_enrollment`]; an unknown id is a protocol error naming it.
    pub async fn revoke_enrollment(&self, id: Uuid) -> Result<(), ClientError> {
        let path = format!("api/v1/enrollment-tokens/{id}");
        let request = self.request(Method::DELETE, &path, true)?;
        self.send(request, About::Agents, Some(REQUEST_TIMEOUT))
            .await?;
        Ok(())
    }
}
