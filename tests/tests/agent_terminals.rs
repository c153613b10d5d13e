//! The real `rmm-agent` binary's interactive terminals and command stdin, driven by a scripted
//! server in this test (the wire protocol of docs/protocol.md, "Interactive terminals" and
//! "Command stdin"): a real PTY on the agent's machine, real processes. No database needed.

use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use rmm_e2e::server::binary;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

type Ws = WebSocketStream<TcpStream>;

const SESSION: &str = "550e8400-e29b-41d4-a716-446655440000";
const WAIT: Duration = Duration::from_secs(10);

/// The agent binary connected to a scripted server with a tunnel open; its capabilities.
async fn agent_in_tunnel() -> (Ws, String, tokio::process::Child) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let addr = listener.local_addr().expect("its address");
    let agent = tokio::process::Command::new(
        binary("rmm-agent").expect("rmm-agent built (cargo build --bins)"),
    )
    .env_clear()
    .env("PATH", std::env::var("PATH").unwrap_or_default())
    .env("RMM_SERVER", format!("ws://{addr}"))
    .env("RMM_AGENT_KEY", "rmmk_test")
    .env("RUST_LOG", "warn")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .kill_on_drop(true)
    .spawn()
    .expect("rmm-agent starts");
    let (tcp, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("the agent dials in time")
        .expect("accepted");
    let mut capabilities = String::new();
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, res: Response| {
        capabilities = req
            .headers()
            .get("x-rmm-capabilities")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(res)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async(tcp, callback)
        .await
        .expect("the agent's upgrade");
    send(&mut ws, json!({"type":"tunnel_open","payload":{"session_id":SESSION,"tech_id":"7c9e6679-7425-40de-944b-e07fc1f90ae7"}})).await;
    loop {
        if let Frame::Json(v) = next(&mut ws).await
            && v["type"] == "tunnel_ready"
        {
            break;
        }
    }
    (ws, capabilities, agent)
}

enum Frame {
    Json(Value),
    /// Channel id, offset, bytes.
    Data(String, u64, Vec<u8>),
}

async fn next(ws: &mut Ws) -> Frame {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame from the agent in time")
        {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("JSON from the agent");
                if v["type"] != "heartbeat" {
                    return Frame::Json(v);
                }
            }
            Some(Ok(Message::Binary(b))) => {
                // One byte of id length, the id, the offset (u64 big-endian), the data.
                let len = usize::from(b[0]);
                let id = String::from_utf8(b[1..=len].to_vec()).expect("a UTF-8 channel id");
                let offset =
                    u64::from_be_bytes(b[1 + len..9 + len].try_into().expect("an 8-byte offset"));
                return Frame::Data(id, offset, b[9 + len..].to_vec());
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string()))
        .await
        .expect("sent");
}

async fn send_data(ws: &mut Ws, channel: &str, offset: u64, data: &[u8]) {
    let mut frame = vec![u8::try_from(channel.len()).expect("a short channel id")];
    frame.extend_from_slice(channel.as_bytes());
    frame.extend_from_slice(&offset.to_be_bytes());
    frame.extend_from_slice(data);
    ws.send(Message::binary(frame)).await.expect("sent");
}

#[tokio::test]
async fn the_agent_runs_a_terminal_on_a_real_pty_and_feeds_a_commands_stdin() {
    let (mut ws, capabilities, _agent) = agent_in_tunnel().await;
    assert_eq!(
        capabilities,
        "command-timeout, command-cancel, file-transfer, pty, command-stdin, command-binary-output"
    );

    let pty = "pty-7d0c1a52-0a9e-4c0e-9b7e-3d1f6c1e2a40";
    send(&mut ws, json!({"type":"pty_open","payload":{"channel_id":pty,"cols":91,"rows":27,"term":"xterm-256color","command":"tty; stty size; read line; echo \"got $line\"; exit 5"}})).await;
    let Frame::Json(ready) = next(&mut ws).await else {
        panic!("expected pty_ready");
    };
    assert_eq!(
        ready,
        json!({"type":"pty_ready","payload":{"channel_id":pty}})
    );
    let mut output = Vec::new();
    let mut typed = false;
    let exit = loop {
        // Typed once the prompt-less `read` waits (typed earlier, the tty would echo it first).
        if !typed && String::from_utf8_lossy(&output).contains("27 91\r\n") {
            send_data(&mut ws, pty, 0, b"hi\r").await;
            typed = true;
        }
        match next(&mut ws).await {
            Frame::Data(id, offset, data) => {
                assert_eq!((id.as_str(), offset), (pty, output.len() as u64));
                output.extend_from_slice(&data);
            }
            Frame::Json(v) if v["type"] == "channel_ack" => {
                assert_eq!(v["payload"], json!({"channel_id":pty,"offset":3}));
            }
            Frame::Json(v) => break v,
        }
    };
    let text = String::from_utf8_lossy(&output);
    assert_eq!(
        exit,
        json!({"type":"pty_exit","payload":{"channel_id":pty,"exit_code":5}}),
        "{text}"
    );
    assert!(text.starts_with("/dev/pts/"), "{text}");
    assert!(text.contains("27 91\r\n"), "{text}");
    assert!(text.contains("got hi\r\n"), "{text}");

    let cmd = "cmd-1b9f7e0a-3c55-4f0f-8a0b-6c2f0e4d9b11";
    send(&mut ws, json!({"type":"tunnel_data","payload":{"channel_id":cmd,"data":{"type":"terminal","payload":{"command":"cat","stdin":true}}}})).await;
    send_data(&mut ws, cmd, 0, b"hello\n").await;
    send(
        &mut ws,
        json!({"type":"stdin_end","payload":{"channel_id":cmd}}),
    )
    .await;
    let mut stdout = String::new();
    let mut acked = None;
    loop {
        let Frame::Json(v) = next(&mut ws).await else {
            panic!("a command's output is JSON");
        };
        if v["type"] == "channel_ack" {
            acked = v["payload"]["offset"].as_u64();
            continue;
        }
        let out = &v["payload"]["data"]["payload"];
        stdout.push_str(out["stdout"].as_str().unwrap_or_default());
        if !out["exit_code"].is_null() {
            assert_eq!(out["exit_code"], 0);
            break;
        }
    }
    assert_eq!(stdout, "hello\n");
    assert_eq!(acked, Some(6));
}
