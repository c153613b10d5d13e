//! The access log: one INFO line per request (target `rmm_server::access`), written when the
//! answer is ready, with
//!
//! - `request_id`: the client's `X-Request-Id` when it is a sane token (at most 64 of
//!   `A-Z a-z 0-9 . _ -`), else a new UUID; echoed in the answer's `X-Request-Id`, and a field
//!   of the span every log line of the request is written in, so a failed request can be
//!   followed through the log;
//! - `method`, and `route`: the route template as the OpenAPI spec writes it
//!   (`/api/v1/tunnel/status/{session_id}`), never the raw path or query (a WebSocket's
//!   `access_token` travels in the query);
//! - `status`, `duration_ms`, and `user_id`: the user a validly signed bearer token names
//!   (`-` without one).

use std::sync::Arc;
use std::time::Instant;

use poem::http::{HeaderValue, header};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use rmm_auth::Jwt;
use tracing::Instrument as _;

/// The request-id header, read and echoed.
pub const REQUEST_ID: &str = "x-request-id";

/// Routes served outside the OpenAPI document, as templates.
const OTHER_ROUTES: &[&str] = &[
    "/api/v1/openapi.json",
    "/api/v1/agent/ws",
    "/api/v1/agents/events",
    "/api/v1/tunnel/{session_id}/stream",
    "/api/v1/tunnel/{session_id}/terminals/{terminal_id}/ws",
    "/healthz",
    "/readyz",
    "/",
];

/// Folders served whole: any path under them logs as the folder with `/*`.
const FOLDERS: &[&str] = &["/docs", "/ui"];

/// The route templates a path is matched against.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    templates: Vec<Vec<String>>,
}

impl Routes {
    /// The templates of the spec's `paths` (a JSON OpenAPI document) and the other routes.
    #[must_use]
    pub fn from_spec(spec: &str) -> Self {
        let documented: Vec<String> = serde_json::from_str::<serde_json::Value>(spec)
            .ok()
            .and_then(|v| {
                v.get("paths")?
                    .as_object()
                    .map(|p| p.keys().cloned().collect())
            })
            .unwrap_or_default();
        let templates = documented
            .iter()
            .map(String::as_str)
            .chain(OTHER_ROUTES.iter().copied())
            .map(|t| t.split('/').map(str::to_owned).collect())
            .collect();
        Self { templates }
    }

    /// The template `path` matches (a `{name}` segment matches any one segment), the folder
    /// it is under, or `unmatched`.
    #[must_use]
    pub fn template_of(&self, path: &str) -> String {
        let segments: Vec<&str> = path.split('/').collect();
        let fits = |template: &&Vec<String>| {
            template.len() == segments.len()
                && template
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')))
        };
        // A literal segment beats a parameter: the template with the most literal segments.
        let best = self
            .templates
            .iter()
            .filter(fits)
            .max_by_key(|t| t.iter().filter(|s| !s.starts_with('{')).count());
        if let Some(template) = best {
            return template.join("/");
        }
        for folder in FOLDERS {
            if path
                .strip_prefix(folder)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            {
                return format!("{folder}/*");
            }
        }
        "unmatched".to_owned()
    }
}

/// The middleware (see the module's documentation).
#[derive(Debug, Clone)]
pub struct AccessLog {
    pub routes: Arc<Routes>,
    pub jwt: Arc<Jwt>,
}

impl<E: Endpoint> Middleware<E> for AccessLog {
    type Output = AccessLogEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        AccessLogEndpoint {
            inner,
            log: self.clone(),
        }
    }
}

/// [`AccessLog`] around an endpoint.
#[derive(Debug)]
pub struct AccessLogEndpoint<E> {
    inner: E,
    log: AccessLog,
}

impl<E: Endpoint> Endpoint for AccessLogEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let started = Instant::now();
        let request_id = request_id(&req);
        let method = req.method().clone();
        let route = self.log.routes.template_of(req.uri().path());
        let user = bearer_or_query_token(&req)
            .and_then(|token| self.log.jwt.verify(&token).ok())
            .map(|verified| verified.user.to_string());
        let span = tracing::info_span!("request", request_id = %request_id);
        let mut resp = self
            .inner
            .get_response(req)
            .instrument(span)
            .await
            .into_response();
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert(REQUEST_ID, value);
        }
        tracing::info!(
            target: "rmm_server::access",
            request_id = %request_id,
            %method,
            route = %route,
            status = resp.status().as_u16(),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            user_id = user.as_deref().unwrap_or("-"),
            "request"
        );
        Ok(resp)
    }
}

/// The token of `Authorization: Bearer`, or the `access_token` query parameter WebSockets
/// carry (read to name the user, never logged).
fn bearer_or_query_token(req: &Request) -> Option<String> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    bearer.or_else(|| {
        req.uri()
            .query()?
            .split('&')
            .find_map(|pair| pair.strip_prefix("access_token="))
            .map(str::to_owned)
    })
}

/// The client's request id when it is a sane token, else a new one.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::Routes;

    fn routes() -> Routes {
        Routes::from_spec(
            r#"{"paths":{"/api/v1/tunnel/status/{session_id}":{},"/api/v1/tunnel/{session_id}/commands/{command_id}":{},"/api/v1/tunnel/{session_id}/files/list":{},"/api/v1/tunnel/{session_id}/files":{}}}"#,
        )
    }

    #[test]
    fn paths_log_as_their_templates_and_never_as_themselves() {
        let r = routes();
        let id = "5ec2a6f0-0000-4000-8000-000000000001";
        assert_eq!(
            r.template_of(&format!("/api/v1/tunnel/status/{id}")),
            "/api/v1/tunnel/status/{session_id}"
        );
        assert_eq!(
            r.template_of(&format!("/api/v1/tunnel/{id}/files/list")),
            "/api/v1/tunnel/{session_id}/files/list"
        );
        assert_eq!(
            r.template_of(&format!("/api/v1/tunnel/{id}/stream")),
            "/api/v1/tunnel/{session_id}/stream"
        );
        assert_eq!(r.template_of("/docs/index.css"), "/docs/*");
        assert_eq!(r.template_of("/ui/app.js"), "/ui/*");
        assert_eq!(r.template_of("/"), "/");
        assert_eq!(r.template_of("/secret-token-in-a-path"), "unmatched");
    }
}
