//! Agent keys on the real `rmm-server` (PostgreSQL; revocation on SQLite too): revoking an
//! agent and rotating its key end its live connection within 1 s and refuse the old key from
//! then on; renaming and moving agents (API and `rmm agents ...`); a second connection with a
//! live key audited `agent_replaced` with both client addresses.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::agent::{Received, ScriptedAgent};
use rmm_e2e::pg::{fresh_database, sqlite_url};
use rmm_e2e::server::{StartOptions, TestServer, rmm_command};
use serde_json::{Value, json};
use tempfile::TempDir;

/// A server on PostgreSQL (its database URL), or on SQLite in a folder kept as long as it
/// runs.
async fn server(on_sqlite: bool) -> (TestServer, String, Option<TempDir>) {
    if on_sqlite {
        let dir = TempDir::new().unwrap();
        let url = sqlite_url(dir.path());
        let server = TestServer::start(&url, &[]).await.unwrap();
        (server, url, Some(dir))
    } else {
        let db = fresh_database().await.expect("test database");
        (TestServer::start(&db, &[]).await.unwrap(), db, None)
    }
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

/// The agent `id` as `GET /api/v1/agents` lists it.
async fn listed(s: &TestServer, token: &str, id: &str) -> Value {
    let (status, agents) = call(s, Method::GET, "/api/v1/agents", token, None).await;
    assert_eq!(status, 200, "{agents}");
    agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("agent {id} not listed: {agents}"))
}

/// The audit entries naming `agent`, oldest first.
async fn audit_of(s: &TestServer, admin: &str, agent: &str) -> Vec<Value> {
    let path = format!("/api/v1/audit?agent_id={agent}&limit=1000");
    let (status, page) = call(s, Method::GET, &path, admin, None).await;
    assert_eq!(status, 200, "{page}");
    let mut entries = page["entries"].as_array().unwrap().clone();
    entries.reverse();
    entries
}

/// Waits for the server to close the agent's socket (JSON frames before it are skipped);
/// how long that took and the close frame's (code, reason).
async fn time_to_socket_close(agent: &mut ScriptedAgent) -> (Duration, Option<(u16, String)>) {
    let started = Instant::now();
    loop {
        match agent.recv(Duration::from_secs(5)).await {
            Ok(Received::Json(_)) => {}
            // A connection dropped without a close frame (a replaced one).
            Err(e) if e.to_string().contains("socket error") => return (started.elapsed(), None),
            Err(e) => panic!("{e}"),
            Ok(Received::Closed(frame)) => {
                let frame = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                return (started.elapsed(), frame);
            }
        }
    }
}

/// A technician's tunnel to a newly registered scripted agent `name`: (agent id, key,
/// session id, the technician's token, agent).
async fn agent_with_tunnel(
    s: &TestServer,
    admin: &str,
    name: &str,
) -> (String, String, String, String, ScriptedAgent) {
    let tech = s.tech_token(&format!("{name}-tech")).await.unwrap();
    let (agent_id, key) = s.register_agent(admin, name).await.unwrap();
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
    (agent_id, key, session, tech, agent)
}

