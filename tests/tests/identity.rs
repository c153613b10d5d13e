//! Identity and access on the real `rmm-server` (PostgreSQL and SQLite): users managed over
//! the API and from the console, roles (an auditor opens nothing), and revocation that reaches
//! every request within 1 s and open tunnels within 2 s — whichever process made the change.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::agent::{Received, ScriptedAgent};
use rmm_e2e::pg::{fresh_database, sqlite_url};
use rmm_e2e::server::{TestServer, binary};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::process::Command;

/// A server on PostgreSQL, or on SQLite in a folder kept as long as it runs.
async fn server(on_sqlite: bool) -> (TestServer, Option<TempDir>) {
    if on_sqlite {
        let dir = TempDir::new().unwrap();
        let server = TestServer::start(&sqlite_url(dir.path()), &[])
            .await
            .unwrap();
        (server, Some(dir))
    } else {
        let db = fresh_database().await.expect("test database");
        (TestServer::start(&db, &[]).await.unwrap(), None)
    }
}

/// `rmm-server user ARGS` on `database_url`, with `stdin` as its input: (exit code, stdout,
/// stderr).
async fn console(database_url: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(binary("rmm-server").unwrap())
        .arg("user")
        .args(args)
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(mut input) = child.stdin.take() {
        tokio::io::AsyncWriteExt::write_all(&mut input, stdin.as_bytes())
            .await
            .unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn call(
    s: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    s.call(method, path, Some(token), body).await.unwrap()
}

/// How long until `token` is refused with 401 `token_revoked`, polling every 20 ms; panics
/// after 5 s.
async fn time_to_revocation(s: &TestServer, token: &str) -> Duration {
    let started = Instant::now();
    loop {
        let (status, body) = call(s, Method::GET, "/api/v1/agents", token, None).await;
        if status == 401 {
            assert_eq!(body["code"], "token_revoked", "{body}");
            return started.elapsed();
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the token was never revoked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A technician with a tunnel open to a scripted agent: (tech token, session id, agent).
async fn tech_with_tunnel(
    s: &TestServer,
    admin: &str,
    username: &str,
) -> (String, String, ScriptedAgent) {
    let tech = s.tech_token(username).await.unwrap();
    let (agent_id, key) = s
        .register_agent(admin, &format!("{username}-box"))
        .await
        .unwrap();
    let mut agent = ScriptedAgent::connect(&s.ws_url(), Some(&key))
        .await
        .unwrap();
    s.wait_connected(admin, &agent_id).await.unwrap();
    let body = json!({ "agent_id": agent_id });
    let request = call(s, Method::POST, "/api/v1/tunnel/open", &tech, Some(body));
    let answer = async {
        let session = agent.expect_open().await.unwrap();
        agent.ready(&session).await.unwrap();
    };
    let ((status, body), ()) = tokio::join!(request, answer);
    assert_eq!(status, 200, "{body}");
    let session = body["session_id"].as_str().unwrap().to_owned();
    (tech, session, agent)
}

/// Waits for the agent to be told to close `session`; how long that took.
async fn time_to_tunnel_close(agent: &mut ScriptedAgent, session: &str) -> Duration {
    let started = Instant::now();
    loop {
        match agent.recv(Duration::from_secs(5)).await.unwrap() {
            Received::Json(frame) if frame["type"] == "tunnel_close" => {
                assert_eq!(frame["payload"]["session_id"], session, "{frame}");
                return started.elapsed();
            }
            Received::Json(_) => {}
            Received::Closed(frame) => panic!("agent socket closed: {frame:?}"),
        }
    }
}

async fn users_are_managed_over_the_api_with_roles_enforced(on_sqlite: bool) {
    let (s, _dir) = server(on_sqlite).await;
    let admin = s.admin_token().await.unwrap();

    let (status, body) = call(
        &s,
        Method::POST,
        "/api/v1/users",
        &admin,
        Some(json!({"username": "ann", "password": "ann-password", "role": "technician"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let ann_id = body["user_id"].as_str().unwrap().to_owned();
    let (status, body) = call(
        &s,
        Method::POST,
        "/api/v1/users",
        &admin,
        Some(json!({"username": "ann", "password": "other-password", "role": "auditor"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("username_taken")),
        "{body}"
    );

    let ann = s.login("ann", "ann-password").await.unwrap();
    let (status, body) = call(&s, Method::GET, "/api/v1/users", &ann, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );

    // Made an auditor: she reads the whole audit log (the admin's entries too), opens nothing,
    // and her existing token carries the new role at once.
    let path = format!("/api/v1/users/{ann_id}");
    let (status, body) = call(
        &s,
        Method::PATCH,
        &path,
        &admin,
        Some(json!({"role": "auditor"})),
    )
    .await;
    assert_eq!(
        (status, body["role"].as_str()),
        (200, Some("auditor")),
        "{body}"
    );
    let (status, body) = call(
        &s,
        Method::POST,
        "/api/v1/tunnel/open",
        &ann,
        Some(json!({"agent_id": uuid::Uuid::new_v4()})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, body) = call(&s, Method::GET, "/api/v1/audit?limit=100", &ann, None).await;
    assert_eq!(status, 200, "{body}");
    let events: Vec<&str> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert!(
        events.contains(&"user_created") && events.contains(&"user_updated"),
        "{events:?}"
    );

    let (status, body) = call(&s, Method::GET, "/api/v1/users", &admin, None).await;
    assert_eq!(status, 200, "{body}");
    let listed = body.as_array().unwrap();
    let ann_row = listed.iter().find(|u| u["username"] == "ann").unwrap();
    assert_eq!(ann_row["role"], "auditor");
    assert!(ann_row["last_login_at"].is_string(), "{ann_row}");

    // The only admin cannot remove their own admin rights.
    let me = listed.iter().find(|u| u["username"] == "admin").unwrap();
    let my_path = format!("/api/v1/users/{}", me["user_id"].as_str().unwrap());
    for (method, body) in [
        (Method::PATCH, Some(json!({"disabled": true}))),
        (Method::DELETE, None),
    ] {
        let (status, answer) = call(&s, method, &my_path, &admin, body).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (409, Some("last_admin")),
            "{answer}"
        );
    }

    // Deleted: her token dies, she cannot log in, her history stays, her name is free.
    let (status, _) = call(&s, Method::DELETE, &path, &admin, None).await;
    assert_eq!(status, 204);
    assert!(time_to_revocation(&s, &ann).await < Duration::from_secs(1));
    assert!(s.login("ann", "ann-password").await.is_err());
    let (status, body) = call(&s, Method::GET, &path, &admin, None).await;
    assert_eq!(status, 405, "there is no GET of one user: {body}");
    let (_, body) = call(&s, Method::GET, "/api/v1/audit?limit=100", &admin, None).await;
    let deleted = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["event"] == "user_deleted");
    assert!(deleted, "{body}");
    let (status, body) = call(
        &s,
        Method::POST,
        "/api/v1/users",
        &admin,
        Some(json!({"username": "ann", "password": "ann-password-2", "role": "technician"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn users_are_managed_over_the_api_with_roles_enforced_on_postgres() {
    users_are_managed_over_the_api_with_roles_enforced(false).await;
}

#[tokio::test]
async fn users_are_managed_over_the_api_with_roles_enforced_on_sqlite() {
    users_are_managed_over_the_api_with_roles_enforced(true).await;
}

/// Disabled from the console (another process): the token fails within 1 s, the tunnel
/// closes within 2 s as `user_disabled`, and the agent is told.
async fn a_user_disabled_from_the_console_loses_tokens_and_tunnels(on_sqlite: bool) {
    let (s, _dir) = server(on_sqlite).await;
    let admin = s.admin_token().await.unwrap();
    let (tech, session, mut agent) = tech_with_tunnel(&s, &admin, "tom").await;

    let (code, stdout, stderr) =
        console(&s.database_url, &["disable", "--username", "tom"], "").await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains("database: "),
        "says which database: {stderr}"
    );
    assert!(time_to_revocation(&s, &tech).await < Duration::from_secs(1));
    assert!(time_to_tunnel_close(&mut agent, &session).await < Duration::from_secs(2));
    let (status, body) = call(
        &s,
        Method::GET,
        &format!("/api/v1/tunnel/status/{session}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 403, "admins may not read others' sessions: {body}");
    let (_, audit) = call(
        &s,
        Method::GET,
        &format!("/api/v1/audit?session_id={session}"),
        &admin,
        None,
    )
    .await;
    let closed = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["event"] == "tunnel_close" && e["detail"] == "user_disabled");
    assert!(closed, "{audit}");
    assert!(
        s.login("tom", "tom-password").await.is_err(),
        "a disabled user logged in"
    );

    // Enabled again: a new login works; the old token stays revoked.
    let (code, stdout, stderr) =
        console(&s.database_url, &["enable", "--username", "tom"], "").await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let fresh = s.login("tom", "tom-password").await.unwrap();
    assert_eq!(
        call(&s, Method::GET, "/api/v1/agents", &fresh, None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&s, Method::GET, "/api/v1/agents", &tech, None).await.0,
        401
    );
}

#[tokio::test]
async fn a_user_disabled_from_the_console_loses_tokens_and_tunnels_on_postgres() {
    a_user_disabled_from_the_console_loses_tokens_and_tunnels(false).await;
}

#[tokio::test]
async fn a_user_disabled_from_the_console_loses_tokens_and_tunnels_on_sqlite() {
    a_user_disabled_from_the_console_loses_tokens_and_tunnels(true).await;
}

#[tokio::test]
async fn logout_and_a_password_change_revoke_tokens() {
    let (s, _dir) = server(false).await;
    let first = s.tech_token("pat").await.unwrap();
    let second = s.login("pat", "pat-password").await.unwrap();

    let change = json!({"current_password": "wrong-password", "new_password": "pat-new-password"});
    let (status, body) = call(
        &s,
        Method::POST,
        "/api/v1/auth/password",
        &first,
        Some(change),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("invalid_credentials")),
        "{body}"
    );

    let change = json!({"current_password": "pat-password", "new_password": "pat-new-password"});
    let (status, body) = call(
        &s,
        Method::POST,
        "/api/v1/auth/password",
        &first,
        Some(change),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert!(time_to_revocation(&s, &second).await < Duration::from_secs(1));
    assert_eq!(
        call(&s, Method::GET, "/api/v1/agents", &first, None)
            .await
            .0,
        200,
        "the token used stays"
    );
    assert!(s.login("pat", "pat-password").await.is_err());
    s.login("pat", "pat-new-password").await.unwrap();

    let (status, _) = call(&s, Method::POST, "/api/v1/auth/logout", &first, None).await;
    assert_eq!(status, 204);
    assert!(time_to_revocation(&s, &first).await < Duration::from_secs(1));
}

#[tokio::test]
async fn the_console_resets_a_lost_admin_password_and_refuses_a_missing_database() {
    let dir = TempDir::new().unwrap();
    let url = sqlite_url(dir.path());
    let s = TestServer::start(&url, &[]).await.unwrap();
    let old = s.admin_token().await.unwrap();

    let (code, out, err) = console(
        &url,
        &["passwd", "--username", "admin", "--password-stdin"],
        "a-new-admin-password\n",
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(time_to_revocation(&s, &old).await < Duration::from_secs(1));
    s.login("admin", "a-new-admin-password").await.unwrap();

    let (code, out, err) = console(&url, &["list"], "").await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("admin ") && l.contains("admin") && l.contains("enabled")),
        "{out}"
    );

    // A database that does not exist is not created behind the operator's back.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let missing = sqlite_url(&elsewhere);
    let (code, out, err) = console(&missing, &["list"], "").await;
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("no database at"), "{err}");
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "a database file was created"
    );

    let (code, _, err) = console(&url, &["disable", "--username", "admin"], "").await;
    assert_ne!(code, 0);
    assert!(err.contains("no enabled admin"), "{err}");
}

/// The stream of `session` watched with `token`.
async fn watcher(s: &TestServer, session: &str, token: &str) -> ScriptedAgent {
    let url = format!("ws://{}/api/v1/tunnel/{session}/stream", s.addr);
    ScriptedAgent::connect(&url, Some(token)).await.unwrap()
}

/// Waits for the stream's close frame (skipping output); its code and reason, and when it
/// came.
async fn stream_close(watcher: &mut ScriptedAgent, within: Duration) -> (u16, String, Instant) {
    loop {
        match watcher.recv(within).await.unwrap() {
            Received::Json(_) => {}
            Received::Closed(frame) => {
                let frame = frame.expect("a close frame with a reason");
                return (
                    u16::from(frame.code),
                    frame.reason.to_string(),
                    Instant::now(),
                );
            }
        }
    }
}

#[tokio::test]
async fn a_stream_closes_within_1_s_of_revocation_and_2_s_of_expiry() {
    let db = fresh_database().await.expect("test database");
    let s = TestServer::start(&db, &[("RMM_TOKEN_TTL_SECS", "5")])
        .await
        .unwrap();
    let admin = s.admin_token().await.unwrap();

    // Revoked: the user is disabled by an admin.
    let (tech, session, _agent) = tech_with_tunnel(&s, &admin, "rita").await;
    let mut stream = watcher(&s, &session, &tech).await;
    let (_, users) = call(&s, Method::GET, "/api/v1/users", &admin, None).await;
    let rita = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "rita")
        .unwrap();
    let path = format!("/api/v1/users/{}", rita["user_id"].as_str().unwrap());
    let (status, body) = call(
        &s,
        Method::PATCH,
        &path,
        &admin,
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let disabled_at = Instant::now();
    // Whichever comes first: the token check (1008) or the session's close (1000).
    let (code, reason, closed_at) = stream_close(&mut stream, Duration::from_secs(5)).await;
    let why = (code, reason.as_str());
    assert!(
        matches!(why, (1008, r) if r.contains("revoked")) || why == (1000, "session closed"),
        "{why:?}"
    );
    assert!(
        closed_at - disabled_at < Duration::from_secs(1),
        "{:?}",
        closed_at - disabled_at
    );

    // Expired: a 5 s token (its `exp` is whole seconds, so it may end up to 1 s early).
    let logged_in = Instant::now();
    let (tech, session, _agent) = tech_with_tunnel(&s, &admin, "eve").await;
    let mut stream = watcher(&s, &session, &tech).await;
    let (code, reason, closed_at) = stream_close(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("expired"), "{reason}");
    let lived = closed_at - logged_in;
    assert!(lived >= Duration::from_secs(3), "closed early: {lived:?}");
    assert!(lived < Duration::from_secs(7), "closed late: {lived:?}");
}

#[tokio::test]
async fn logout_closes_the_sessions_its_token_opened() {
    let (s, _dir) = server(true).await;
    let admin = s.admin_token().await.unwrap();
    let (tech, session, mut agent) = tech_with_tunnel(&s, &admin, "lou").await;
    let other = s.login("lou", "lou-password").await.unwrap();

    let (status, _) = call(&s, Method::POST, "/api/v1/auth/logout", &tech, None).await;
    assert_eq!(status, 204);
    assert!(time_to_tunnel_close(&mut agent, &session).await < Duration::from_secs(1));
    let path = format!("/api/v1/tunnel/status/{session}");
    let (status, body) = call(&s, Method::GET, &path, &other, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["close_reason"].as_str()),
        (Some("closed"), Some("logged_out")),
        "{body}"
    );
    // The user's other token still works.
    assert_eq!(
        call(&s, Method::GET, "/api/v1/agents", &other, None)
            .await
            .0,
        200
    );
}
