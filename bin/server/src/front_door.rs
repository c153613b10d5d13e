//! What every request passes first: its client address is settled (the trusted-proxy rule,
//! [`ClientAddr`]), a JSON body is read with a bound on its size and time before any handler
//! sees it, every 401 and 403 is logged with the client (the login logs its own, with the
//! username), and every 503 of the API carries a `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use poem::http::{HeaderValue, Method, StatusCode, header};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use rmm_auth::Jwt;
use rmm_http::client_addr::{ClientAddr, TrustedProxies};
use rmm_http::json_error;
use rmm_protocol::api::ApiErrorCode;
use rmm_protocol::limits::AGENT_WS_PATH;
use tokio::io::AsyncReadExt as _;

/// `Retry-After` of a 503 that set none, seconds (not on the agents' WebSocket, whose agents
/// back off on their own).
const RETRY_AFTER_UNAVAILABLE: &str = "1";

/// The login path: its refusals are logged by the login itself, with the username.
const LOGIN_PATH: &str = "/api/v1/auth/login";

/// The middleware (see the module's documentation).
#[derive(Debug, Clone)]
pub struct FrontDoor {
    pub max_json_body: usize,
    /// How long a JSON body may take to arrive.
    pub body_timeout: Duration,
    pub trusted_proxies: TrustedProxies,
    /// To name the user of a refused request with a valid token.
    pub jwt: Arc<Jwt>,
}

impl<E: Endpoint> Middleware<E> for FrontDoor {
    type Output = FrontDoorEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        FrontDoorEndpoint {
            inner,
            door: self.clone(),
        }
    }
}

/// [`FrontDoor`] around an endpoint.
#[derive(Debug)]
pub struct FrontDoorEndpoint<E> {
    inner: E,
    door: FrontDoor,
}

impl<E: Endpoint> Endpoint for FrontDoorEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let client = ClientAddr(self.door.trusted_proxies.of_request(&req));
        req.extensions_mut().insert(client);
        if let Err(refused) = self.door.read_json_body(&mut req).await {
            tracing::warn!(%client, method = %req.method(), path = req.uri().path(), status = refused.status().as_u16(), "request body refused");
            return Ok(refused);
        }
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let authorization = req.headers().get(header::AUTHORIZATION).cloned();
        let mut resp = self.inner.get_response(req).await;
        let status = resp.status();
        if status == StatusCode::SERVICE_UNAVAILABLE
            && path != AGENT_WS_PATH
            && !resp.headers().contains_key(header::RETRY_AFTER)
        {
            // Every 503 (the database away, an agent saturated or gone) is worth a retry
            // soon: say when, so clients need no guess. Handlers with a better hint (a login
            // queue) set their own. Not the agents' handshake: an agent told Retry-After
            // skips its backoff, and a fleet must back off from a database outage.
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_UNAVAILABLE),
            );
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) && path != LOGIN_PATH
        {
            self.door
                .log_refusal(client, &method, &path, status, authorization.as_ref());
        }
        Ok(resp)
    }
}

impl FrontDoor {
    /// Reads a JSON body (at most `max_json_body` bytes, within `body_timeout`) into memory
    /// for the handler; other bodies (file uploads) are left to stream.
    ///
    /// # Errors
    /// The answer when the body is too large (413, read no further), too slow (408) or
    /// broken off (400).
    async fn read_json_body(&self, req: &mut Request) -> Result<(), Response> {
        if !is_json(req) {
            return Ok(());
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let max = u64::try_from(self.max_json_body).unwrap_or(u64::MAX);
        if declared.is_some_and(|len| len > max) {
            return Err(self.too_large());
        }
        let mut body = req
            .take_body()
            .into_async_read()
            .take(max.saturating_add(1));
        let mut bytes = Vec::new();
        match tokio::time::timeout(self.body_timeout, body.read_to_end(&mut bytes)).await {
            Err(_) => Err(closing(json_error(
                StatusCode::REQUEST_TIMEOUT,
                ApiErrorCode::RequestTimeout,
                &format!(
                    "the request body did not arrive within {} s",
                    self.body_timeout.as_secs()
                ),
            ))),
            Ok(Err(_)) => Err(closing(json_error(
                StatusCode::BAD_REQUEST,
                ApiErrorCode::InvalidRequest,
                "the request body could not be read",
            ))),
            Ok(Ok(_)) if bytes.len() > self.max_json_body => Err(self.too_large()),
            Ok(Ok(_)) => {
                req.set_body(bytes);
                Ok(())
            }
        }
    }

    fn too_large(&self) -> Response {
        closing(json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            ApiErrorCode::PayloadTooLarge,
            &format!(
                "the JSON body is larger than {} bytes (RMM_MAX_JSON_BODY)",
                self.max_json_body
            ),
        ))
    }

    fn log_refusal(
        &self,
        client: ClientAddr,
        method: &Method,
        path: &str,
        status: StatusCode,
        authorization: Option<&HeaderValue>,
    ) {
        let user = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|token| self.jwt.verify(token.trim()).ok())
            .map(|verified| verified.user.to_string());
        tracing::warn!(
            %client,
            user_id = user.as_deref().unwrap_or("-"),
            %method,
            path,
            status = status.as_u16(),
            "request refused"
        );
    }
}

/// Whether the request says its body is JSON (`application/json`, or `+json`).
fn is_json(req: &Request) -> bool {
    req.content_type().is_some_and(|ct| {
        let essence = ct.split(';').next().unwrap_or("").trim();
        essence.eq_ignore_ascii_case("application/json")
            || essence
                .rsplit_once('+')
                .is_some_and(|(_, suffix)| suffix.eq_ignore_ascii_case("json"))
    })
}

/// `resp` with `Connection: close`: the rest of a refused body is not read, so the
/// connection cannot carry another request.
fn closing(resp: Response) -> Response {
    let mut resp = resp.into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}
