//! The runtime end to end over a real WebSocket: a test server on a free port, the agent's
//! connection loop ([`run`]) against it, real commands and real files.

mod commands;
mod connection;
/// File transfer over the real connection loop, against real files in temporary directories.
/// Linux only: modes, symlinks, FIFOs and `/sys` are Unix matters.
#[cfg(target_os = "linux")]
mod file_transfer;
/// Terminals and command stdin: real PTYs and process groups, read through `/proc`.
#[cfg(target_os = "linux")]
mod terminals;

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::header;

use rmm_protocol::CAPABILITIES_HEADER;
use rmm_protocol::limits::AGENT_WS_PATH;

use crate::{AgentConfig, AgentError, AgentKey, AgentTimings, ServerUrl, exec, run};

/// Timings short enough for tests; the read deadline is generous unless a test shortens it.
fn fast() -> AgentTimings {
    AgentTimings {
        heartbeat_interval: Duration::from_secs(30),
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(50),
        stable_after: Duration::from_secs(60),
        read_idle: Duration::from_secs(30),
        rejected_retry: Duration::from_millis(50),
        connect_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        kill_grace: Duration::from_millis(500),
    }
}

async fn listener() -> (tokio::net::TcpListener, ServerUrl) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = ServerUrl::parse(&format!("ws://{}", listener.local_addr().unwrap())).unwrap();
    (listener, url)
}

/// Accepts one WebSocket, checking the agent's path and bearer key.
// The callback's error type is tungstenite's (an HTTP response); its size is not ours.
#[allow(clippy::result_large_err)]
async fn accept(listener: &tokio::net::TcpListener) -> WebSocketStream<TcpStream> {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let (tcp, _) = listener.accept().await.unwrap();
    tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, res: Response| {
        assert_eq!(req.uri().path(), AGENT_WS_PATH);
        assert_eq!(req.headers()[header::AUTHORIZATION], "Bearer k");
        assert_eq!(
            req.headers()[CAPABILITIES_HEADER],
            crate::connection::CAPABILITIES.join(", ")
        );
        Ok(res)
    })
    .await
    .unwrap()
}

async fn next_json(ws: &mut WebSocketStream<TcpStream>) -> serde_json::Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a JSON frame, got {other:?}"),
        }
    }
}

fn config(server: ServerUrl, timings: AgentTimings, once: bool) -> AgentConfig {
    let mut config = AgentConfig::new(server, AgentKey::parse("k").unwrap());
    config.timings = timings;
    config.once = once;
    config
}

const SESSION: &str = "550e8400-e29b-41d4-a716-446655440000";

/// An agent connected to a test server, in tunnel mode, past its first heartbeat.
async fn tunnel_agent(
    timings: AgentTimings,
) -> (
    WebSocketStream<TcpStream>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), AgentError>>,
) {
    let (listener, url) = listener().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(run(config(url, timings, false), async {
        let _ = stopped.await;
    }));
    let mut ws = accept(&listener).await;
    assert_eq!(next_json(&mut ws).await["type"], "heartbeat");
    ws.send(Message::text(format!(
        r#"{{"type":"tunnel_open","payload":{{"session_id":"{SESSION}","tech_id":"7c9e6679-7425-40de-944b-e07fc1f90ae7"}}}}"#
    )))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "tunnel_ready");
    (ws, stop, agent)
}

async fn send_json(ws: &mut WebSocketStream<TcpStream>, value: serde_json::Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
}

fn terminal(channel: &str, command: &str) -> serde_json::Value {
    serde_json::json!({"type":"tunnel_data","payload":{"channel_id":channel,"data":{"type":"terminal","payload":{"command":command}}}})
}

/// The next `terminal_output` payload and its channel (heartbeats skipped).
async fn next_output(ws: &mut WebSocketStream<TcpStream>) -> (String, serde_json::Value) {
    loop {
        let frame = next_json(ws).await;
        if frame["type"] == "heartbeat" {
            continue;
        }
        assert_eq!(frame["type"], "tunnel_data", "{frame}");
        assert_eq!(
            frame["payload"]["data"]["type"], "terminal_output",
            "{frame}"
        );
        let channel = frame["payload"]["channel_id"].as_str().unwrap().to_owned();
        return (channel, frame["payload"]["data"]["payload"].clone());
    }
}

/// Starts `echo $$; sleep 1000` on `channel` and returns its process group.
#[cfg(target_os = "linux")]
async fn start_sleeper(ws: &mut WebSocketStream<TcpStream>, channel: &str) -> i32 {
    send_json(ws, terminal(channel, "echo $$; sleep 1000 & sleep 1000")).await;
    let (on, output) = next_output(ws).await;
    assert_eq!(on, channel);
    let pgid: i32 = output["stdout"].as_str().unwrap().trim().parse().unwrap();
    assert!(!exec::tests::live_members(pgid).is_empty());
    pgid
}
