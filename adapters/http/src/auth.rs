//! Logging in, and the bearer-token check every other operation runs first.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Request;
use poem::http::StatusCode;
use poem_openapi::auth::Bearer;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, SecurityScheme};
use std::future::Future;
use std::pin::Pin;

use rmm_application::{App, AuthenticateError, LoginError, Ports, UserAdminError};
use rmm_auth::{Jwt, TokenError};
use rmm_domain::{Actor, TokenId, UserId};
use rmm_protocol::api::ApiErrorCode;

use crate::client_addr::ClientAddr;
use crate::error::{ErrorBody, Failure, error, internal};
use crate::rules::{PasswordRule, Text};
use crate::{ApiTags, Auth, Handlers, to_datetime};

/// Who is calling, and with which token (what logout revokes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The user as they are now (their current role).
    pub actor: Actor,
    pub token: TokenId,
}

#[derive(Debug, SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_token")]
pub struct TechAuth(pub Caller);

/// Checks that a signed token is still live: not revoked, its user enabled and not deleted.
/// The server puts one in the request data (`Arc<dyn Authenticate>`, see [`authenticator`]).
pub trait Authenticate: Send + Sync {
    fn authenticate(
        &self,
        user: UserId,
        token: TokenId,
    ) -> Pin<Box<dyn Future<Output = Result<Actor, AuthenticateError>> + Send + '_>>;
}

impl<P: Ports> Authenticate for App<P> {
    fn authenticate(
        &self,
        user: UserId,
        token: TokenId,
    ) -> Pin<Box<dyn Future<Output = Result<Actor, AuthenticateError>> + Send + '_>> {
        Box::pin(App::authenticate(self, user, token))
    }
}

/// `app` as the request data [`TechAuth`] checks tokens with.
pub fn authenticator<P: Ports>(app: Arc<App<P>>) -> Arc<dyn Authenticate> {
    app
}

fn refusal(status: StatusCode, code: ApiErrorCode, message: &str) -> poem::Error {
    poem::Error::from(Failure {
        status,
        code,
        message: message.to_owned(),
    })
}

/// The caller a bearer token names, checked in two steps: its signature and expiry, then
/// (every request, so that a revocation applies at once) whether it is still live.
///
/// # Errors
/// 401 for a token that is invalid, expired or no longer live; 503 when the database cannot
/// say.
pub async fn caller_of(req: &Request, token: &str) -> poem::Result<Caller> {
    let (Some(jwt), Some(check)) = (req.data::<Arc<Jwt>>(), req.data::<Arc<dyn Authenticate>>())
    else {
        return Err(refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiErrorCode::Internal,
            "authentication is not configured",
        ));
    };
    caller_with(jwt, check.as_ref(), token)
        .await
        .map_err(poem::Error::from)
}

/// [`caller_of`] with its checkers at hand (a long-lived stream checks its token again).
pub(crate) async fn caller_with(
    jwt: &Jwt,
    check: &dyn Authenticate,
    token: &str,
) -> Result<Caller, Failure> {
    let failure = |status, code, message: &str| Failure {
        status,
        code,
        message: message.to_owned(),
    };
    let verified = jwt.verify(token).map_err(|e| {
        let (code, message) = match e {
            TokenError::Expired => (ApiErrorCode::TokenExpired, "token expired: log in again"),
            TokenError::Invalid => (ApiErrorCode::Unauthenticated, "invalid token: log in again"),
        };
        failure(StatusCode::UNAUTHORIZED, code, message)
    })?;
    match check.authenticate(verified.user, verified.id).await {
        Ok(actor) => Ok(Caller {
            actor,
            token: verified.id,
        }),
        Err(AuthenticateError::Revoked) => Err(failure(
            StatusCode::UNAUTHORIZED,
            ApiErrorCode::TokenRevoked,
            "token revoked (logged out, password changed, or user disabled): log in again",
        )),
        Err(e @ AuthenticateError::Store(_)) => {
            tracing::error!(error = %e, source = ?std::error::Error::source(&e), "token check failed");
            Err(failure(
                StatusCode::SERVICE_UNAVAILABLE,
                ApiErrorCode::DatabaseUnavailable,
                "the database is unavailable; try again",
            ))
        }
    }
}

async fn check_token(req: &Request, bearer: Bearer) -> poem::Result<Caller> {
    caller_of(req, &bearer.token).await
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
    /// Malformed JSON, or a field missing (`invalid_request`).
    #[oai(status = 400)]
    #[allow(dead_code)] // Answered by the body parser; listed for the API docs.
    BadRequest(Json<ErrorBody>),
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
    /// The body is not JSON: send `Content-Type: application/json`.
    #[oai(status = 415)]
    #[allow(dead_code)] // Answered by the body parser; listed for the API docs.
    UnsupportedMediaType(Json<ErrorBody>),
}

#[derive(Debug, Object)]
struct ChangePasswordBody {
    current_password: String,
    /// At least 8 characters.
    new_password: Text<PasswordRule>,
}

