//! `Allow` on every 405 (RFC 9110, 15.5.6: a 405 "MUST generate an Allow header field"):
//! poem's router answers a method a path does not take with a bare 405, so [`AllowHeader`]
//! adds the methods the path does take, from the spec's `paths` (and the routes outside the
//! spec the server names). `HEAD` is listed with `GET`: poem answers it through `GET`.

use std::collections::BTreeMap;
use std::sync::Arc;

use poem::http::header::ALLOW;
use poem::http::{HeaderValue, StatusCode};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

use crate::path_params::best_template;

/// The middleware (see the module's documentation).
#[derive(Debug, Clone, Default)]
pub struct AllowHeader {
    /// Path template, split at `/` -> its methods, upper case.
    routes: Arc<BTreeMap<Vec<String>, Vec<String>>>,
}

impl AllowHeader {
    /// The paths and methods of a JSON OpenAPI document.
    #[must_use]
    pub fn from_spec(spec: &str) -> Self {
        let mut routes = BTreeMap::new();
        let paths = serde_json::from_str::<serde_json::Value>(spec)
            .ok()
            .and_then(|v| v.get("paths")?.as_object().cloned())
            .unwrap_or_default();
        for (template, operations) in paths {
            let methods = operations
                .as_object()
                .map(|ops| ops.keys().map(|m| m.to_uppercase()).collect())
                .unwrap_or_default();
            routes.insert(split(&template), methods);
        }
        Self {
            routes: Arc::new(routes),
        }
    }

    /// A route outside the spec (a WebSocket, health), in the spec's template syntax.
    #[must_use]
    pub fn route(mut self, template: &str, methods: &[&str]) -> Self {
        Arc::make_mut(&mut self.routes).insert(
            split(template),
            methods.iter().map(|m| m.to_uppercase()).collect(),
        );
        self
    }

    /// The `Allow` value of `path`: its methods, `HEAD` with `GET`, sorted; `None` for a path
    /// no route has.
    #[must_use]
    pub fn allowed(&self, path: &str) -> Option<String> {
        let template = best_template(self.routes.keys(), path)?;
        let mut methods = self.routes.get(template)?.clone();
        if methods.iter().any(|m| m == "GET") && !methods.iter().any(|m| m == "HEAD") {
            methods.push("HEAD".to_owned());
        }
        methods.sort();
        methods.dedup();
        Some(methods.join(", "))
    }
}

fn split(template: &str) -> Vec<String> {
    template.split('/').map(str::to_owned).collect()
}

impl<E: Endpoint> Middleware<E> for AllowHeader {
    type Output = AllowHeaderEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        AllowHeaderEndpoint {
            inner,
            allow: self.clone(),
        }
    }
}

/// [`AllowHeader`] around an endpoint.
#[derive(Debug)]
pub struct AllowHeaderEndpoint<E> {
    inner: E,
    allow: AllowHeader,
}

impl<E: Endpoint> Endpoint for AllowHeaderEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let path = req.uri().path().to_owned();
        let mut response = match self.inner.call(req).await {
            Ok(response) => response.into_response(),
            Err(err) if err.status() == StatusCode::METHOD_NOT_ALLOWED => err.into_response(),
            Err(err) => return Err(err),
        };
        if response.status() == StatusCode::METHOD_NOT_ALLOWED
            && !response.headers().contains_key(ALLOW)
            && let Some(value) = self
                .allow
                .allowed(&path)
                .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            response.headers_mut().insert(ALLOW, value);
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::AllowHeader;

    #[test]
    fn a_paths_methods_are_its_templates_with_head_beside_get() {
        let allow = AllowHeader::from_spec(
            r#"{"paths": {
                "/api/v1/agents": {"get": {}, "post": {}},
                "/api/v1/users/{user_id}": {"patch": {}, "delete": {}},
                "/api/v1/tunnel/status/{session_id}": {"get": {}},
                "/api/v1/tunnel/{session_id}/terminals": {"get": {}, "post": {}}
            }}"#,
        )
        .route("/healthz", &["get"]);
        let allowed = |path| allow.allowed(path);
        assert_eq!(
            allowed("/api/v1/agents").as_deref(),
            Some("GET, HEAD, POST")
        );
        assert_eq!(allowed("/api/v1/users/x").as_deref(), Some("DELETE, PATCH"));
        // The router prefers the literal `status`, and so does this.
        assert_eq!(
            allowed("/api/v1/tunnel/status/terminals").as_deref(),
            Some("GET, HEAD")
        );
        assert_eq!(
            allowed("/api/v1/tunnel/x/terminals").as_deref(),
            Some("GET, HEAD, POST")
        );
        assert_eq!(allowed("/healthz").as_deref(), Some("GET, HEAD"));
        assert_eq!(allowed("/nowhere"), None);
    }
}
