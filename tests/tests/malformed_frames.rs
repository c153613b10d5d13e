//! Frame fuzzing's finding (issue 17, point 2), against the real server on SQLite: a
//! malformed frame of a type the server knows (`channel_ack`, `pty_ready`, `pty_exit`) is
//! reported as malformed — a warning, as for any broken frame — not taken for a newer agent's
//! unknown extension (logged at info and otherwise ignored), and the connection keeps working.
//! Before the fix these three types were missing from the decoder's list of known types.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::time::Duration;

use rmm_e2e::agent::ScriptedAgent;
use rmm_e2e::pg::sqlite_url;
use rmm_e2e::server::{StartOptions, TestServer};

#[tokio::test]
async fn a_malformed_frame_of_a_known_type_is_logged_as_malformed_not_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let options = StartOptions {
        capture_log: true,
        ..StartOptions::default()
    };
    let server = TestServer::start_with(&sqlite_url(dir.path()), &[], options)
        .await
        .unwrap();
    let admin = server.admin_token().await.unwrap();
    let (agent_id, key) = server.register_agent(&admin, "raw-01").await.unwrap();
    let mut agent = ScriptedAgent::connect(&server.ws_url(), Some(&key))
        .await
        .unwrap();
    server.wait_connected(&admin, &agent_id).await.unwrap();

    let frames = [
        (
            "channel_ack",
            r#"{"type":"channel_ack","payload":{"channel_id":"pty-1"}}"#,
        ),
        ("pty_ready", r#"{"type":"pty_ready","payload":7}"#),
        (
            "pty_exit",
            r#"{"type":"pty_exit","payload":{"exit_code":"x"}}"#,
        ),
    ];
    for (kind, frame) in frames {
        agent.send_text(frame).await.unwrap();
        let line = server
            .wait_for_log(
                &[
                    "unusable frame from agent ignored",
                    &format!("malformed {kind} message"),
                ],
                Duration::from_secs(5),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}; log:\n{}", server.log_text().unwrap()));
        assert!(line.contains("WARN"), "{line}");
    }
    // A type the server does not know is still tolerated quietly, as before.
    agent
        .send_text(r#"{"type":"file_chunk","payload":{}}"#)
        .await
        .unwrap();
    server
        .wait_for_log(
            &["unknown message type from agent ignored", "file_chunk"],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let log = server.log_text().unwrap();
    for kind in ["channel_ack", "pty_ready", "pty_exit"] {
        assert!(
            !log.lines()
                .any(|l| l.contains("unknown message type") && l.contains(kind)),
            "{kind} was logged as unknown:\n{log}"
        );
    }
    // The connection still works: a heartbeat after them updates the agent's facts.
    agent
        .send_text(r#"{"type":"heartbeat","payload":{"hostname":"still-here"}}"#)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let (_, agents) = server
            .call(reqwest::Method::GET, "/api/v1/agents", Some(&admin), None)
            .await
            .unwrap();
        if agents[0]["hostname"] == "still-here" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{agents}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.close().await.unwrap();
}
