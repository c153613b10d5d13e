//! Logging in, and the bearer-token check every other operation runs first.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Request;
use poem::http::StatusCode;
use poem_openapi::auth::Bearer;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, SecurityScheme};
use rmm_application::{LoginError, Ports};
use rmm_auth::{Jwt, TokenError};
use rmm_domain::Actor;
use rmm_protocol::api::ApiErrorCode;

use crate::client_addr::ClientAddr;
use crate::error::{ErrorBody, Failure, error, internal};
use crate::{ApiTags, Auth, Handlers, to_datetime};

#[derive(Debug, SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_token")]
pub struct TechAuth(pub Actor);

async fn check_token(req: &Request, bearer: Bearer) -> poem::Result<Actor> {
    let jwt = req.data::<Arc<Jwt>>().ok_or_else(|| {
        poem::Error::from_string(
            "authentication is not configured",
            poem::http::StatusCode::INTERNAL_SERVER_ERROR,
        )
    })?;
    jwt.verify(&bearer.token).map_err(|e| {
        let (code, message) = match e {
            TokenError::Expired => (ApiErrorCode::TokenExpired, "token expired: log in again"),
            TokenError::Invalid => (ApiErrorCode::Unauthenticated, "invalid token: log in again"),
        };
        poem::Error::from(Failure {
            status: StatusCode::UNAUTHORIZED,
            code,
            message: message.to_owned(),
        })
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
    /// Too many failed logins for this username or from this address (5 in a minute): refused,
    /// even with the right password, for `Retry-After` seconds.
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody>,
        /// Seconds until a login may be tried again.
        #[oai(header = "Retry-After")]
        u64,
    ),
    /// The server failed; details are in its log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The server is at capacity (password hashing): try again after `Retry-After` seconds.
    #[oai(status = 503)]
    Busy(
        Json<ErrorBody>,
        /// Seconds to wait before trying again.
        #[oai(header = "Retry-After")]
        u64,
    ),
}

/// Seconds a client is told to wait when hashing is at capacity.
const BUSY_RETRY_AFTER_SECS: u64 = 2;

#[OpenApi(prefix_path = "/api/v1")]
impl<P: Ports> Handlers<P, Auth> {
    /// Log in with a username and password; returns a JWT. Failed logins are throttled per
    /// username and per client address (see the 429 answer).
    #[oai(path = "/auth/login", method = "post", tag = "ApiTags::Auth")]
    async fn login(&self, req: &Request, body: Json<LoginBody>) -> LoginResponse {
        let client = ClientAddr::of(req);
        let username = body.username.chars().take(64).collect::<String>();
        match self
            .app
            .login(&body.username, &body.password, client.ip())
            .await
        {
            Ok(actor) => self.token_for(actor),
            Err(LoginError::InvalidCredentials) => {
                tracing::warn!(%client, username = %username.escape_debug(), "login failed: invalid username or password");
                LoginResponse::Unauthorized(error(
                    ApiErrorCode::InvalidCredentials,
                    "invalid username or password",
                ))
            }
            Err(LoginError::Throttled { retry_after }) => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                tracing::warn!(%client, username = %username.escape_debug(), retry_after_secs = secs, "login refused: too many failed logins");
                LoginResponse::TooManyRequests(
                    error(
                        ApiErrorCode::TooManyRequests,
                        format!("too many failed logins; try again in {secs} s"),
                    ),
                    secs,
                )
            }
            Err(LoginError::Busy) => {
                tracing::warn!(%client, username = %username.escape_debug(), "login refused: password hashing at capacity");
                LoginResponse::Busy(
                    error(
                        ApiErrorCode::ServerBusy,
                        "the server is busy; try again shortly",
                    ),
                    BUSY_RETRY_AFTER_SECS,
                )
            }
            Err(e @ LoginError::Store(_)) => LoginResponse::Internal(internal("login", &e)),
        }
    }
}

impl<P: Ports> Handlers<P, Auth> {
    fn token_for(&self, actor: rmm_domain::Actor) -> LoginResponse {
        match self
            .jwt
            .issue(actor, rmm_application::Clock::now(self.app.clock()))
        {
            Ok(t) => LoginResponse::Ok(Json(TokenResponse {
                token: t.token,
                expires_at: to_datetime(t.expires_at),
            })),
            Err(e) => {
                tracing::error!(error = %e, "token signing failed");
                LoginResponse::Internal(error(
                    ApiErrorCode::Internal,
                    "internal error; see the server log",
                ))
            }
        }
    }
}
