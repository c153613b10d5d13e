//! The web console as the server serves it (the whole route table, front door included):
//! `/` is the HTML page with the security headers, assets come with their Content-Type, a
//! missing asset is the API's JSON 404, the API and health routes are unchanged, and no
//! embedded page carries inline script (the CSP would block it: a page that relied on it
//! would break in the browser).

use std::sync::Arc;
use std::time::Duration;

use poem::http::{Method, StatusCode};
use poem::{Endpoint, Request, Response};
use rmm_application::Config;
use rmm_auth::{Jwt, JwtSecret};
use rmm_server::wiring::{ServeOptions, build_app, routes};
use rmm_store::SqliteStore;
use tokio::sync::watch;

async fn server() -> anyhow::Result<(impl Endpoint, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let store =
        SqliteStore::connect(&format!("sqlite://{}", dir.path().join("t.db").display())).await?;
    let app = build_app(Arc::new(store), Config::default());
    let jwt = Arc::new(Jwt::new(
        &JwtSecret::parse(&"console-test-secret-0123456".repeat(2))?,
        Duration::from_secs(60),
    ));
    let (_, shutdown) = watch::channel(false);
    let ep = routes(app, jwt, Arc::new(ServeOptions::default()), shutdown);
    Ok((ep, dir))
}

async fn get(ep: &impl Endpoint, method: Method, path: &str) -> anyhow::Result<(Response, String)> {
    let resp = ep
        .get_response(Request::builder().method(method).uri_str(path).finish())
        .await;
    let (parts, body) = resp.into_parts();
    let text = body.into_string().await?;
    Ok((Response::from_parts(parts, poem::Body::empty()), text))
}

fn header<'a>(resp: &'a Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn the_console_is_served_with_its_headers_and_the_api_is_unchanged() -> anyhow::Result<()> {
    let (ep, _dir) = server().await?;

    let (index, html) = get(&ep, Method::GET, "/").await?;
    assert_eq!(index.status(), StatusCode::OK);
    assert_eq!(header(&index, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&index, "cache-control"), "no-cache");
    assert_eq!(
        header(&index, "content-security-policy"),
        rmm_web::CONTENT_SECURITY_POLICY
    );
    assert!(
        header(&index, "content-security-policy").contains("script-src 'self' 'wasm-unsafe-eval';")
    );
    assert_eq!(header(&index, "x-content-type-options"), "nosniff");
    assert_eq!(header(&index, "x-frame-options"), "DENY");
    assert_eq!(header(&index, "referrer-policy"), "no-referrer");
    assert!(
        html.contains(r#"<script type="module" src="/ui/app.js">"#),
        "{html}"
    );

    let (js, body) = get(&ep, Method::GET, "/ui/app.js").await?;
    assert_eq!(js.status(), StatusCode::OK);
    assert_eq!(
        header(&js, "content-type"),
        "text/javascript; charset=utf-8"
    );
    assert!(
        body.contains("import"),
        "app.js is the module that imports the pages"
    );
    let (css, _) = get(&ep, Method::HEAD, "/ui/app.css").await?;
    assert_eq!(css.status(), StatusCode::OK);
    assert_eq!(header(&css, "content-type"), "text/css; charset=utf-8");

    let (missing, body) = get(&ep, Method::GET, "/ui/no-such-file.js").await?;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&missing, "x-content-type-options"), "nosniff");
    let body: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(body["code"], "not_found");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no-such-file.js")),
        "{body}"
    );

    let (post, body) = get(&ep, Method::POST, "/ui/app.js").await?;
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(body["code"], "method_not_allowed");

    // The rest of the surface is as before: health, the API's JSON errors, the docs.
    let (health, body) = get(&ep, Method::GET, "/healthz").await?;
    assert_eq!(health.status(), StatusCode::OK);
    assert!(body.contains("ok"));
    let (agents, body) = get(&ep, Method::GET, "/api/v1/agents").await?;
    assert_eq!(agents.status(), StatusCode::UNAUTHORIZED);
    assert!(body.contains("unauthenticated"), "{body}");
    assert!(header(&agents, "content-security-policy").is_empty());
    let (unknown, body) = get(&ep, Method::GET, "/no/such/route").await?;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert!(body.contains("not_found"), "{body}");
    let (docs, _) = get(&ep, Method::GET, "/docs").await?;
    assert_eq!(docs.status(), StatusCode::OK);
    Ok(())
}

/// The text of the first `<script ...>` body in `html` that is not empty, if any.
fn inline_script(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let mut rest = lower.as_str();
    while let Some(start) = rest.find("<script") {
        let after = &rest[start..];
        let open_end = after.find('>')?;
        let body_and_more = &after[open_end + 1..];
        let close = body_and_more.find("</script")?;
        if !body_and_more[..close].trim().is_empty() {
            return Some(body_and_more[..close].to_owned());
        }
        rest = &body_and_more[close..];
    }
    None
}

/// An `on...=` event-handler attribute inside a tag, if any.
fn handler_attribute(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    for tag in lower.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap_or("");
        for (i, _) in tag.match_indices(" on") {
            let name: String = tag[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            let after = tag[i + 1 + name.len()..].trim_start();
            if name.len() > 2 && after.starts_with('=') {
                return Some(format!("<{tag}>"));
            }
        }
    }
    None
}

#[test]
fn the_scanner_finds_inline_script() {
    assert!(inline_script("<p><script>alert(1)</script>").is_some());
    assert!(
        inline_script(r#"<script src="/ui/a.js"></script><SCRIPT type="x"> go() </SCRIPT>"#)
            .is_some()
    );
    assert!(inline_script(r#"<script src="/ui/a.js"></script>"#).is_none());
    assert!(handler_attribute(r#"<button type="button" onclick="go()">"#).is_some());
    assert!(handler_attribute(r#"<img src=x OnError = "go()">"#).is_some());
    assert!(handler_attribute(r#"<a class="online" href="/once">on it</a>"#).is_none());
}

#[test]
fn no_embedded_page_has_inline_script() {
    let pages: Vec<_> = rmm_web::Assets::iter()
        .filter(|name| name.ends_with(".html"))
        .collect();
    assert!(pages.iter().any(|p| p == "index.html"), "{pages:?}");
    for name in pages {
        let Some(file) = rmm_web::Assets::get(&name) else {
            panic!("{name} is listed but not embedded");
        };
        let html = String::from_utf8_lossy(&file.data);
        assert_eq!(
            inline_script(&html),
            None,
            "{name} has an inline <script> body"
        );
        assert_eq!(
            handler_attribute(&html),
            None,
            "{name} has an on...= handler attribute"
        );
    }
}
