//! poem-openapi's router names path parameters `param0`, `param1`, ... internally, so a path
//! value that does not parse (`/api/v1/tunnel/status/not-a-uuid`) was answered "failed to
//! parse path `param0`". [`PathParamNames`] answers with the spec's name instead
//! (`session_id`), found by matching the request's path against the spec's templates.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use poem_openapi::error::ParsePathError;
use rmm_protocol::api::ApiErrorCode;

use crate::error::Failure;

/// The middleware (see the module's documentation).
#[derive(Debug, Clone, Default)]
pub struct PathParamNames {
    templates: Arc<Vec<Vec<String>>>,
}

impl PathParamNames {
    /// The templates of the spec's `paths` (a JSON OpenAPI document).
    #[must_use]
    pub fn from_spec(spec: &str) -> Self {
        let templates = serde_json::from_str::<serde_json::Value>(spec)
            .ok()
            .and_then(|v| {
                v.get("paths")?.as_object().map(|paths| {
                    paths
                        .keys()
                        .map(|t| t.split('/').map(str::to_owned).collect())
                        .collect()
                })
            })
            .unwrap_or_default();
        Self {
            templates: Arc::new(templates),
        }
    }

    /// The spec's name of the router's `param<N>` in `path`: the N-th `{name}` of the
    /// template the path matches (literal segments first, as the router matches them).
    #[must_use]
    pub fn name_of<'a>(&'a self, path: &str, internal: &'a str) -> &'a str {
        let Some(n) = internal
            .strip_prefix("param")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return internal;
        };
        best_template(self.templates.iter(), path)
            .and_then(|t| t.iter().filter(|s| is_param(s)).nth(n))
            .map_or(internal, |s| &s[1..s.len() - 1])
    }
}

fn is_param(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}')
}

/// The template (split at `/`) that `path` matches, literal segments first, as poem's router
/// prefers them: `/tunnel/status/x` is `/tunnel/status/{session_id}`, not
/// `/tunnel/{session_id}/x`.
pub(crate) fn best_template<'a>(
    templates: impl Iterator<Item = &'a Vec<String>>,
    path: &str,
) -> Option<&'a Vec<String>> {
    let segments: Vec<&str> = path.split('/').collect();
    templates
        .filter(|t| {
            t.len() == segments.len() && t.iter().zip(&segments).all(|(t, s)| t == s || is_param(t))
        })
        .max_by_key(|t| t.iter().map(|s| !is_param(s)).collect::<Vec<bool>>())
}

impl<E: Endpoint> Middleware<E> for PathParamNames {
    type Output = PathParamNamesEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        PathParamNamesEndpoint {
            inner,
            names: self.clone(),
        }
    }
}

/// [`PathParamNames`] around an endpoint.
#[derive(Debug)]
pub struct PathParamNamesEndpoint<E> {
    inner: E,
    names: PathParamNames,
}

impl<E: Endpoint> Endpoint for PathParamNamesEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let path = req.uri().path().to_owned();
        match self.inner.call(req).await {
            Ok(resp) => Ok(resp.into_response()),
            Err(err) => match err.downcast_ref::<ParsePathError>() {
                Some(e) => Err(Failure {
                    status: StatusCode::BAD_REQUEST,
                    code: ApiErrorCode::InvalidRequest,
                    message: format!(
                        "failed to parse path `{}`: {}",
                        self.names.name_of(&path, e.name),
                        e.reason
                    ),
                }
                .into()),
                None => Err(err),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PathParamNames;

    #[test]
    fn the_routers_param_n_is_the_templates_nth_parameter() {
        let names = PathParamNames::from_spec(
            r#"{"paths": {
                "/api/v1/tunnel/status/{session_id}": {},
                "/api/v1/tunnel/{session_id}/terminals": {},
                "/api/v1/tunnel/{session_id}/commands/{command_id}": {}
            }}"#,
        );
        let name = |path, n| names.name_of(path, n).to_owned();
        assert_eq!(name("/api/v1/tunnel/x/commands/y", "param0"), "session_id");
        assert_eq!(name("/api/v1/tunnel/x/commands/y", "param1"), "command_id");
        // Both templates fit; the router prefers the literal `status`, and so does this.
        assert_eq!(
            name("/api/v1/tunnel/status/terminals", "param0"),
            "session_id"
        );
        assert_eq!(name("/api/v1/tunnel/x/terminals", "param0"), "session_id");
        assert_eq!(name("/elsewhere", "param0"), "param0");
        assert_eq!(name("/api/v1/tunnel/x/commands/y", "other"), "other");
    }
}
