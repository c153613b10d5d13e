//! Phase 2 against a scripted agent that speaks only the reference protocol (no
//! capabilities): the exact JSON frames both ways, streaming to watchers, results, raw bytes,
//! the lossless extension, cancel, caps, access rules and the audit trail.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::time::Duration;

use reqwest::Method;
use rmm_e2e::agent::{Received, ScriptedAgent};
use rmm_e2e::pg::fresh_database;
use rmm_e2e::server::TestServer;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(5);

struct World {
    server: TestServer,
    admin: String,
    tech: String,
    agent_key: String,
    agent: ScriptedAgent,
    session: String,
}

async fn world(env: &[(&str, &str)]) -> World {
    let db = fresh_database().await.unwrap();
    let server = TestServer::start(&db, env).await.unwrap();
    let admin = server.admin_token().await.unwrap();
    let (agent_id, agent_key) = server.register_agent(&admin, "web-01").await.unwrap();
    let tech = server.tech_token("tina").await.unwrap();
    let mut agent = ScriptedAgent::connect(&server.ws_url(), Some(&agent_key))
        .await
        .unwrap();
    server.wait_connected(&admin, &agent_id).await.unwrap();
    let (open, session) = tokio::join!(
        server.call(
            Method::POST,
            "/api/v1/tunnel/open",
            Some(&tech),
            Some(json!({ "agent_id": agent_id }))
        ),
        async {
            let session = agent.expect_open().await.unwrap();
            agent.ready(&session).await.unwrap();
            session
        }
    );
    assert_eq!(open.unwrap().0, 200);
    World {
        server,
        admin,
        tech,
        agent_key,
        agent,
        session,
    }
}

impl World {
    async fn run(&self, command: &str) -> (u16, Value) {
        self.server
            .call(
                Method::POST,
                &format!("/api/v1/tunnel/{}/command", self.session),
                Some(&self.tech),
                Some(json!({ "command": command })),
            )
            .await
            .unwrap()
    }

    async fn result(&self, command_id: &str, wait: u64) -> Value {
        let (code, body) = self
            .server
            .call(
                Method::GET,
                &format!(
                    "/api/v1/tunnel/{}/commands/{command_id}?wait={wait}",
                    self.session
                ),
                Some(&self.tech),
                None,
            )
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        body
    }

    async fn raw(&self, command_id: &str, stream: &str) -> Vec<u8> {
        let (status, content_type, bytes) = self
            .server
            .raw_output(&self.tech, &self.session, command_id, stream)
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(content_type, "application/octet-stream");
        bytes
    }

    async fn watcher(&self, token: &str) -> ScriptedAgent {
        let url = format!(
            "ws://{}/api/v1/tunnel/{}/stream",
            self.server.addr, self.session
        );
        ScriptedAgent::connect(&url, Some(token)).await.unwrap()
    }

    async fn output(&mut self, channel: &str, stdout: &str, stderr: &str, exit: Option<i32>) {
        let frame = json!({"type":"tunnel_data","payload":{"channel_id":channel,"data":{"type":"terminal_output","payload":{"stdout":stdout,"stderr":stderr,"exit_code":exit}}}});
        self.agent.send_text(&frame.to_string()).await.unwrap();
    }

    async fn audit(&self) -> Vec<Value> {
        let (code, body) = self
            .server
            .call(
                Method::GET,
                "/api/v1/audit?limit=100",
                Some(&self.admin),
                None,
            )
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        body["entries"].as_array().cloned().unwrap()
    }
}

