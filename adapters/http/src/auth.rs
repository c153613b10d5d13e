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
    /// The server failed; details are in its log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

#[OpenApi(prefix_path = "/api/v1")]
impl<P: Ports> Handlers<P, Auth> {
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
                    LoginResponse::Internal(error(
                        ApiErrorCode::Internal,
                        "internal error; see the server log",
                    ))
                }
            },
            Err(LoginError::InvalidCredentials) => LoginResponse::Unauthorized(error(
                ApiErrorCode::InvalidCredentials,
                "invalid username or password",
            )),
            Err(e @ LoginError::Store(_)) => LoginResponse::Internal(internal("login", &e)),
        }
    }
}
