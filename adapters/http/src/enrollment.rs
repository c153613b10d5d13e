//! Enrollment: admins' enrollment tokens, and machines enrolling themselves with one.

use std::time::Duration;

use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use rmm_application::{EnrollError, EnrollmentAdminError, EnrollmentRecord, Ports};
use rmm_domain::{AgentName, EnrollmentId};
use rmm_protocol::api::ApiErrorCode;
use uuid::Uuid;

use crate::auth::TechAuth;
use crate::client_addr::ClientAddr;
use crate::error::{ErrorBody, error, internal};
use crate::rules::{AgentNameRule, GroupNameRule, Text};
use crate::{ApiTags, Enrollment, Handlers, to_datetime};

#[derive(Debug, Object)]
struct CreateEnrollmentBody {
    /// The group the enrolled agents join (it must exist).
    group: Text<GroupNameRule>,
    /// How many machines may enroll with it: 1 (default) to 10000.
    #[oai(nullable, validator(minimum(value = "1"), maximum(value = "10000")))]
    uses: Option<u32>,
    /// Seconds until it expires: 60 to 2592000 (30 days); default 86400.
    #[oai(nullable, validator(minimum(value = "60"), maximum(value = "2592000")))]
    expires_in_secs: Option<u64>,
}

#[derive(Debug, Object)]
struct CreatedEnrollmentDto {
    enrollment_id: Uuid,
    /// The token. Shown once: the server keeps only its SHA-256.
    token: String,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
struct EnrollmentDto {
    enrollment_id: Uuid,
    group: String,
    /// Machines enrolled with it so far.
    uses: u32,
    uses_allowed: u32,
    expires_at: DateTime<Utc>,
    revoked: bool,
    created_at: DateTime<Utc>,
}

impl From<EnrollmentRecord> for EnrollmentDto {
    fn from(e: EnrollmentRecord) -> Self {
        Self {
            enrollment_id: e.id.as_uuid(),
            group: e.group.as_str().to_owned(),
            uses: e.uses,
            uses_allowed: e.uses_allowed,
            expires_at: to_datetime(e.expires_at),
            revoked: e.revoked,
            created_at: to_datetime(e.created_at),
        }
    }
}

#[derive(Debug, Object)]
struct EnrollBody {
    /// An enrollment token from `POST /api/v1/enrollment-tokens`.
    token: String,
    /// The agent's name, unique among agents (e.g. the hostname).
    name: Text<AgentNameRule>,
}

#[derive(Debug, Object)]
struct EnrolledDto {
    agent_id: Uuid,
    /// The agent's own key. Shown once: the server keeps only its SHA-256.
    agent_key: String,
    name: String,
    /// The group of the token.
    group: String,
}

/// A response enum for one admin operation on tokens: its success, then the failures they
/// share.
macro_rules! admin_response {
    ($name:ident { $($(#[$attr:meta])* $variant:ident $(($body:ty))?,)+ }) => {
        #[derive(ApiResponse)]
        enum $name {
            $($(#[$attr])* $variant $(($body))?,)+
            /// Uses or expiry out of range, or a bad group name (the message names it).
            #[oai(status = 400)]
            #[allow(dead_code)] // Not every operation takes a body.
            BadRequest(Json<ErrorBody>),
            /// Missing, expired, revoked or invalid token.
            #[oai(status = 401)]
            #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
            Unauthorized(Json<ErrorBody>),
            /// Only admins manage enrollment tokens.
            #[oai(status = 403)]
            Forbidden(Json<ErrorBody>),
            /// No such enrollment token (`enrollment_not_found`).
            #[oai(status = 404)]
            #[allow(dead_code)] // Not every operation names a token.
            NotFound(Json<ErrorBody>),
            /// The group named does not exist (`group_not_found`).
            #[oai(status = 409)]
            #[allow(dead_code)] // Not every operation names a group.
            Conflict(Json<ErrorBody>),
            /// The database is unavailable; nothing was changed.
            #[oai(status = 503)]
            Unavailable(Json<ErrorBody>),
        }

        impl From<EnrollmentAdminError> for $name {
            fn from(e: EnrollmentAdminError) -> Self {
                let message = e.to_string();
                match e {
                    EnrollmentAdminError::Forbidden => {
                        Self::Forbidden(error(ApiErrorCode::Forbidden, message))
                    }
                    EnrollmentAdminError::UnknownGroup(_) => {
                        Self::Conflict(error(ApiErrorCode::GroupNotFound, message))
                    }
                    EnrollmentAdminError::Invalid(_) => {
                        Self::BadRequest(error(ApiErrorCode::InvalidRequest, message))
                    }
                    EnrollmentAdminError::NotFound(_) => {
                        Self::NotFound(error(ApiErrorCode::EnrollmentNotFound, message))
                    }
                    EnrollmentAdminError::Store(_) => {
                        tracing::error!(error = %e, source = ?std::error::Error::source(&e), "enrollment token operation failed");
                        Self::Unavailable(error(
                            ApiErrorCode::DatabaseUnavailable,
                            "the database is unavailable; nothing was changed",
                        ))
                    }
                }
            }
        }
    };
}

admin_response!(CreateEnrollmentResponse {
    /// Created; hand the token to the machines to enroll.
    #[oai(status = 201)]
    Created(Json<CreatedEnrollmentDto>),
    /// The body is not JSON: send `Content-Type: application/json`.
    #[oai(status = 415)]
    #[allow(dead_code)] // Answered by the body parser; listed for the API docs.
    UnsupportedMediaType(Json<ErrorBody>),
});

admin_response!(ListEnrollmentsResponse {
    /// Every enrollment token, newest first (never the token itself).
    #[oai(status = 200)]
    Ok(Json<Vec<EnrollmentDto>>),
});

admin_response!(RevokeEnrollmentResponse {
    /// Revoked: it enrolls no further machine.
    #[oai(status = 204)]
    NoContent,
});

#[derive(ApiResponse)]
enum EnrollResponse {
    /// Enrolled; the agent runs with this key.
    #[oai(status = 201)]
    Created(Json<EnrolledDto>),
    /// The name is empty, too long or has control characters.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// The enrollment token is unknown (`enrollment_invalid`), expired
    /// (`enrollment_expired`), used up (`enrollment_used_up`) or revoked
    /// (`enrollment_revoked`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// An agent with this name exists (`agent_exists`); the token's use is not counted.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// Too many failed enrollments from this address (5 in a minute): refused for
    /// `Retry-After` seconds.
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody>,
        /// Seconds until an enrollment may be tried again.
        #[oai(header = "Retry-After")]
        u64,
    ),
    /// The server failed; details are in its log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The body is not JSON: send `Content-Type: application/json`.
    #[oai(status = 415)]
    #[allow(dead_code)] // Answered by the body parser; listed for the API docs.
    UnsupportedMediaType(Json<ErrorBody>),
}

#[OpenApi(prefix_path = "/api/v1")]
impl<P: Ports> Handlers<P, Enrollment> {
    /// Create an enrollment token for a group (admins only). The token is shown once.
    #[oai(
        path = "/enrollment-tokens",
        method = "post",
        tag = "ApiTags::Enrollment",
        operation_id = "createEnrollmentToken"
    )]
    async fn create_enrollment(
        &self,
        auth: TechAuth,
        body: Json<CreateEnrollmentBody>,
    ) -> CreateEnrollmentResponse {
        let ttl = body.expires_in_secs.map(Duration::from_secs);
        match self
            .app
            .create_enrollment(auth.0.actor, &body.group, body.uses, ttl)
            .await
        {
            Ok(created) => CreateEnrollmentResponse::Created(Json(CreatedEnrollmentDto {
                enrollment_id: created.id.as_uuid(),
                token: created.token.secret,
                expires_at: to_datetime(created.expires_at),
            })),
            Err(e) => e.into(),
        }
    }

    /// List enrollment tokens (admins only), newest first.
    #[oai(
        path = "/enrollment-tokens",
        method = "get",
        tag = "ApiTags::Enrollment",
        operation_id = "listEnrollmentTokens"
    )]
    async fn list_enrollments(&self, auth: TechAuth) -> ListEnrollmentsResponse {
        match self.app.list_enrollments(auth.0.actor).await {
            Ok(list) => ListEnrollmentsResponse::Ok(Json(
                list.into_iter().map(EnrollmentDto::from).collect(),
            )),
            Err(e) => e.into(),
        }
    }

    /// Revoke an enrollment token (admins only). Agents enrolled with it stay.
    #[oai(
        path = "/enrollment-tokens/:enrollment_id",
        method = "delete",
        tag = "ApiTags::Enrollment",
        operation_id = "revokeEnrollmentToken"
    )]
    async fn revoke_enrollment(
        &self,
        auth: TechAuth,
        /// The enrollment token's id (from `listEnrollmentTokens`).
        #[oai(name = "enrollment_id", example = "crate::examples::id")]
        enrollment_id: Path<Uuid>,
    ) -> RevokeEnrollmentResponse {
        let id = EnrollmentId::from_uuid(enrollment_id.0);
        match self.app.revoke_enrollment(auth.0.actor, id).await {
            Ok(()) => RevokeEnrollmentResponse::NoContent,
            Err(e) => e.into(),
        }
    }

    /// Enroll this machine as an agent with an enrollment token (no user token: the
    /// enrollment token is the credential). Failures are throttled per client address.
    #[oai(
        path = "/agents/enroll",
        method = "post",
        tag = "ApiTags::Enrollment",
        operation_id = "enrollAgent"
    )]
    async fn enroll(&self, req: &Request, body: Json<EnrollBody>) -> EnrollResponse {
        let client = ClientAddr::of(req);
        let name = match AgentName::parse(&body.name) {
            Ok(name) => name,
            Err(e) => {
                return EnrollResponse::BadRequest(error(
                    ApiErrorCode::InvalidRequest,
                    e.to_string(),
                ));
            }
        };
        match self.app.enroll_agent(&body.token, name, client.ip()).await {
            Ok(enrolled) => EnrollResponse::Created(Json(EnrolledDto {
                agent_id: enrolled.record.id.as_uuid(),
                agent_key: enrolled.key.secret,
                name: enrolled.record.name.as_str().to_owned(),
                group: enrolled.record.group.as_str().to_owned(),
            })),
            Err(e) => refused(&client, e),
        }
    }
}