#[tokio::test]
async fn a_command_travels_as_the_exact_reference_frames_and_its_output_is_kept_and_streamed() {
    let mut w = world(&[]).await;
    let mut watcher = w.watcher(&w.tech.clone()).await;
    let (code, started) = w.run("ls -la").await;
    assert_eq!(code, 202, "{started}");
    let command_id = started["command_id"].as_str().unwrap().to_owned();
    let channel = started["channel_id"].as_str().unwrap().to_owned();
    assert_eq!(started["timeout_secs"], 300);

    // Exactly the reference frame: no extension field for an agent that did not ask.
    let frame = w.agent.recv_json(WAIT).await.unwrap();
    assert_eq!(
        frame,
        json!({"type":"tunnel_data","payload":{"channel_id":channel,"data":{"type":"terminal","payload":{"command":"ls -la"}}}})
    );

    w.output(&channel, "total 8\n", "", None).await;
    w.output(&channel, "", "warn\n", None).await;
    w.output(&channel, "", "", Some(0)).await;

    for (stdout, stderr, exit) in [
        ("total 8\n", "", Value::Null),
        ("", "warn\n", Value::Null),
        ("", "", json!(0)),
    ] {
        let seen = watcher.recv_json(WAIT).await.unwrap();
        assert_eq!(
            seen,
            json!({"type":"tunnel_data","payload":{"channel_id":channel,"data":{"type":"terminal_output","payload":{"stdout":stdout,"stderr":stderr,"exit_code":exit}}}})
        );
    }

    let result = w.result(&command_id, 5).await;
    assert_eq!(result["status"], "completed");
    assert_eq!(result["exit_code"], 0);
    assert_eq!(result["stdout"], "total 8\n");
    assert_eq!(result["stderr"], "warn\n");
    assert_eq!(result["command"], "ls -la");
    assert_eq!(
        (
            result["stdout_bytes"].clone(),
            result["stderr_bytes"].clone()
        ),
        (json!(8), json!(5))
    );
    assert!(result["finished_at"].is_string());
    assert_eq!(w.raw(&command_id, "stdout").await, b"total 8\n");
    assert_eq!(w.raw(&command_id, "stderr").await, b"warn\n");

    let audit = w.audit().await;
    let command = audit.iter().find(|e| e["event"] == "command").unwrap();
    assert_eq!(
        (command["command"].clone(), command["status"].clone()),
        (json!("ls -la"), json!("running"))
    );
    let end = audit.iter().find(|e| e["event"] == "command_end").unwrap();
    assert_eq!(
        (
            end["status"].clone(),
            end["exit_code"].clone(),
            end["stdout_bytes"].clone()
        ),
        (json!("completed"), json!(0), json!(8))
    );
    assert!(end["duration_ms"].is_u64());
    assert!(
        end["id"].as_i64() > command["id"].as_i64(),
        "newest first: {audit:?}"
    );
}

#[tokio::test]
async fn bytes_that_are_not_utf8_arrive_exactly_through_the_lossless_extension() {
    let mut w = world(&[]).await;
    let (_, started) = w.run("printf '\\377\\376abc\\200'").await;
    let command_id = started["command_id"].as_str().unwrap().to_owned();
    let channel = started["channel_id"].as_str().unwrap().to_owned();
    let _ = w.agent.recv_json(WAIT).await.unwrap();
    let frame = json!({"type":"tunnel_data","payload":{"channel_id":channel,"data":{"type":"terminal_output","payload":{"stdout":"\u{fffd}\u{fffd}abc\u{fffd}","stdout_b64":"//5hYmOA","stderr":"","exit_code":null}}}});
    w.agent.send_text(&frame.to_string()).await.unwrap();
    w.output(&channel, "", "", Some(0)).await;
    assert_eq!(w.result(&command_id, 5).await["status"], "completed");
    assert_eq!(w.raw(&command_id, "stdout").await, b"\xff\xfeabc\x80");
}

#[tokio::test]
async fn a_late_watcher_gets_the_replay_and_two_watchers_see_the_same_frames() {
    let mut w = world(&[]).await;
    let mut first = w.watcher(&w.tech.clone()).await;
    let (_, started) = w.run("echo first; sleep 3; echo last").await;
    let channel = started["channel_id"].as_str().unwrap().to_owned();
    let _ = w.agent.recv_json(WAIT).await.unwrap();
    w.output(&channel, "first\n", "", None).await;
    let from_first = first.recv_json(WAIT).await.unwrap();
    let mut late = w.watcher(&w.tech.clone()).await;
    assert_eq!(
        late.recv_json(WAIT).await.unwrap(),
        from_first,
        "replay differs"
    );
    w.output(&channel, "last\n", "", Some(0)).await;
    assert_eq!(
        first.recv_json(WAIT).await.unwrap(),
        late.recv_json(WAIT).await.unwrap()
    );
}

