//! Admission control of agent handshakes, end to end against the real `rmm-server` (SQLite)
//! and the real `rmm-agent`: beyond `RMM_AGENT_HANDSHAKES` running and
//! `RMM_AGENT_HANDSHAKE_QUEUE` waiting, an agent upgrade is answered `503 server_busy` with
//! `Retry-After`, and a real agent so answered waits for the hint (with jitter) and connects
//! once the server has room.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmm_e2e::pg::sqlite_url;
use rmm_e2e::real_agent::agent_command;
use rmm_e2e::server::TestServer;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// An upgrade request that announces a body and never sends it: the server answers it, but
/// the connection is not upgraded (so not registered) until the body has arrived, and its
/// handshake slot stays taken meanwhile.
async fn hold_a_slot(server: &TestServer, key: &str) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /api/v1/agent/ws HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 5\r\n\r\n",
        server.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// The status, `Retry-After` and body of a refused upgrade with `key`; `None` if upgraded.
async fn refusal(server: &TestServer, key: &str) -> Option<(u16, Option<String>, String)> {
    let mut request = server.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => None,
        Err(WsError::Http(response)) => Some((
            response.status().as_u16(),
            response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(e) => panic!("handshake failed without an HTTP answer: {e}"),
    }
}

#[tokio::test]
async fn handshakes_beyond_the_limit_are_shed_with_retry_after_and_a_real_agent_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RMM_AGENT_HANDSHAKES", "1"),
        ("RMM_AGENT_HANDSHAKE_QUEUE", "0"),
    ];
    let server = TestServer::start(&sqlite_url(dir.path()), &env)
        .await
        .unwrap();
    let token = server.admin_token().await.unwrap();
    let (_, holder_key) = server.register_agent(&token, "holder").await.unwrap();
    let (agent_id, agent_key) = server.register_agent(&token, "real").await.unwrap();

    // With the only slot taken, an upgrade (even with a good key) is shed at once.
    let mut held = hold_a_slot(&server, &holder_key).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, retry_after, body) = refusal(&server, &agent_key).await.expect("shed");
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(body.contains(r#""code":"server_busy""#), "{body}");

    // A real agent is shed too, and says it will come back after the server's hint.
    let mut agent = agent_command(&server, &agent_key, &[]).unwrap();
    agent.env("RUST_LOG", "warn").stderr(Stdio::piped());
    let mut agent = agent.spawn().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut stderr = BufReader::new(agent.stderr.take().unwrap()).lines();
    tokio::spawn({
        let lines = Arc::clone(&lines);
        async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                eprintln!("agent: {line}");
                lines.lock().unwrap().push(line);
            }
        }
    });
    let busy = |lines: &Mutex<Vec<String>>| {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("server busy (HTTP 503)") && l.contains("retry_after_secs=1"))
            .count()
    };
    let started = Instant::now();
    while busy(&lines) < 2 && started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Two 503s at least a hint apart: the agent waited for it, not its 1 s backoff's zero.
    assert!(busy(&lines) >= 2, "the agent did not retry after the hint");
    assert!(started.elapsed() >= Duration::from_secs(1));
    let (_, agents) = server
        .call(reqwest::Method::GET, "/api/v1/agents", Some(&token), None)
        .await
        .unwrap();
    let listed = agents.as_array().unwrap().iter().find(|a| a["agent_id"] == agent_id.as_str());
    assert_eq!(listed.unwrap()["connected"], false);

    // The slot frees up: the agent connects within twice the hint (plus slack).
    held.write_all(b"xxxxx").await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(200), held.read_to_end(&mut rest)).await;
    drop(held);
    let freed = Instant::now();
    server.wait_connected(&token, &agent_id).await.unwrap();
    assert!(freed.elapsed() < Duration::from_secs(5), "{:?}", freed.elapsed());
    agent.kill().await.unwrap();
}
