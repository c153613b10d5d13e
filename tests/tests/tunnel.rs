//! Phase 1 end to end: the real `rmm-server` on a free port, a fresh PostgreSQL database
//! from testcontainers, and a scripted agent speaking the reference JSON.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::agent::{Received, ScriptedAgent};
use rmm_e2e::pg::fresh_database;
use rmm_e2e::server::TestServer;
use serde_json::{Value, json};
use sqlx::{Connection as _, PgConnection, Row as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const WAIT: Duration = Duration::from_secs(5);

struct World {
    server: TestServer,
    admin: String,
    agent_id: String,
    agent_key: String,
}

async fn world(env: &[(&str, &str)]) -> World {
    let db = fresh_database().await.expect("test database");
    let server = TestServer::start(&db, env).await.expect("server");
    let admin = server.admin_token().await.expect("admin login");
    let (agent_id, agent_key) = server
        .register_agent(&admin, "web-01")
        .await
        .expect("agent");
    World {
        server,
        admin,
        agent_id,
        agent_key,
    }
}

impl World {
    async fn agent(&self) -> ScriptedAgent {
        let agent = ScriptedAgent::connect(&self.server.ws_url(), Some(&self.agent_key))
            .await
            .expect("agent connects");
        self.server
            .wait_connected(&self.admin, &self.agent_id)
            .await
            .expect("agent registered");
        agent
    }

    async fn open(&self, token: &str) -> (u16, Value) {
        self.server
            .call(
                Method::POST,
                "/api/v1/tunnel/open",
                Some(token),
                Some(json!({ "agent_id": self.agent_id })),
            )
            .await
            .expect("open")
    }

    async fn status(&self, token: &str, session: &str) -> (u16, Value) {
        self.server
            .call(
                Method::GET,
                &format!("/api/v1/tunnel/status/{session}"),
                Some(token),
                None,
            )
            .await
            .expect("status")
    }

    async fn close(&self, token: &str, session: &str) -> (u16, Value) {
        self.server
            .call(
                Method::POST,
                "/api/v1/tunnel/close",
                Some(token),
                Some(json!({ "session_id": session })),
            )
            .await
            .expect("close")
    }

    /// Opens a tunnel with `agent` answering ready; the session id.
    async fn open_ready(&self, agent: &mut ScriptedAgent, token: &str) -> String {
        let (result, session) = tokio::join!(self.open(token), async {
            let session = agent.expect_open().await.expect("tunnel_open");
            agent.ready(&session).await.expect("ready");
            session
        });
        assert_eq!(
            result,
            (200, json!({ "session_id": session, "status": "active" }))
        );
        session
    }

    async fn agents(&self) -> Vec<Value> {
        let (status, body) = self
            .server
            .call(Method::GET, "/api/v1/agents", Some(&self.admin), None)
            .await
            .expect("agents");
        assert_eq!(status, 200);
        body.as_array().cloned().expect("array")
    }

    async fn wait_for_status(&self, token: &str, session: &str, want: &str) -> Value {
        let started = Instant::now();
        loop {
            let (code, body) = self.status(token, session).await;
            assert_eq!(code, 200, "{body}");
            if body["status"] == want {
                return body;
            }
            assert!(
                started.elapsed() < WAIT,
                "session never became {want}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn audit_actions(&self) -> Vec<(String, Option<String>)> {
        let mut db = PgConnection::connect(&self.server.database_url)
            .await
            .expect("db");
        // Users created by the fixture are not what these tests are about.
        sqlx::query(
            "select action, detail from audit_events where action <> 'user_created' \
             order by audit_id",
        )
        .fetch_all(&mut db)
        .await
        .expect("audit rows")
        .into_iter()
        .map(|r| {
            (
                r.get::<String, _>("action"),
                r.get::<Option<String>, _>("detail"),
            )
        })
        .collect()
    }
}

fn error_text(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no JSON error in {body}"))
}

#[tokio::test]
async fn health_docs_and_spec_are_served() {
    let w = world(&[]).await;
    assert_eq!(
        w.server
            .call(Method::GET, "/healthz", None, None)
            .await
            .unwrap(),
        (200, json!({"status": "ok"}))
    );
    assert_eq!(
        w.server
            .call(Method::GET, "/readyz", None, None)
            .await
            .unwrap(),
        (200, json!({"status": "ready"}))
    );
    let (code, spec) = w
        .server
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert!(spec["paths"]["/api/v1/tunnel/open"]["post"].is_object());
    let docs = w
        .server
        .http()
        .get(w.server.url("/docs"))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
}

#[tokio::test]
async fn login_gives_a_jwt_with_the_documented_claims_and_rejects_bad_credentials() {
    let w = world(&[]).await;
    let (code, body) = w
        .server
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "admin", "password": "wrong"})),
        )
        .await
        .unwrap();
    assert_eq!(code, 401);
    assert_eq!(error_text(&body), "invalid username or password");
    let (code, _) = w
        .server
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "nobody", "password": "x"})),
        )
        .await
        .unwrap();
    assert_eq!(code, 401);

    use base64::Engine as _;
    let claims = w.admin.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["role"], "admin");
    assert!(uuid::Uuid::parse_str(claims["sub"].as_str().unwrap()).is_ok());
    assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());
}

