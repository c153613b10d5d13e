//! The web console: the files of `adapters/web/assets/` (hand-written ES modules, CSS and the
//! vendored xterm.js and asciinema-player), embedded in the binary, served by [`Console`]:
//! `index.html` at `/`, every asset at `/ui/<path>`, each answer with the console's security
//! headers ([`SECURITY_HEADERS`]). There is no build step: what is in the folder is served.

use std::sync::Arc;

use poem::http::{HeaderValue, Method, StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};

/// The embedded assets.
#[derive(Debug, rust_embed::Embed)]
#[folder = "assets/"]
pub struct Assets;

/// Where assets are served: `/ui/<path>`.
pub const ASSET_PREFIX: &str = "/ui/";

/// The page served at `/`.
pub const INDEX: &str = "index.html";

/// Content-Security-Policy of every answer: scripts only from this origin (no inline script
/// anywhere), `'wasm-unsafe-eval'` for the recording player, no framing, no `<base>`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The headers set on every answer of [`Console`], errors included.
pub const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
];

/// Makes the error answers (404 for a missing asset, 405 for a method other than GET or
/// HEAD), so they look like the API's own errors.
pub type Refusal = Arc<dyn Fn(StatusCode, &str) -> Response + Send + Sync>;

/// The endpoint serving `/` and `/ui/*path`; as a middleware ([`Console::around`]) it answers
/// those paths before the endpoint it wraps sees them (a `Route` that nests an API at `/`
/// would otherwise take `/`).
#[derive(Clone)]
pub struct Console {
    refuse: Refusal,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

impl Console {
    /// A console whose error answers `refuse` makes.
    pub fn new(refuse: Refusal) -> Self {
        Self { refuse }
    }

    fn answer(&self, req: &Request) -> Response {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut resp = (self.refuse)(
                StatusCode::METHOD_NOT_ALLOWED,
                "the console's pages and assets take GET or HEAD only",
            );
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        let path = req.uri().path();
        let name = if path == "/" {
            Some(INDEX)
        } else {
            path.strip_prefix(ASSET_PREFIX)
        };
        let Some(file) = name.and_then(|name| Assets::get(name).map(|f| (name, f))) else {
            return (self.refuse)(StatusCode::NOT_FOUND, &format!("no such asset: {path}"));
        };
        let (name, file) = file;
        let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
        let not_modified = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
        let builder = Response::builder()
            .header(header::CONTENT_TYPE, content_type(name))
            // Assets are not renamed when they change: revalidate every time (the ETag makes
            // that a 304).
            .header(header::CACHE_CONTROL, "no-cache")
            .header(header::ETAG, etag);
        if not_modified {
            builder.status(StatusCode::NOT_MODIFIED).finish()
        } else {
            builder.body(file.data.into_owned())
        }
    }
}

impl<E: Endpoint> poem::Middleware<E> for Console {
    type Output = WithConsole<E>;

    fn transform(&self, inner: E) -> Self::Output {
        WithConsole {
            console: self.clone(),
            inner,
        }
    }
}

/// An endpoint with the console in front: `/` and `/ui/...` go to [`Console`], the rest to
/// the inner endpoint.
#[derive(Debug)]
pub struct WithConsole<E> {
    console: Console,
    inner: E,
}

impl<E: Endpoint> Endpoint for WithConsole<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let path = req.uri().path();
        if path == "/" || path.starts_with(ASSET_PREFIX) {
            self.console.call(req).await
        } else {
            self.inner.call(req).await.map(IntoResponse::into_response)
        }
    }
}

impl Endpoint for Console {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let mut resp = self.answer(&req);
        for (name, value) in SECURITY_HEADERS {
            resp.headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        Ok(resp)
    }
}

/// The Content-Type of an asset, by its extension.
pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map_or("", |(_, ext)| ext);
    match ext.to_ascii_lowercase().as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff2" => "font/woff2",
        _ => "text/plain; charset=utf-8",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("js/app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("app.CSS"), "text/css; charset=utf-8");
        assert_eq!(content_type("vendor/LICENSE"), "text/plain; charset=utf-8");
    }

    #[test]
    fn the_index_is_embedded() {
        assert!(Assets::get(INDEX).is_some());
        assert!(Assets::get("../Cargo.toml").is_none());
    }
}
