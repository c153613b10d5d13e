//! `POST /api/v1/auth/login`: 200, 401 `invalid_credentials`, 429 `too_many_requests`, 500,
//! 503 `server_busy`.

use poem::http::StatusCode;
use rmm_application::UserRecord;
use rmm_domain::{Role, Username};
use rmm_protocol::api::ApiErrorCode;
use serde_json::json;

use super::{ADMIN, Setup, assert_error, assert_internal, assert_ok, backend_error, now};

const HASH: &str = "$argon2id$stored-hash";

fn admin_record() -> UserRecord {
    UserRecord {
        id: ADMIN.id,
        username: Username::parse("alice").expect("a valid username"),
        password_hash: HASH.to_owned(),
        role: Role::Admin,
        created_at: now(),
        disabled: false,
        last_login_at: None,
    }
}

/// The store knows alice; her password checks as `matches`.
fn alice(matches: bool) -> Setup {
    let mut s = Setup::default();
    s.users
        .expect_find_user()
        .withf(|name| name.as_str() == "alice")
        .times(1)
        .returning(|_| Box::pin(async { Ok(Some(admin_record())) }));
    s.credentials
        .expect_verify_password()
        .withf(|_, hash| hash == HASH)
        .times(1)
        .returning(move |_, _| Box::pin(async move { Ok(matches) }));
    s
}

/// A successful login stores its token (id from the generator, expiry after the TTL).
fn stores_token(s: &mut Setup) {
    s.ids
        .expect_token_id()
        .times(1)
        .returning(|| super::token_id_of(ADMIN));
    s.users
        .expect_insert_token()
        .withf(|t| t.user == ADMIN.id && t.expires_at == now().plus(super::TOKEN_TTL))
        .times(1)
        .returning(|_| Box::pin(async { Ok(()) }));
}

#[tokio::test]
async fn login_answers_a_token_for_the_user() {
    let mut setup = alice(true);
    stores_token(&mut setup);
    let server = setup.serve();
    let resp = server
        .client
        .post("/api/v1/auth/login")
        .body_json(&json!({"username": "alice", "password": "right password"}))
        .send()
        .await;
    let body = assert_ok(resp, StatusCode::OK).await;
    let token = body["token"].as_str().expect("a token");
    let verified = server.jwt.verify(token).expect("the token verifies");
    assert_eq!(verified.user, ADMIN.id);
    assert_eq!(verified.id, super::token_id_of(ADMIN));
    let expires_at = crate::to_datetime(now().plus(super::TOKEN_TTL));
    assert_eq!(
        body["expires_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()),
        Some(expires_at.fixed_offset()),
        "expires_at of {body}"
    );
}

#[tokio::test]
async fn a_wrong_password_is_invalid_credentials() {
    let server = alice(false).serve();
    let resp = server
        .client
        .post("/api/v1/auth/login")
        .body_json(&json!({"username": "alice", "password": "wrong"}))
        .send()
        .await;
    assert_error(
        resp,
        StatusCode::UNAUTHORIZED,
        ApiErrorCode::InvalidCredentials,
    )
    .await;
}

#[tokio::test]
async fn an_unknown_user_is_invalid_credentials_too() {
    let mut s = Setup::default();
    s.users
        .expect_find_user()
        .times(1)
        .returning(|_| Box::pin(async { Ok(None) }));
    // Still verified, against a dummy hash: no user enumeration by timing.
    s.credentials
        .expect_verify_password()
        .times(1)
        .returning(|_, _| Box::pin(async { Ok(false) }));
    let resp = s
        .serve()
        .client
        .post("/api/v1/auth/login")
        .body_json(&json!({"username": "mallory", "password": "guess"}))
        .send()
        .await;
    assert_error(
        resp,
        StatusCode::UNAUTHORIZED,
        ApiErrorCode::InvalidCredentials,
    )
    .await;
}

#[tokio::test]
async fn a_failing_user_store_is_a_500_without_the_cause() {
    let mut s = Setup::default();
    s.users
        .expect_find_user()
        .times(1)
        .returning(|_| Box::pin(async { Err(backend_error()) }));
    s.credentials.expect_verify_password().never();
    let resp = s
        .serve()
        .client
        .post("/api/v1/auth/login")
        .body_json(&json!({"username": "alice", "password": "right password"}))
        .send()
        .await;
    assert_internal(resp).await;
}

#[tokio::test]
async fn after_five_failures_even_the_right_password_is_429_with_retry_after() {
    let mut s = Setup::default();
    s.users
        .expect_find_user()
        .times(5)
        .returning(|_| Box::pin(async { Ok(Some(admin_record())) }));
    s.credentials
        .expect_verify_password()
        .times(5)
        .returning(|password, _| {
            let ok = password == "right password";
            Box::pin(async move { Ok(ok) })
        });
    let server = s.serve();
    let login = |password: &'static str| {
        server
            .client
            .post("/api/v1/auth/login")
            .body_json(&json!({"username": "alice", "password": password}))
            .send()
    };
    for _ in 0..5 {
        assert_error(
            login("wrong").await,
            StatusCode::UNAUTHORIZED,
            ApiErrorCode::InvalidCredentials,
        )
        .await;
    }
    let resp = login("right password").await;
    let retry_after = resp.0.headers().get("retry-after").cloned();
    assert_error(
        resp,
        StatusCode::TOO_MANY_REQUESTS,
        ApiErrorCode::TooManyRequests,
    )
    .await;
    assert_eq!(
        retry_after.as_ref().and_then(|v| v.to_str().ok()),
        Some("60")
    );
}

#[tokio::test]
async fn busy_hashing_is_503_with_retry_after() {
    let mut s = Setup::default();
    s.users
        .expect_find_user()
        .returning(|_| Box::pin(async { Ok(Some(admin_record())) }));
    s.credentials
        .expect_verify_password()
        .returning(|_, _| Box::pin(async { Err(rmm_application::HashingBusy) }));
    let resp = s
        .serve()
        .client
        .post("/api/v1/auth/login")
        .body_json(&json!({"username": "alice", "password": "right password"}))
        .send()
        .await;
    let retry_after = resp.0.headers().get("retry-after").cloned();
    assert_error(
        resp,
        StatusCode::SERVICE_UNAVAILABLE,
        ApiErrorCode::ServerBusy,
    )
    .await;
    assert_eq!(
        retry_after.as_ref().and_then(|v| v.to_str().ok()),
        Some("2")
    );
}