async fn revoking_ends_the_connection_and_session_and_refuses_the_key(on_sqlite: bool) {
    let (s, _db, _dir) = server(on_sqlite).await;
    let admin = s.admin_token().await.unwrap();
    let (agent_id, key, session, owner, mut agent) = agent_with_tunnel(&s, &admin, "web-01").await;
    let path = format!("/api/v1/agents/{agent_id}");

    let tech = s.tech_token("not-an-admin").await.unwrap();
    let (status, body) = call(&s, Method::DELETE, &path, &tech, None).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));

    let (status, body) = call(&s, Method::DELETE, &path, &admin, None).await;
    assert_eq!(status, 204, "{body}");
    let (took, frame) = time_to_socket_close(&mut agent).await;
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    assert_eq!(frame, Some((1008, "agent revoked".to_owned())));

    // Its session is closed agent_revoked, its key refused like an unknown one.
    let status_path = format!("/api/v1/tunnel/status/{session}");
    let (status, body) = call(&s, Method::GET, &status_path, &owner, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "closed", "{body}");
    assert_eq!(body["close_reason"], "agent_revoked", "{body}");
    assert_eq!(
        ScriptedAgent::connect_status(&s.ws_url(), Some(&key)).await,
        Some(401)
    );
    let listed = listed(&s, &admin, &agent_id).await;
    assert_eq!(listed["revoked"], true, "{listed}");
    assert_eq!(listed["connected"], false, "{listed}");

    // Its history stays readable, with the revocation in the admin's name.
    let events: Vec<(String, Option<String>)> = audit_of(&s, &admin, &agent_id)
        .await
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["detail"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert!(
        events.contains(&("tunnel_open".to_owned(), None))
            || events.iter().any(|(e, _)| e == "tunnel_open"),
        "{events:?}"
    );
    assert!(
        events.contains(&("agent_revoked".to_owned(), None)),
        "{events:?}"
    );
    assert!(
        events.contains(&("tunnel_close".to_owned(), Some("agent_revoked".to_owned()))),
        "{events:?}"
    );

    // Revoking again changes nothing and answers 204; an unknown agent is 404.
    let (status, _) = call(&s, Method::DELETE, &path, &admin, None).await;
    assert_eq!(status, 204);
    let revocations = audit_of(&s, &admin, &agent_id)
        .await
        .iter()
        .filter(|e| e["event"] == "agent_revoked")
        .count();
    assert_eq!(revocations, 1);
    let unknown = format!("/api/v1/agents/{}", uuid::Uuid::new_v4());
    let (status, body) = call(&s, Method::DELETE, &unknown, &admin, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("agent_not_found"))
    );
    // A revoked agent gets no new key.
    let (status, body) = call(
        &s,
        Method::POST,
        &format!("{path}/rotate-key"),
        &admin,
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("revoked_agent"))
    );
}

#[tokio::test]
async fn revoking_ends_the_connection_and_session_and_refuses_the_key_on_postgres() {
    revoking_ends_the_connection_and_session_and_refuses_the_key(false).await;
}

#[tokio::test]
async fn revoking_ends_the_connection_and_session_and_refuses_the_key_on_sqlite() {
    revoking_ends_the_connection_and_session_and_refuses_the_key(true).await;
}