#[tokio::test]
async fn watchers_may_run_commands_with_reference_terminal_frames() {
    let mut w = world(&[]).await;
    let mut watcher = w.watcher(&w.tech.clone()).await;
    watcher
        .send_text(r#"{"type":"tunnel_data","payload":{"channel_id":"terminal-1","data":{"type":"terminal","payload":{"command":"uptime"}}}}"#)
        .await
        .unwrap();
    let frame = w.agent.recv_json(WAIT).await.unwrap();
    assert_eq!(
        frame,
        json!({"type":"tunnel_data","payload":{"channel_id":"terminal-1","data":{"type":"terminal","payload":{"command":"uptime"}}}})
    );
    w.output("terminal-1", "up 1 day\n", "", Some(0)).await;
    assert_eq!(
        watcher.recv_json(WAIT).await.unwrap()["payload"]["data"]["payload"]["stdout"],
        "up 1 day\n"
    );
    // An empty command comes back as a tunnel_error on its channel.
    watcher
        .send_text(r#"{"type":"tunnel_data","payload":{"channel_id":"terminal-2","data":{"type":"terminal","payload":{"command":" "}}}}"#)
        .await
        .unwrap();
    let error = watcher.recv_json(WAIT).await.unwrap();
    assert_eq!(
        (
            error["type"].clone(),
            error["payload"]["channel_id"].clone()
        ),
        (json!("tunnel_error"), json!("terminal-2"))
    );
}

#[tokio::test]
async fn only_the_owner_runs_reads_streams_and_cancels() {
    let w = world(&[]).await;
    let otto = w.server.tech_token("otto").await.unwrap();
    let (_, started) = w.run("true").await;
    let id = started["command_id"].as_str().unwrap();
    let s = &w.session;
    for (method, path, body) in [
        (
            Method::POST,
            format!("/api/v1/tunnel/{s}/command"),
            Some(json!({"command": "id"})),
        ),
        (
            Method::GET,
            format!("/api/v1/tunnel/{s}/commands/{id}"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/tunnel/{s}/commands/{id}/stdout"),
            None,
        ),
        (
            Method::DELETE,
            format!("/api/v1/tunnel/{s}/commands/{id}"),
            None,
        ),
    ] {
        let (code, body) = w
            .server
            .call(method.clone(), &path, Some(&otto), body)
            .await
            .unwrap();
        assert_eq!(code, 403, "{method} {path}: {body}");
    }
    let url = format!("ws://{}/api/v1/tunnel/{s}/stream", w.server.addr);
    assert_eq!(
        ScriptedAgent::connect_status(&url, Some(&otto)).await,
        Some(403)
    );
    assert_eq!(ScriptedAgent::connect_status(&url, None).await, Some(401));
    // Browsers: the token as a query parameter.
    let with_query = format!("{url}?access_token={}", w.tech);
    assert!(ScriptedAgent::connect(&with_query, None).await.is_ok());
}

#[tokio::test]
async fn bad_commands_unknown_and_closed_sessions_get_clear_errors() {
    let w = world(&[]).await;
    let s = &w.session;
    let (code, body) = w.run("   ").await;
    assert_eq!(
        (code, body["error"].clone()),
        (400, json!("command is empty"))
    );
    let path = format!("/api/v1/tunnel/{}/command", uuid::Uuid::new_v4());
    assert_eq!(
        w.server
            .call(
                Method::POST,
                &path,
                Some(&w.tech),
                Some(json!({"command": "id"}))
            )
            .await
            .unwrap()
            .0,
        404
    );
    let path = format!("/api/v1/tunnel/{s}/command");
    let (code, _) = w
        .server
        .call(
            Method::POST,
            &path,
            Some(&w.tech),
            Some(json!({"command": "id", "timeout_secs": 0})),
        )
        .await
        .unwrap();
    assert_eq!(code, 400);
    let (code, _) = w
        .server
        .call(
            Method::GET,
            &format!("/api/v1/tunnel/{s}/commands/{}", uuid::Uuid::new_v4()),
            Some(&w.tech),
            None,
        )
        .await
        .unwrap();
    assert_eq!(code, 404);
    w.server
        .call(
            Method::POST,
            "/api/v1/tunnel/close",
            Some(&w.tech),
            Some(json!({"session_id": s})),
        )
        .await
        .unwrap();
    let (code, body) = w.run("id").await;
    assert_eq!(code, 409, "{body}");
}

#[tokio::test]
async fn output_from_another_agent_on_the_channel_is_ignored() {
    let mut w = world(&[]).await;
    let (_, intruder_key) = w.server.register_agent(&w.admin, "intruder").await.unwrap();
    let mut intruder = ScriptedAgent::connect(&w.server.ws_url(), Some(&intruder_key))
        .await
        .unwrap();
    let (_, started) = w.run("id").await;
    let command_id = started["command_id"].as_str().unwrap().to_owned();
    let channel = started["channel_id"].as_str().unwrap().to_owned();
    let _ = w.agent.recv_json(WAIT).await.unwrap();
    let forged = json!({"type":"tunnel_data","payload":{"channel_id":channel,"data":{"type":"terminal_output","payload":{"stdout":"forged","stderr":"","exit_code":0}}}});
    intruder.send_text(&forged.to_string()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let result = w.result(&command_id, 0).await;
    assert_eq!(
        (result["status"].clone(), result["stdout"].clone()),
        (json!("running"), json!(""))
    );
    w.output(&channel, "uid=0\n", "", Some(0)).await;
    assert_eq!(w.result(&command_id, 5).await["stdout"], "uid=0\n");
}

#[tokio::test]
async fn cancel_of_a_reference_agent_command_ends_it_as_cancelled() {
    let mut w = world(&[]).await;
    let (_, started) = w.run("sleep 1000").await;
    let command_id = started["command_id"].as_str().unwrap().to_owned();
    let _ = w.agent.recv_json(WAIT).await.unwrap();
    let (code, body) = w
        .server
        .call(
            Method::DELETE,
            &format!("/api/v1/tunnel/{}/commands/{command_id}", w.session),
            Some(&w.tech),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (code, body["status"].clone()),
        (200, json!("cancelled")),
        "{body}"
    );
    // No command_cancel frame for an agent that did not advertise it.
    assert!(w.agent.recv(Duration::from_millis(300)).await.is_err());
}

#[tokio::test]
async fn stored_output_is_capped_and_the_cut_is_reported() {
    let mut w = world(&[("RMM_MAX_COMMAND_OUTPUT", "10")]).await;
    let (_, started) = w.run("seq 100").await;
    let command_id = started["command_id"].as_str().unwrap().to_owned();
    let channel = started["channel_id"].as_str().unwrap().to_owned();
    let _ = w.agent.recv_json(WAIT).await.unwrap();
    w.output(&channel, "0123456789abcdefghij", "", None).await;
    w.output(&channel, "more", "", Some(0)).await;
    let result = w.result(&command_id, 5).await;
    assert_eq!(result["stdout_truncated"], true);
    assert_eq!(result["stdout_bytes"], 24);
    assert_eq!(w.raw(&command_id, "stdout").await, b"0123456789");
}

#[tokio::test]
async fn a_disconnect_fails_running_commands_and_closing_the_tunnel_cancels_them() {
    let mut w = world(&[]).await;
    let (_, started) = w.run("sleep 1000").await;
    let first = started["command_id"].as_str().unwrap().to_owned();
    let _ = w.agent.recv_json(WAIT).await.unwrap();
    w.server
        .call(
            Method::POST,
            "/api/v1/tunnel/close",
            Some(&w.tech),
            Some(json!({"session_id": w.session})),
        )
        .await
        .unwrap();
    assert_eq!(w.result(&first, 0).await["status"], "cancelled");
    match w.agent.recv(WAIT).await.unwrap() {
        Received::Json(frame) => assert_eq!(frame["type"], "tunnel_close"),
        Received::Closed(frame) => panic!("closed: {frame:?}"),
    }

    let db = w.server.database_url.clone();
    drop(db);
    let mut agent = ScriptedAgent::connect(&w.server.ws_url(), Some(&w.agent_key))
        .await
        .unwrap();
    let agents = w
        .server
        .call(Method::GET, "/api/v1/agents", Some(&w.admin), None)
        .await
        .unwrap()
        .1;
    let agent_id = agents[0]["agent_id"].as_str().unwrap().to_owned();
    // The first connection is replaced once the second is registered: its session closes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (open, session) = tokio::join!(
        w.server.call(
            Method::POST,
            "/api/v1/tunnel/open",
            Some(&w.tech),
            Some(json!({"agent_id": agent_id}))
        ),
        async {
            let session = agent.expect_open().await.unwrap();
            agent.ready(&session).await.unwrap();
            session
        }
    );
    assert_eq!(open.unwrap().0, 200);
    let (_, started) = w
        .server
        .call(
            Method::POST,
            &format!("/api/v1/tunnel/{session}/command"),
            Some(&w.tech),
            Some(json!({"command": "sleep 1000"})),
        )
        .await
        .unwrap();
    let second = started["command_id"].as_str().unwrap().to_owned();
    let _ = agent.recv_json(WAIT).await.unwrap();
    agent.drop_connection();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, result) = w
        .server
        .call(
            Method::GET,
            &format!("/api/v1/tunnel/{session}/commands/{second}"),
            Some(&w.tech),
            None,
        )
        .await
        .unwrap();
    assert_eq!(result["status"], "failed");
}

#[tokio::test]
async fn a_watcher_reusing_a_busy_channel_id_is_refused_and_the_first_command_keeps_its_output() {
    let mut w = world(&[]).await;
    let mut watcher = w.watcher(&w.tech.clone()).await;
    let frame = r#"{"type":"tunnel_data","payload":{"channel_id":"terminal-1","data":{"type":"terminal","payload":{"command":"sleep 5"}}}}"#;
    watcher.send_text(frame).await.unwrap();
    let _ = w.agent.recv_json(WAIT).await.unwrap();
    watcher.send_text(frame).await.unwrap();
    let refusal = watcher.recv_json(WAIT).await.unwrap();
    assert_eq!(refusal["type"], "tunnel_error");
    assert_eq!(refusal["payload"]["channel_id"], "terminal-1");
    w.output("terminal-1", "still mine\n", "", Some(0)).await;
    let seen = watcher.recv_json(WAIT).await.unwrap();
    assert_eq!(seen["payload"]["data"]["payload"]["stdout"], "still mine\n");
}