/// The answer to a refused enrollment, logged at WARN with the client's address.
fn refused(client: &ClientAddr, e: EnrollError) -> EnrollResponse {
    let message = e.to_string();
    let code = match e {
        EnrollError::Invalid => ApiErrorCode::EnrollmentInvalid,
        EnrollError::Expired => ApiErrorCode::EnrollmentExpired,
        EnrollError::UsedUp => ApiErrorCode::EnrollmentUsedUp,
        EnrollError::Revoked => ApiErrorCode::EnrollmentRevoked,
        EnrollError::NameTaken(_) => {
            tracing::warn!(%client, "enrollment refused: {message}");
            return EnrollResponse::Conflict(error(ApiErrorCode::AgentExists, message));
        }
        EnrollError::Throttled { retry_after } => {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            tracing::warn!(%client, retry_after_secs = secs, "enrollment refused: too many failed enrollments");
            return EnrollResponse::TooManyRequests(
                error(
                    ApiErrorCode::TooManyRequests,
                    format!("too many failed enrollments; try again in {secs} s"),
                ),
                secs,
            );
        }
        EnrollError::Store(_) => return EnrollResponse::Internal(internal("enroll", &e)),
    };
    tracing::warn!(%client, code = code.as_str(), "enrollment refused: {message}");
    EnrollResponse::Unauthorized(error(code, message))
}
