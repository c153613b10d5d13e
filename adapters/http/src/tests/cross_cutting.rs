//! What every operation answers before its handler runs: the token check (401
//! `unauthenticated`, `token_expired`), body and parameter parsing (400 `invalid_request`),
//! and routing (404 `not_found`, 405 `method_not_allowed`).

use std::time::Duration;

use poem::http::{Method, StatusCode};
use rmm_auth::{Jwt, JwtSecret};
use rmm_protocol::api::ApiErrorCode;
use serde_json::json;

use super::{COMMAND, SESSION, Setup, TECH, TOKEN_TTL, assert_error, wall_clock};

/// Every operation that takes a token, with a body that would otherwise be accepted.
fn authenticated_operations() -> Vec<(Method, String)> {
    let (s, c) = (SESSION.as_uuid(), COMMAND.as_uuid());
    vec![
        (Method::POST, "/api/v1/agents".to_owned()),
        (Method::GET, "/api/v1/agents".to_owned()),
        (Method::POST, "/api/v1/tunnel/open".to_owned()),
        (Method::POST, "/api/v1/tunnel/close".to_owned()),
        (Method::GET, format!("/api/v1/tunnel/status/{s}")),
        (Method::POST, format!("/api/v1/tunnel/{s}/command")),
        (Method::GET, format!("/api/v1/tunnel/{s}/commands/{c}")),
        (Method::DELETE, format!("/api/v1/tunnel/{s}/commands/{c}")),
        (
            Method::GET,
            format!("/api/v1/tunnel/{s}/commands/{c}/stdout"),
        ),
        (
            Method::GET,
            format!("/api/v1/tunnel/{s}/commands/{c}/stderr"),
        ),
        (Method::GET, "/api/v1/audit".to_owned()),
    ]
}

fn body() -> serde_json::Value {
    json!({"name": "host-1", "agent_id": SESSION.as_uuid(), "session_id": SESSION.as_uuid(), "command": "true"})
}

/// No mock expects a call: a handler that ran would fail the test.
#[tokio::test]
async fn without_a_token_every_operation_is_unauthenticated() {
    let server = Setup::default().serve();
    for (method, path) in authenticated_operations() {
        let resp = server
            .client
            .request(method.clone(), path.clone())
            .body_json(&body())
            .send()
            .await;
        let message = assert_error(
            resp,
            StatusCode::UNAUTHORIZED,
            ApiErrorCode::Unauthenticated,
        )
        .await;
        assert!(
            message.contains("/api/v1/auth/login"),
            "{method} {path}: {message}"
        );
    }
}

#[tokio::test]
async fn an_expired_token_is_token_expired() {
    let server = Setup::default().serve();
    let old = super::signed(
        &server.jwt,
        TECH,
        wall_clock().minus(TOKEN_TTL + Duration::from_secs(60)),
    );
    for (method, path) in authenticated_operations() {
        let resp = server
            .client
            .request(method.clone(), path.clone())
            .header("Authorization", format!("Bearer {}", old.token))
            .body_json(&body())
            .send()
            .await;
        assert_error(resp, StatusCode::UNAUTHORIZED, ApiErrorCode::TokenExpired).await;
    }
}

#[tokio::test]
async fn a_forged_or_garbled_token_is_unauthenticated() {
    let server = Setup::default().serve();
    let other_key = Jwt::new(
        &JwtSecret::parse(&"x".repeat(JwtSecret::MIN_LEN)).expect("a long secret"),
        TOKEN_TTL,
    );
    let forged = super::signed(&other_key, TECH, wall_clock()).token;
    for token in [forged.as_str(), "not.a.jwt", "garbage"] {
        let resp = server
            .client
            .get("/api/v1/agents")
            .header("Authorization", format!("Bearer {token}"))
            .send()
            .await;
        assert_error(
            resp,
            StatusCode::UNAUTHORIZED,
            ApiErrorCode::Unauthenticated,
        )
        .await;
    }
}

#[tokio::test]
async fn malformed_json_is_invalid_request() {
    let server = Setup::default().serve();
    let resp = server
        .client
        .post("/api/v1/auth/login")
        .content_type("application/json")
        .body(r#"{"username": "alice", "password": "#)
        .send()
        .await;
    assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;

    let resp = server
        .client
        .post("/api/v1/tunnel/open")
        .header("Authorization", format!("Bearer {}", server.token(TECH)))
        .content_type("application/json")
        .body("{not json")
        .send()
        .await;
    assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;
}

#[tokio::test]
async fn a_body_missing_a_field_is_invalid_request() {
    let resp = Setup::default()
        .serve()
        .client
        .post("/api/v1/auth/login")
        .body_json(&json!({"username": "alice"}))
        .send()
        .await;
    assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;
}

#[tokio::test]
async fn an_unknown_route_is_not_found() {
    let resp = Setup::default()
        .serve()
        .client
        .get("/api/v1/nothing-here")
        .send()
        .await;
    assert_error(resp, StatusCode::NOT_FOUND, ApiErrorCode::NotFound).await;
}

/// RFC 9110: a 405 lists what the path takes in `Allow` (`HEAD` with `GET`, which poem
/// answers through `GET`).
#[tokio::test]
async fn a_wrong_method_is_method_not_allowed_with_the_paths_methods_in_allow() {
    let server = Setup::default().serve();
    let s = SESSION.as_uuid();
    for (method, path, allow) in [
        (
            Method::DELETE,
            "/api/v1/agents".to_owned(),
            "GET, HEAD, POST",
        ),
        (Method::GET, format!("/api/v1/users/{s}"), "DELETE, PATCH"),
        (
            Method::TRACE,
            format!("/api/v1/tunnel/status/{s}"),
            "GET, HEAD",
        ),
        (
            Method::PUT,
            format!("/api/v1/tunnel/{s}/terminals"),
            "GET, HEAD, POST",
        ),
    ] {
        let resp = server.client.request(method.clone(), &path).send().await;
        let got = resp.0.headers().get("allow").cloned();
        assert_error(
            resp,
            StatusCode::METHOD_NOT_ALLOWED,
            ApiErrorCode::MethodNotAllowed,
        )
        .await;
        assert_eq!(
            got.as_ref().and_then(|v| v.to_str().ok()),
            Some(allow),
            "Allow of {method} {path}"
        );
    }
}

/// A path or query value that does not parse is answered with the parameter's name as the
/// spec writes it (poem-openapi's router calls path parameters `param0`, `param1`, ...).
#[tokio::test]
async fn a_bad_parameter_is_named_as_the_spec_names_it() {
    let server = Setup::default().serve();
    let s = SESSION.as_uuid();
    for (path, name) in [
        (
            format!("/api/v1/tunnel/{s}/commands/not-a-uuid"),
            "command_id",
        ),
        (
            "/api/v1/tunnel/not-a-uuid/commands/x".to_owned(),
            "session_id",
        ),
        (
            format!("/api/v1/tunnel/{s}/commands/x/stdout"),
            "command_id",
        ),
        ("/api/v1/audit?limit=many".to_owned(), "limit"),
        ("/api/v1/audit?agent_id=nope".to_owned(), "agent_id"),
    ] {
        let resp = server.get(&path, TECH).send().await;
        let message =
            assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;
        assert!(message.contains(&format!("`{name}`")), "{path}: {message}");
        assert!(!message.contains("`param"), "{path}: {message}");
    }
}
