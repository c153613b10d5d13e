//! `GET/POST /api/v1/users`, `PATCH/DELETE /api/v1/users/{id}` (200/201/204, 400, 403, 404
//! `user_not_found`, 409 `username_taken`/`last_admin`, 503), `POST /api/v1/auth/password`
//! (204, 400, 403 `invalid_credentials`), `POST /api/v1/auth/logout` (204, 503), and a
//! revoked token (401 `token_revoked`).

use poem::http::StatusCode;
use rmm_application::{StoreError, UserChangeOutcome, UserRecord};
use rmm_domain::{Role, Username};
use rmm_protocol::api::ApiErrorCode;
use serde_json::json;

use super::{
    ADMIN, AUDITOR, OTHER_TECH, Setup, TECH, assert_error, assert_ok, assert_unavailable,
    backend_error, now, token_id_of,
};

fn record(name: &str, role: Role, disabled: bool) -> UserRecord {
    UserRecord {
        id: OTHER_TECH.id,
        username: Username::parse(name).expect("a valid name"),
        password_hash: "hash".into(),
        role,
        created_at: now(),
        disabled,
        last_login_at: Some(now()),
    }
}

fn user_path() -> String {
    format!("/api/v1/users/{}", OTHER_TECH.id)
}

#[tokio::test]
async fn an_admin_lists_users_with_role_state_and_last_login() {
    let mut s = Setup::default();
    s.users
        .expect_list_users()
        .times(1)
        .returning(|| Box::pin(async { Ok(vec![record("bob", Role::Auditor, true)]) }));
    let server = s.serve();
    let body = assert_ok(
        server.get("/api/v1/users", ADMIN).send().await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(body[0]["username"], "bob");
    assert_eq!(body[0]["role"], "auditor");
    assert_eq!(body[0]["disabled"], true);
    assert_eq!(body[0]["user_id"], OTHER_TECH.id.to_string());
    assert!(body[0]["last_login_at"].is_string(), "{body}");
}

#[tokio::test]
async fn technicians_and_auditors_may_not_manage_users() {
    // No store expectation: nothing is read or written.
    let server = Setup::default().serve();
    for actor in [TECH, AUDITOR] {
        let resp = server.get("/api/v1/users", actor).send().await;
        assert_error(resp, StatusCode::FORBIDDEN, ApiErrorCode::Forbidden).await;
        let body = json!({"username": "eve", "password": "long-enough", "role": "admin"});
        let resp = server.post("/api/v1/users", actor, &body).send().await;
        assert_error(resp, StatusCode::FORBIDDEN, ApiErrorCode::Forbidden).await;
        let resp = server.delete(&user_path(), actor).send().await;
        assert_error(resp, StatusCode::FORBIDDEN, ApiErrorCode::Forbidden).await;
    }
}

#[tokio::test]
async fn creating_a_user_answers_201_or_names_the_problem() {
    let mut s = Setup::default();
    s.credentials
        .expect_hash_password()
        .returning(|_| Box::pin(async { Ok("hash".to_owned()) }));
    s.ids.expect_user_id().return_const(OTHER_TECH.id);
    s.users
        .expect_insert_user()
        .withf(|u, _, entry| u.username.as_str() == "carol" && entry.user == Some(ADMIN.id))
        .times(1)
        .returning(|_, _, _| Box::pin(async { Ok(UserChangeOutcome::Changed) }));
    s.users
        .expect_insert_user()
        .returning(|_, _, _| Box::pin(async { Err(StoreError::Conflict) }));
    let server = s.serve();
    let create = |name: &str, password: &str, role: &str| json!({"username": name, "password": password, "role": role});
    let resp = server
        .post(
            "/api/v1/users",
            ADMIN,
            &create("carol", "long-enough", "technician"),
        )
        .send()
        .await;
    let body = assert_ok(resp, StatusCode::CREATED).await;
    assert_eq!(body["user_id"], OTHER_TECH.id.to_string());

    for bad in [
        create("not a name", "long-enough", "technician"),
        create("dave", "long-enough", "root"),
        create("dave", "short", "auditor"),
    ] {
        let resp = server.post("/api/v1/users", ADMIN, &bad).send().await;
        assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;
    }
    let resp = server
        .post(
            "/api/v1/users",
            ADMIN,
            &create("carol", "long-enough", "auditor"),
        )
        .send()
        .await;
    assert_error(resp, StatusCode::CONFLICT, ApiErrorCode::UsernameTaken).await;
}

#[tokio::test]
async fn patch_answers_the_user_or_404_or_409_last_admin() {
    for (outcome, status, code) in [
        (
            UserChangeOutcome::NotFound,
            StatusCode::NOT_FOUND,
            ApiErrorCode::UserNotFound,
        ),
        (
            UserChangeOutcome::LastAdmin,
            StatusCode::CONFLICT,
            ApiErrorCode::LastAdmin,
        ),
    ] {
        let mut s = Setup::default();
        s.users.expect_update_user().returning(move |_, _, _, _| {
            let outcome = outcome.clone();
            Box::pin(async move { Ok(outcome) })
        });
        let server = s.serve();
        let resp = server
            .client
            .patch(user_path())
            .header("Authorization", format!("Bearer {}", server.token(ADMIN)))
            .body_json(&json!({"disabled": true}))
            .send()
            .await;
        assert_error(resp, status, code).await;
    }

    let mut s = Setup::default();
    s.users
        .expect_update_user()
        .withf(|_, change, _, _| change.role == Some(Role::Auditor))
        .times(1)
        .returning(|_, _, _, _| Box::pin(async { Ok(UserChangeOutcome::Changed) }));
    s.users
        .expect_find_user_by_id()
        .returning(|_| Box::pin(async { Ok(Some(record("bob", Role::Auditor, false))) }));
    let server = s.serve();
    let patch = |body: serde_json::Value| {
        server
            .client
            .patch(user_path())
            .header("Authorization", format!("Bearer {}", server.token(ADMIN)))
            .body_json(&body)
            .send()
    };
    let body = assert_ok(patch(json!({"role": "auditor"})).await, StatusCode::OK).await;
    assert_eq!(body["role"], "auditor");
    let resp = patch(json!({"role": "superuser"})).await;
    assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;
}

#[tokio::test]
async fn delete_answers_204_404_409_and_503() {
    for (answer, status) in [
        (Ok(UserChangeOutcome::Changed), StatusCode::NO_CONTENT),
        (Ok(UserChangeOutcome::NotFound), StatusCode::NOT_FOUND),
        (Ok(UserChangeOutcome::LastAdmin), StatusCode::CONFLICT),
        (Err(()), StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let mut s = Setup::default();
        s.users.expect_delete_user().returning(move |_, _, _| {
            let answer = answer.clone().map_err(|()| backend_error());
            Box::pin(async move { answer })
        });
        let server = s.serve();
        let resp = server.delete(&user_path(), ADMIN).send().await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_unavailable(resp).await;
        } else {
            assert_eq!(resp.0.status(), status);
        }
    }
}

#[tokio::test]
async fn a_revoked_token_is_401_token_revoked_everywhere() {
    let server = Setup {
        revoked_tokens: true,
        ..Setup::default()
    }
    .serve();
    for path in ["/api/v1/agents", "/api/v1/users", "/api/v1/audit"] {
        let resp = server.get(path, ADMIN).send().await;
        assert_error(resp, StatusCode::UNAUTHORIZED, ApiErrorCode::TokenRevoked).await;
    }
}

#[tokio::test]
async fn a_database_that_cannot_check_the_token_is_503() {
    let mut s = Setup::default();
    s.users
        .expect_token_state()
        .returning(|_| Box::pin(async { Err(backend_error()) }));
    let server = s.serve();
    assert_unavailable(server.get("/api/v1/agents", TECH).send().await).await;
}

#[tokio::test]
async fn logout_revokes_the_token_it_carries() {
    let mut s = Setup::default();
    s.users
        .expect_revoke_token()
        .withf(|id, _, _, _| *id == token_id_of(TECH))
        .times(1)
        .returning(|_, _, _, _| Box::pin(async { Ok(true) }));
    s.sessions
        .expect_list_open_opened_with()
        .withf(|t| *t == token_id_of(TECH))
        .times(1)
        .returning(|_| Box::pin(async { Ok(vec![]) }));
    let server = s.serve();
    let resp = server
        .post("/api/v1/auth/logout", TECH, &json!({}))
        .send()
        .await;
    assert_eq!(resp.0.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_password_change_checks_the_current_password() {
    let mut s = Setup::default();
    s.users
        .expect_find_user_by_id()
        .returning(|_| Box::pin(async { Ok(Some(record("tech", Role::Tech, false))) }));
    s.credentials
        .expect_verify_password()
        .returning(|given, _| {
            let ok = given == "right-password";
            Box::pin(async move { Ok(ok) })
        });
    s.credentials
        .expect_hash_password()
        .returning(|_| Box::pin(async { Ok("new".to_owned()) }));
    s.users
        .expect_update_user()
        .times(1)
        .returning(|_, _, _, _| Box::pin(async { Ok(UserChangeOutcome::Changed) }));
    let server = s.serve();
    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let resp = server
        .post(
            "/api/v1/auth/password",
            TECH,
            &change("wrong", "brand-new-one"),
        )
        .send()
        .await;
    assert_error(
        resp,
        StatusCode::FORBIDDEN,
        ApiErrorCode::InvalidCredentials,
    )
    .await;
    let resp = server
        .post(
            "/api/v1/auth/password",
            TECH,
            &change("right-password", "short"),
        )
        .send()
        .await;
    assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;
    let resp = server
        .post(
            "/api/v1/auth/password",
            TECH,
            &change("right-password", "brand-new-one"),
        )
        .send()
        .await;
    assert_eq!(resp.0.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn an_auditor_may_not_open_tunnels() {
    let server = Setup::default().serve();
    let body = json!({"agent_id": super::AGENT.to_string()});
    let resp = server
        .post("/api/v1/tunnel/open", AUDITOR, &body)
        .send()
        .await;
    assert_error(resp, StatusCode::FORBIDDEN, ApiErrorCode::Forbidden).await;
}
