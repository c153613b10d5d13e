//! Logs for the people who run it, end to end on the real binaries (SQLite): with
//! `RMM_LOG_FORMAT=json` every line the server and the agent write is one JSON object; each
//! request gets one access-log line with its request id (the client's, echoed, or a new one),
//! method, route template, status, duration and user id, and never a raw path, query or
//! token.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::process::Stdio;
use std::time::Duration;

use rmm_e2e::pg::sqlite_url;
use rmm_e2e::real_agent::agent_command;
use rmm_e2e::server::{StartOptions, TestServer, binary};
use serde_json::Value;
use tokio::io::AsyncBufReadExt as _;

async fn json_server(dir: &tempfile::TempDir) -> TestServer {
    let options = StartOptions {
        capture_log: true,
        ..StartOptions::default()
    };
    TestServer::start_with(
        &sqlite_url(dir.path()),
        &[("RMM_LOG_FORMAT", "json")],
        options,
    )
    .await
    .unwrap()
}

/// The access-log line of the request with `request_id`, parsed.
async fn access_line(server: &TestServer, request_id: &str) -> Value {
    let line = server
        .wait_for_log(
            &["rmm_server::access", &format!("\"{request_id}\"")],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[tokio::test]
async fn every_request_has_one_json_access_line_with_its_id_route_status_and_user() {
    let dir = tempfile::tempdir().unwrap();
    let server = json_server(&dir).await;
    let admin = server.admin_token().await.unwrap();
    let (_, me) = server
        .call(reqwest::Method::GET, "/api/v1/users", Some(&admin), None)
        .await
        .unwrap();
    let admin_id = me[0]["user_id"].as_str().unwrap().to_owned();

    // The client's id is kept and echoed; the route is the template, not the path.
    let session = uuid::Uuid::new_v4();
    let r = server
        .http()
        .get(server.url(&format!("/api/v1/tunnel/status/{session}?secret=hunter2")))
        .bearer_auth(&admin)
        .header("x-request-id", "req-7.e2e_A")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-request-id"], "req-7.e2e_A");
    let line = access_line(&server, "req-7.e2e_A").await;
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(
        line["route"], "/api/v1/tunnel/status/{session_id}",
        "{line}"
    );
    assert_eq!(line["status"], 404, "{line}");
    assert_eq!(line["user_id"], admin_id.as_str(), "{line}");
    assert!(line["duration_ms"].as_f64().unwrap() >= 0.0, "{line}");

    // Without an id (or with one that is not a sane token) the server makes one.
    for sent in [None, Some("has spaces and {braces}")] {
        let mut request = server.http().get(server.url("/healthz"));
        if let Some(id) = sent {
            request = request.header("x-request-id", id);
        }
        let r = request.send().await.unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        let line = access_line(&server, &id).await;
        assert_eq!(line["route"], "/healthz", "{line}");
        assert_eq!(line["user_id"], "-", "{line}");
    }

    // A WebSocket's token travels in the query: it names the user but is never written.
    let r = server
        .http()
        .get(server.url(&format!(
            "/api/v1/tunnel/{session}/stream?access_token={admin}"
        )))
        .header("x-request-id", "ws-1")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let line = access_line(&server, "ws-1").await;
    assert_eq!(
        line["route"], "/api/v1/tunnel/{session_id}/stream",
        "{line}"
    );
    assert_eq!(line["user_id"], admin_id.as_str(), "{line}");

    // Every line of the log is a JSON object, and no token or query value is in it.
    let log = server
        .wait_for_log(&["\"ws-1\""], Duration::from_secs(1))
        .await
        .unwrap();
    assert!(!log.is_empty());
    let all = server.log_text().unwrap();
    for line in all.lines().filter(|l| !l.trim().is_empty()) {
        let parsed: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(parsed.is_object(), "{line}");
    }
    assert!(!all.contains(&admin), "a token was logged");
    assert!(!all.contains("hunter2"), "a query value was logged");
}

#[tokio::test]
async fn the_agent_writes_json_lines_and_a_bad_format_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = json_server(&dir).await;
    let admin = server.admin_token().await.unwrap();
    let (_, key) = server.register_agent(&admin, "json-agent").await.unwrap();
    let mut agent = agent_command(&server, &key, &[])
        .unwrap()
        .env("RMM_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(agent.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let connected = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let parsed: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            seen.push(parsed);
            if seen.iter().any(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("connected"))
            }) {
                return;
            }
        }
    })
    .await;
    assert!(connected.is_ok(), "no 'connected' line in {seen:?}");
    assert!(
        seen.iter()
            .all(|l| l["level"].is_string() && l["target"].is_string())
    );

    for program in ["rmm-server", "rmm-agent"] {
        let out = tokio::process::Command::new(binary(program).unwrap())
            .arg("--help")
            .env("RMM_LOG_FORMAT", "xml")
            .output()
            .await
            .unwrap();
        // --help is answered before logging starts; a real start is refused.
        assert!(out.status.success(), "{program} --help");
        let out = tokio::process::Command::new(binary(program).unwrap())
            .env_clear()
            .env("RMM_LOG_FORMAT", "xml")
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{program}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("{program}: error: RMM_LOG_FORMAT must be `text` or `json`, not `xml`\n"),
        );
    }
}