#[tokio::test]
async fn a_rotated_key_ends_the_old_keys_connection_and_only_the_new_key_connects() {
    let (s, _db, _dir) = server(false).await;
    let admin = s.admin_token().await.unwrap();
    let (agent_id, old_key, session, owner, mut agent) =
        agent_with_tunnel(&s, &admin, "db-01").await;

    let path = format!("/api/v1/agents/{agent_id}/rotate-key");
    let (status, body) = call(&s, Method::POST, &path, &admin, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["agent_id"], agent_id.as_str());
    let new_key = body["agent_key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, old_key);
    let (took, frame) = time_to_socket_close(&mut agent).await;
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    assert_eq!(frame, Some((1008, "agent key rotated".to_owned())));
    let status_path = format!("/api/v1/tunnel/status/{session}");
    let (_, body) = call(&s, Method::GET, &status_path, &owner, None).await;
    assert_eq!(body["close_reason"], "agent_disconnected", "{body}");

    assert_eq!(
        ScriptedAgent::connect_status(&s.ws_url(), Some(&old_key)).await,
        Some(401)
    );
    let _agent = ScriptedAgent::connect(&s.ws_url(), Some(&new_key))
        .await
        .unwrap();
    s.wait_connected(&admin, &agent_id).await.unwrap();
    assert_eq!(listed(&s, &admin, &agent_id).await["revoked"], false);
    let events: Vec<_> = audit_of(&s, &admin, &agent_id)
        .await
        .iter()
        .filter_map(|e| e["event"].as_str().map(str::to_owned))
        .collect();
    assert!(
        events.contains(&"agent_key_rotated".to_owned()),
        "{events:?}"
    );

    // `rmm agents rotate-key NAME` prints the new key once, and it works.
    let home = TempDir::new().unwrap();
    let out = rmm_command(&s.url(""), home.path(), &["agents", "rotate-key", "db-01"])
        .unwrap()
        .env("RMM_TOKEN", &admin)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    let cli_key = printed.trim();
    assert!(cli_key.starts_with("rmmk_"), "{printed:?}");
    assert_eq!(
        ScriptedAgent::connect_status(&s.ws_url(), Some(&new_key)).await,
        Some(401)
    );
    ScriptedAgent::connect(&s.ws_url(), Some(cli_key))
        .await
        .unwrap();
}

#[tokio::test]
async fn agents_are_renamed_and_moved_over_the_api_and_the_cli() {
    let (s, db, _dir) = server(false).await;
    let admin = s.admin_token().await.unwrap();
    let (web, _) = s.register_agent(&admin, "web-01").await.unwrap();
    s.register_agent(&admin, "db-01").await.unwrap();
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    sqlx::query("insert into groups (group_id, name) values ($1, 'acme')")
        .bind(uuid::Uuid::new_v4())
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let path = format!("/api/v1/agents/{web}");

    let (status, body) = call(
        &s,
        Method::PATCH,
        &path,
        &admin,
        Some(json!({"name": "db-01"})),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (409, Some("agent_exists")));
    let (status, body) = call(
        &s,
        Method::PATCH,
        &path,
        &admin,
        Some(json!({"group": "nope"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("group_not_found"))
    );
    assert!(body["error"].as_str().unwrap().contains("nope"), "{body}");
    let (status, body) = call(
        &s,
        Method::PATCH,
        &path,
        &admin,
        Some(json!({"name": "web-02"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["name"].as_str(), body["group"].as_str()),
        (Some("web-02"), Some("default"))
    );

    // `rmm agents move NAME --group G --json`.
    let home = TempDir::new().unwrap();
    let out = rmm_command(
        &s.url(""),
        home.path(),
        &["agents", "move", "web-02", "--group", "acme", "--json"],
    )
    .unwrap()
    .env("RMM_TOKEN", &admin)
    .output()
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let moved: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(moved["group"], "acme", "{moved}");
    let listed = listed(&s, &admin, &web).await;
    assert_eq!(
        (listed["name"].as_str(), listed["group"].as_str()),
        (Some("web-02"), Some("acme"))
    );
    let updates: Vec<_> = audit_of(&s, &admin, &web)
        .await
        .iter()
        .filter(|e| e["event"] == "agent_updated")
        .filter_map(|e| e["detail"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(updates, vec!["name=web-02", "group=acme"]);

    // `rmm agents revoke ID --json`, then the list says so.
    let out = rmm_command(
        &s.url(""),
        home.path(),
        &["agents", "revoke", &web, "--json"],
    )
    .unwrap()
    .env("RMM_TOKEN", &admin)
    .output()
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let revoked: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(revoked["revoked"], true, "{revoked}");
    let out = rmm_command(&s.url(""), home.path(), &["agents", "--json"])
        .unwrap()
        .env("RMM_TOKEN", &admin)
        .output()
        .await
        .unwrap();
    let agents: Value = serde_json::from_slice(&out.stdout).unwrap();
    let web_listed = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == web.as_str())
        .unwrap();
    assert_eq!(web_listed["revoked"], true, "{agents}");
}

#[tokio::test]
async fn a_second_connection_with_a_live_key_is_audited_with_both_addresses() {
    let db = fresh_database().await.expect("test database");
    let options = StartOptions {
        capture_log: true,
        ..StartOptions::default()
    };
    let s = TestServer::start_with(&db, &[], options).await.unwrap();
    let admin = s.admin_token().await.unwrap();
    let (agent_id, key) = s.register_agent(&admin, "twin").await.unwrap();
    let first_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let second_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut first = ScriptedAgent::connect_from(&s.ws_url(), &key, first_ip)
        .await
        .unwrap();
    s.wait_connected(&admin, &agent_id).await.unwrap();
    let _second = ScriptedAgent::connect_from(&s.ws_url(), &key, second_ip)
        .await
        .unwrap();
    // The first connection is dropped for the second.
    let (took, _) = time_to_socket_close(&mut first).await;
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    s.wait_for_log(
        &["WARN", "replaced the first", "127.0.0.1", "127.0.0.2"],
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let replaced: Vec<_> = audit_of(&s, &admin, &agent_id)
        .await
        .iter()
        .filter(|e| e["event"] == "agent_replaced")
        .filter_map(|e| e["detail"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(replaced, vec!["old 127.0.0.1, new 127.0.0.2"]);
}