#[derive(ApiResponse)]
enum ChangePasswordResponse {
    /// Changed. Every other token of the user is revoked; the one used here stays valid.
    #[oai(status = 204)]
    NoContent,
    /// The new password is too short.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing, expired, revoked or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    /// The current password is wrong (`invalid_credentials`).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// The database is unavailable, or password hashing is at capacity; nothing changed.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
    /// The body is not JSON: send `Content-Type: application/json`.
    #[oai(status = 415)]
    #[allow(dead_code)] // Answered by the body parser; listed for the API docs.
    UnsupportedMediaType(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum LogoutResponse {
    /// The token is revoked: every request with it answers 401 `token_revoked`.
    #[oai(status = 204)]
    NoContent,
    /// Missing, expired, revoked or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    /// The database is unavailable; the token is still valid.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// The `outcome` label of `rmm_logins_total` for a login's answer: `ok`, `bad_credentials`,
/// `throttled`, `busy` (password hashing at capacity), `unavailable` (the database) or `error`.
fn login_outcome(response: &LoginResponse) -> &'static str {
    match response {
        LoginResponse::Ok(_) => "ok",
        LoginResponse::Unauthorized(_) => "bad_credentials",
        LoginResponse::TooManyRequests(..) => "throttled",
        LoginResponse::Busy(body, _) if body.code.0 == ApiErrorCode::DatabaseUnavailable => {
            "unavailable"
        }
        LoginResponse::Busy(..) => "busy",
        // Never built here (the body parser answers 400 and 415 before the handler runs).
        LoginResponse::Internal(_)
        | LoginResponse::BadRequest(_)
        | LoginResponse::UnsupportedMediaType(_) => "error",
    }
}

/// Seconds a client is told to wait when hashing is at capacity.
const BUSY_RETRY_AFTER_SECS: u64 = 2;

#[OpenApi(prefix_path = "/api/v1")]
impl<P: Ports> Handlers<P, Auth> {
    /// Log in with a username and password; returns a JWT. Failed logins are throttled per
    /// username and per client address (see the 429 answer).
    #[oai(
        path = "/auth/login",
        method = "post",
        tag = "ApiTags::Auth",
        operation_id = "login"
    )]
    async fn login(&self, req: &Request, body: Json<LoginBody>) -> LoginResponse {
        let response = self.try_login(req, &body).await;
        metrics::counter!("rmm_logins_total", "outcome" => login_outcome(&response)).increment(1);
        response
    }

    /// Change your own password. Every other token of yours is revoked; this one stays.
    #[oai(
        path = "/auth/password",
        method = "post",
        tag = "ApiTags::Auth",
        operation_id = "changePassword"
    )]
    async fn change_password(
        &self,
        auth: TechAuth,
        body: Json<ChangePasswordBody>,
    ) -> ChangePasswordResponse {
        let Caller { actor, token } = auth.0;
        let changed = self
            .app
            .change_own_password(actor, token, &body.current_password, &body.new_password)
            .await;
        match changed {
            Ok(()) => ChangePasswordResponse::NoContent,
            Err(e @ UserAdminError::WrongPassword) => ChangePasswordResponse::Forbidden(error(
                ApiErrorCode::InvalidCredentials,
                e.to_string(),
            )),
            Err(e @ (UserAdminError::WeakPassword | UserAdminError::Invalid(_))) => {
                ChangePasswordResponse::BadRequest(error(
                    ApiErrorCode::InvalidRequest,
                    e.to_string(),
                ))
            }
            Err(e @ UserAdminError::Busy) => {
                ChangePasswordResponse::Unavailable(error(ApiErrorCode::ServerBusy, e.to_string()))
            }
            Err(e) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "password change failed");
                ChangePasswordResponse::Unavailable(error(
                    ApiErrorCode::DatabaseUnavailable,
                    "the password could not be changed; nothing was changed",
                ))
            }
        }
    }

    /// Log out: revokes the token this request carries.
    #[oai(
        path = "/auth/logout",
        method = "post",
        tag = "ApiTags::Auth",
        operation_id = "logout"
    )]
    async fn logout(&self, auth: TechAuth) -> LogoutResponse {
        let Caller { actor, token } = auth.0;
        match self.app.logout(actor, token).await {
            Ok(_) => LogoutResponse::NoContent,
            Err(e) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "logout failed");
                LogoutResponse::Unavailable(error(
                    ApiErrorCode::DatabaseUnavailable,
                    "the database is unavailable; the token is still valid",
                ))
            }
        }
    }
}

impl<P: Ports> Handlers<P, Auth> {
    /// A login's answer (see `login`).
    async fn try_login(&self, req: &Request, body: &LoginBody) -> LoginResponse {
        let client = ClientAddr::of(req);
        let username = body.username.chars().take(64).collect::<String>();
        match self
            .app
            .login(&body.username, &body.password, client.ip())
            .await
        {
            Ok(actor) => self.token_for(actor).await,
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

    /// Stores a new token for `actor` (so it can be revoked) and signs it.
    async fn token_for(&self, actor: Actor) -> LoginResponse {
        let stored = match self.app.issue_token(actor, self.jwt.ttl()).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "storing a token failed");
                return LoginResponse::Busy(
                    error(
                        ApiErrorCode::DatabaseUnavailable,
                        "the database is unavailable; try again",
                    ),
                    BUSY_RETRY_AFTER_SECS,
                );
            }
        };
        match self
            .jwt
            .issue(actor, stored.id, stored.issued_at, stored.expires_at)
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
