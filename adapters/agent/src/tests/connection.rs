use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::*;
use crate::connection::CAPABILITIES;

#[tokio::test]
async fn the_agent_heartbeats_at_once_serves_a_tunnel_and_closes_cleanly_on_shutdown() {
    let (listener, url) = listener().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(run(config(url, fast(), false), async {
        let _ = stopped.await;
    }));
    let mut ws = accept(&listener).await;
    let hb = next_json(&mut ws).await;
    assert_eq!(hb["type"], "heartbeat");
    assert_eq!(hb["payload"]["agent_version"], env!("CARGO_PKG_VERSION"));
    let s1 = "550e8400-e29b-41d4-a716-446655440000";
    ws.send(Message::text(format!(
        r#"{{"type":"tunnel_open","payload":{{"session_id":"{s1}","tech_id":"7c9e6679-7425-40de-944b-e07fc1f90ae7"}}}}"#
    )))
    .await
    .unwrap();
    assert_eq!(
        next_json(&mut ws).await,
        serde_json::json!({"type":"tunnel_ready","payload":{"session_id": s1}})
    );
    // Garbage and unknown types are ignored; the connection stays.
    ws.send(Message::text("{nope")).await.unwrap();
    ws.send(Message::text(r#"{"type":"file_chunk","payload":{}}"#))
        .await
        .unwrap();
    // The reference's own command frame runs, and its output comes back in its format.
    ws.send(Message::text(
        r#"{"type":"tunnel_data","payload":{"channel_id":"terminal-1","data":{"type":"terminal","payload":{"command":"echo hi"}}}}"#,
    ))
    .await
    .unwrap();
    assert_eq!(
        next_json(&mut ws).await,
        serde_json::json!({"type":"tunnel_data","payload":{"channel_id":"terminal-1","data":{"type":"terminal_output","payload":{"stdout":"hi\n","stderr":"","exit_code":null}}}})
    );
    assert_eq!(
        next_json(&mut ws).await,
        serde_json::json!({"type":"tunnel_data","payload":{"channel_id":"terminal-1","data":{"type":"terminal_output","payload":{"stdout":"","stderr":"","exit_code":0}}}})
    );
    stop.send(()).unwrap();
    match tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
    {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(agent.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_silent_server_is_detected_as_a_dead_peer() {
    let (listener, url) = listener().await;
    let timings = AgentTimings {
        read_idle: Duration::from_millis(300),
        ..fast()
    };
    let agent = tokio::spawn(run(config(url, timings, true), std::future::pending()));
    // Accept and then never send anything (a half-open connection).
    let _ws = accept(&listener).await;
    let result = tokio::time::timeout(Duration::from_secs(5), agent)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&result, Err(AgentError::Disconnected { reason, .. }) if reason.contains("dead peer")),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_dropped_connection_is_redialled_with_a_fresh_tunnel_state() {
    let (listener, url) = listener().await;
    let agent = tokio::spawn(run(config(url, fast(), false), std::future::pending()));
    let mut first = accept(&listener).await;
    assert_eq!(next_json(&mut first).await["type"], "heartbeat");
    let s1 = "550e8400-e29b-41d4-a716-446655440000";
    first
        .send(Message::text(format!(
            r#"{{"type":"tunnel_open","payload":{{"session_id":"{s1}","tech_id":"7c9e6679-7425-40de-944b-e07fc1f90ae7"}}}}"#
        )))
        .await
        .unwrap();
    assert_eq!(next_json(&mut first).await["type"], "tunnel_ready");
    drop(first);
    let mut second = accept(&listener).await;
    assert_eq!(next_json(&mut second).await["type"], "heartbeat");
    // The old tunnel did not survive the disconnect: the same session opens again.
    second
        .send(Message::text(format!(
            r#"{{"type":"tunnel_open","payload":{{"session_id":"{s1}","tech_id":"7c9e6679-7425-40de-944b-e07fc1f90ae7"}}}}"#
        )))
        .await
        .unwrap();
    assert_eq!(next_json(&mut second).await["type"], "tunnel_ready");
    agent.abort();
}

#[tokio::test]
async fn a_401_on_the_upgrade_is_a_rejected_key() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (listener, url) = listener().await;
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = tcp.read(&mut buf).await.unwrap();
        tcp.write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
    });
    let result = run(config(url, fast(), true), std::future::pending()).await;
    assert!(matches!(result, Err(AgentError::KeyRejected)), "{result:?}");
    assert_eq!(
        AgentError::KeyRejected.to_string(),
        "server rejected the agent key"
    );
    server.await.unwrap();
}

#[cfg(unix)]
#[test]
fn the_advertised_capabilities_are_the_protocols_names() {
    assert_eq!(
        CAPABILITIES.join(", "),
        "command-timeout, command-cancel, file-transfer, pty, command-stdin, command-binary-output"
    );
}

/// Terminals and stdin need a PTY and pipes built for Unix; elsewhere they are not announced.
#[cfg(not(unix))]
#[test]
fn the_advertised_capabilities_are_the_protocols_names() {
    assert_eq!(
        CAPABILITIES.join(", "),
        "command-timeout, command-cancel, file-transfer, command-binary-output"
    );
}