#[tokio::test]
async fn missing_garbage_none_and_expired_tokens_are_401_with_a_json_error() {
    let w = world(&[("RMM_TOKEN_TTL_SECS", "1")]).await;
    let (code, body) = w
        .server
        .call(Method::GET, "/api/v1/agents", None, None)
        .await
        .unwrap();
    assert_eq!(code, 401);
    assert!(error_text(&body).contains("bearer token"));
    let (code, _) = w
        .server
        .call(Method::GET, "/api/v1/agents", Some("garbage"), None)
        .await
        .unwrap();
    assert_eq!(code, 401);

    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let claims = w.admin.split('.').nth(1).unwrap();
    let none = format!("{}.{claims}.", b64(r#"{"alg":"none","typ":"JWT"}"#));
    let (code, _) = w
        .server
        .call(Method::GET, "/api/v1/agents", Some(&none), None)
        .await
        .unwrap();
    assert_eq!(code, 401);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (code, body) = w
        .server
        .call(Method::GET, "/api/v1/agents", Some(&w.admin), None)
        .await
        .unwrap();
    assert_eq!(code, 401);
    assert_eq!(error_text(&body), "token expired: log in again");
}

#[tokio::test]
async fn agents_are_registered_by_admins_only_and_listed_with_their_connection() {
    let w = world(&[]).await;
    let tech = w.server.tech_token("tina").await.unwrap();
    let (code, body) = w
        .server
        .call(
            Method::POST,
            "/api/v1/agents",
            Some(&tech),
            Some(json!({"name": "db-01"})),
        )
        .await
        .unwrap();
    assert_eq!(code, 403, "{body}");
    let (code, body) = w
        .server
        .call(
            Method::POST,
            "/api/v1/agents",
            Some(&w.admin),
            Some(json!({"name": "web-01"})),
        )
        .await
        .unwrap();
    assert_eq!(code, 409, "{body}");
    let (code, body) = w
        .server
        .call(
            Method::POST,
            "/api/v1/agents",
            Some(&w.admin),
            Some(json!({"name": "  "})),
        )
        .await
        .unwrap();
    assert_eq!(code, 400);
    assert!(error_text(&body).contains("agent name"));
    assert!(w.agent_key.starts_with("rmmk_"));

    let listed = w.agents().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["agent_id"], w.agent_id.as_str());
    assert_eq!(
        (listed[0]["connected"].clone(), listed[0]["mode"].clone()),
        (json!(false), json!("offline"))
    );

    let mut agent = w.agent().await;
    agent
        .send_text(r#"{"type":"heartbeat","payload":{"agent_version":"9.9.9","hostname":"h-01","os":"linux","uptime_secs":5}}"#)
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let listed = w.agents().await;
        if listed[0]["connected"] == json!(true) && listed[0]["hostname"] == "h-01" {
            assert_eq!(listed[0]["mode"], "heartbeat");
            assert_eq!(listed[0]["agent_version"], "9.9.9");
            assert!(listed[0]["last_seen"].is_string());
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "agent never listed as connected: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The key is stored only as a digest.
    let mut db = PgConnection::connect(&w.server.database_url).await.unwrap();
    let digest: Vec<u8> = sqlx::query_scalar("select key_digest from agents")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(digest.len(), 32);
    assert!(!String::from_utf8_lossy(&digest).contains(&w.agent_key));
}

#[tokio::test]
async fn a_wrong_or_missing_agent_key_gets_401_before_any_upgrade() {
    let w = world(&[]).await;
    assert_eq!(
        ScriptedAgent::connect_status(&w.server.ws_url(), Some("rmmk_wrong")).await,
        Some(401)
    );
    assert_eq!(
        ScriptedAgent::connect_status(&w.server.ws_url(), None).await,
        Some(401)
    );
    assert_eq!(w.agents().await[0]["connected"], json!(false));
}

#[tokio::test]
async fn open_is_a_handshake_and_the_session_lifecycle_follows_the_reference() {
    let w = world(&[]).await;
    let tech = w.server.tech_token("tina").await.unwrap();
    let other = w.server.tech_token("otto").await.unwrap();
    let mut agent = w.agent().await;

    // The exact reference frame reaches the agent, and open answers only after tunnel_ready.
    let open = tokio::spawn({
        let server_url = w.server.url("/api/v1/tunnel/open");
        let client = w.server.http().clone();
        let (token, agent_id) = (tech.clone(), w.agent_id.clone());
        async move {
            let r = client
                .post(server_url)
                .bearer_auth(token)
                .json(&json!({"agent_id": agent_id}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    });
    let frame = agent.recv_json(WAIT).await.unwrap();
    let session = frame["payload"]["session_id"].as_str().unwrap().to_owned();
    let tina_id = w.agents().await; // any call; the tech id is checked below from the frame
    drop(tina_id);
    assert_eq!(frame["type"], "tunnel_open");
    assert_eq!(frame.as_object().unwrap().len(), 2);
    assert_eq!(frame["payload"].as_object().unwrap().len(), 2);
    assert!(uuid::Uuid::parse_str(frame["payload"]["tech_id"].as_str().unwrap()).is_ok());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !open.is_finished(),
        "open answered before the agent confirmed"
    );
    let (code, body) = w.status(&tech, &session).await;
    assert_eq!((code, body["status"].clone()), (200, json!("pending")));
    agent.ready(&session).await.unwrap();
    assert_eq!(
        open.await.unwrap(),
        (200, json!({"session_id": session, "status": "active"}))
    );

    let (code, body) = w.status(&tech, &session).await;
    assert_eq!(code, 200);
    assert_eq!(body["status"], "active");
    assert_eq!(body["agent_id"], w.agent_id.as_str());
    assert!(body["opened_at"].is_string() && body["last_activity"].is_string());
    assert_eq!(w.agents().await[0]["mode"], "tunnel");

    // One active session per agent, whoever asks.
    let (code, body) = w.open(&other).await;
    assert_eq!(code, 409, "{body}");
    let (code, _) = w.open(&tech).await;
    assert_eq!(code, 409);

    // Only the owner reads or closes.
    assert_eq!(w.status(&other, &session).await.0, 403);
    assert_eq!(w.close(&other, &session).await.0, 403);

    let (code, body) = w.close(&tech, &session).await;
    assert_eq!(code, 200);
    assert_eq!(body["status"], "closed");
    assert_eq!(
        agent.recv_json(WAIT).await.unwrap(),
        json!({"type": "tunnel_close", "payload": {"session_id": session}})
    );

    let body = w.wait_for_status(&tech, &session, "closed").await;
    assert!(body["closed_at"].is_string());
    assert_eq!(body["close_reason"], "closed_by_owner");
    assert_eq!(w.agents().await[0]["mode"], "heartbeat");

    // Closed sessions free the agent for the next open.
    let again = w.open_ready(&mut agent, &other).await;
    assert_ne!(again, session);

    let actions: Vec<String> = w
        .audit_actions()
        .await
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(actions, ["tunnel_open", "tunnel_close", "tunnel_open"]);
}

#[tokio::test]
async fn bad_input_gets_the_reference_status_codes_with_json_errors() {
    let w = world(&[]).await;
    let tech = w.server.tech_token("tina").await.unwrap();
    type Case<'a> = (Method, &'a str, Option<&'a str>, Option<Value>, u16);
    let cases: Vec<Case<'_>> = vec![
        (
            Method::POST,
            "/api/v1/tunnel/open",
            Some(&tech),
            Some(json!({"agent_id": "not-a-uuid"})),
            400,
        ),
        (
            Method::POST,
            "/api/v1/tunnel/open",
            Some(&tech),
            Some(json!({"agent": 1})),
            400,
        ),
        (
            Method::POST,
            "/api/v1/tunnel/open",
            None,
            Some(json!({"agent_id": w.agent_id})),
            401,
        ),
        (
            Method::POST,
            "/api/v1/tunnel/open",
            Some(&tech),
            Some(json!({"agent_id": w.agent_id})),
            404,
        ),
        (
            Method::POST,
            "/api/v1/tunnel/open",
            Some(&tech),
            Some(json!({"agent_id": uuid::Uuid::new_v4()})),
            404,
        ),
        (
            Method::POST,
            "/api/v1/tunnel/close",
            Some(&tech),
            Some(json!({"session_id": "nope"})),
            400,
        ),
        (
            Method::POST,
            "/api/v1/tunnel/close",
            Some(&tech),
            Some(json!({"session_id": uuid::Uuid::new_v4()})),
            404,
        ),
        (
            Method::POST,
            "/api/v1/tunnel/close",
            None,
            Some(json!({"session_id": uuid::Uuid::new_v4()})),
            401,
        ),
        (
            Method::GET,
            "/api/v1/tunnel/status/nope",
            Some(&tech),
            None,
            400,
        ),
        (
            Method::GET,
            "/api/v1/tunnel/status/00000000-0000-0000-0000-000000000000",
            Some(&tech),
            None,
            404,
        ),
        (
            Method::GET,
            "/api/v1/tunnel/status/00000000-0000-0000-0000-000000000000",
            None,
            None,
            401,
        ),
    ];
    for (method, path, token, body, want) in cases {
        let (code, response) = w
            .server
            .call(method.clone(), path, token, body.clone())
            .await
            .unwrap();
        assert_eq!(code, want, "{method} {path} {body:?} -> {response}");
        assert!(!error_text(&response).is_empty());
    }
    // Malformed JSON text.
    let r = w
        .server
        .http()
        .post(w.server.url("/api/v1/tunnel/open"))
        .bearer_auth(&tech)
        .header("content-type", "application/json")
        .body("{\"agent_id\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
}

#[tokio::test]
async fn a_refusal_is_an_immediate_409_and_leaves_nothing_active() {
    let w = world(&[]).await;
    let tech = w.server.tech_token("tina").await.unwrap();
    let mut agent = w.agent().await;
    let started = Instant::now();
    let (result, ()) = tokio::join!(w.open(&tech), async {
        let session = agent.expect_open().await.unwrap();
        agent
            .send_text(&format!(r#"{{"type":"tunnel_error","payload":{{"channel_id":"{session}","error":"tunnel already open"}}}}"#))
            .await
            .unwrap();
    });
    assert_eq!(result.0, 409, "{}", result.1);
    assert!(error_text(&result.1).contains("tunnel already open"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refusal waited for the timeout"
    );
    assert_eq!(w.agents().await[0]["mode"], "heartbeat");
    w.open_ready(&mut agent, &tech).await;
    let actions: Vec<String> = w
        .audit_actions()
        .await
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(actions, ["tunnel_refused", "tunnel_open"]);
}

#[tokio::test]
async fn an_unanswered_open_is_504_after_the_timeout_and_a_late_ready_is_undone() {
    let w = world(&[]).await;
    let tech = w.server.tech_token("tina").await.unwrap();
    let mut agent = w.agent().await;
    let started = Instant::now();
    let (result, session) =
        tokio::join!(w.open(&tech), async { agent.expect_open().await.unwrap() });
    assert_eq!(result.0, 504, "{}", result.1);
    assert!(started.elapsed() >= Duration::from_secs(2));
    // The server tells the agent to drop the session it gave up on.
    assert_eq!(
        agent.recv_json(WAIT).await.unwrap(),
        json!({"type": "tunnel_close", "payload": {"session_id": session}})
    );
    let body = w.wait_for_status(&tech, &session, "closed").await;
    assert_eq!(body["close_reason"], "open_timeout");
    // A late ready changes nothing: still closed, agent still in heartbeat mode.
    agent.ready(&session).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.status(&tech, &session).await.1["status"], "closed");
    assert_eq!(w.agents().await[0]["mode"], "heartbeat");
    w.open_ready(&mut agent, &tech).await;
    assert!(
        w.audit_actions()
            .await
            .iter()
            .any(|(a, _)| a == "tunnel_timeout")
    );
}

#[tokio::test]
async fn another_agents_tunnel_ready_for_someone_elses_session_changes_nothing() {
    let w = world(&[]).await;
    let tech = w.server.tech_token("tina").await.unwrap();
    let (_, other_key) = w.server.register_agent(&w.admin, "intruder").await.unwrap();
    let mut intruder = ScriptedAgent::connect(&w.server.ws_url(), Some(&other_key))
        .await
        .unwrap();
    let mut agent = w.agent().await;
    let (result, session) = tokio::join!(w.open(&tech), async {
        let session = agent.expect_open().await.unwrap();
        intruder.ready(&session).await.unwrap();
        session
    });
    assert_eq!(
        result.0, 504,
        "a spoofed ready opened the tunnel: {}",
        result.1
    );
    assert_eq!(
        w.status(&tech, &session).await.1["close_reason"],
        "open_timeout"
    );
}

#[tokio::test]
async fn an_agent_disconnect_closes_its_session_within_a_second() {
    let w = world(&[]).await;
    let tech = w.server.tech_token("tina").await.unwrap();
    let mut agent = w.agent().await;
    let session = w.open_ready(&mut agent, &tech).await;
    agent.drop_connection();
    let started = Instant::now();
    let body = w.wait_for_status(&tech, &session, "closed").await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(body["close_reason"], "agent_disconnected");
    assert_eq!(w.agents().await[0]["connected"], json!(false));
    assert!(
        w.audit_actions()
            .await
            .contains(&("tunnel_close".into(), Some("agent_disconnected".into())))
    );
}

#[tokio::test]
async fn a_reconnect_replaces_the_old_connection_and_its_late_cleanup_touches_nothing_new() {
    let w = world(&[]).await;
    let tech = w.server.tech_token("tina").await.unwrap();
    let mut old = w.agent().await;
    let first = w.open_ready(&mut old, &tech).await;
    // The agent reconnects while the old socket is still open: the old tunnel is gone.
    let mut new = w.agent().await;
    assert_eq!(
        w.wait_for_status(&tech, &first, "closed").await["close_reason"],
        "agent_reconnected"
    );
    let second = w.open_ready(&mut new, &tech).await;
    // The old connection's end must not close the new connection's session.
    old.drop_connection();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.status(&tech, &second).await.1["status"], "active");
    assert_eq!(w.agents().await[0]["mode"], "tunnel");
}

#[tokio::test]
async fn a_restart_closes_what_the_previous_process_left_active() {
    let mut w = world(&[]).await;
    let tech = w.server.tech_token("tina").await.unwrap();
    let mut agent = w.agent().await;
    let session = w.open_ready(&mut agent, &tech).await;
    // A command the crashed process never saw end.
    let (code, started) = w
        .server
        .call(
            Method::POST,
            &format!("/api/v1/tunnel/{session}/command"),
            Some(&tech),
            Some(json!({ "command": "sleep 100" })),
        )
        .await
        .unwrap();
    assert_eq!(code, 202, "{started}");
    w.server.kill().await.unwrap();
    drop(agent);
    w.server.restart().await.unwrap();
    let (code, body) = w.status(&tech, &session).await;
    assert_eq!(code, 200);
    assert_eq!(
        (body["status"].clone(), body["close_reason"].clone()),
        (json!("closed"), json!("server_restart"))
    );
    // Both ends are audited, with the reason.
    let audit = w.audit_actions().await;
    for action in ["tunnel_close", "command_end"] {
        assert!(
            audit.contains(&(action.into(), Some("server_restart".into()))),
            "{action} missing: {audit:?}"
        );
    }
}

#[tokio::test]
async fn sigterm_closes_sessions_tells_agents_and_exits_zero() {
    let mut w = world(&[]).await;
    let tech = w.server.tech_token("tina").await.unwrap();
    let mut agent = w.agent().await;
    let session = w.open_ready(&mut agent, &tech).await;
    let exit = w.server.terminate().await.unwrap();
    assert_eq!(exit, Some(0));
    assert_eq!(
        agent.recv_json(WAIT).await.unwrap(),
        json!({"type": "tunnel_close", "payload": {"session_id": session}})
    );
    match agent.recv(WAIT).await.unwrap() {
        Received::Closed(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close frame, got {other:?}"),
    }
    let mut db = PgConnection::connect(&w.server.database_url).await.unwrap();
    let (status, reason): (String, String) = sqlx::query_as(
        "select status, close_reason from tech_sessions where session_id = $1::uuid",
    )
    .bind(&session)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("closed", "server_shutdown")
    );
    assert!(
        w.audit_actions()
            .await
            .contains(&("tunnel_close".into(), Some("server_shutdown".into())))
    );
}

#[tokio::test]
async fn idle_sessions_close_after_the_inactivity_timeout() {
    let w = world(&[("RMM_IDLE_TIMEOUT_SECS", "1")]).await;
    let tech = w.server.tech_token("tina").await.unwrap();
    let mut agent = w.agent().await;
    let session = w.open_ready(&mut agent, &tech).await;
    assert_eq!(
        agent.recv_json(WAIT).await.unwrap(),
        json!({"type": "tunnel_close", "payload": {"session_id": session}})
    );
    assert_eq!(
        w.wait_for_status(&tech, &session, "closed").await["close_reason"],
        "idle"
    );
}

#[tokio::test]
async fn hostile_frames_never_cost_the_connection_but_oversized_ones_close_with_1009() {
    let w = world(&[("RMM_MAX_AGENT_FRAME", "65536")]).await;
    let tech = w.server.tech_token("tina").await.unwrap();
    let mut agent = w.agent().await;
    for frame in [
        "{not json",
        "[]",
        r#"{"type":"no_such_message","payload":{}}"#,
        r#"{"type":"tunnel_ready","payload":{"session_id":42}}"#,
        r#"{"type":"tunnel_ready","payload":{"session_id":"not-a-uuid"}}"#,
        r#"{"type":"tunnel_data","payload":{"channel_id":"x","data":{"type":"bogus"}}}"#,
        r#"{"type":"tunnel_error"}"#,
        "",
    ] {
        agent.send_text(frame).await.unwrap();
    }
    agent
        .send(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .unwrap();
    // Still connected and working.
    w.open_ready(&mut agent, &tech).await;

    agent
        .send_text(&format!(
            r#"{{"type":"heartbeat","payload":{{"hostname":"{}"}}}}"#,
            "x".repeat(70_000)
        ))
        .await
        .unwrap();
    match agent.recv(WAIT).await {
        Ok(Received::Closed(Some(frame))) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected close 1009, got {other:?}"),
    }
}

#[tokio::test]
async fn a_plain_get_with_a_valid_agent_key_changes_nothing() {
    let w = world(&[]).await;
    let tech = w.server.tech_token("tina").await.unwrap();
    let mut agent = w.agent().await;
    let session = w.open_ready(&mut agent, &tech).await;
    let r = w
        .server
        .http()
        .get(w.server.url("/api/v1/agent/ws"))
        .bearer_auth(&w.agent_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(w.status(&tech, &session).await.1["status"], "active");
    assert_eq!(w.agents().await[0]["mode"], "tunnel");
}
