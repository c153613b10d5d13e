//! Command output in binary frames (extension `command-binary-output`, issue 15), against the
//! real server on SQLite: the real agent sends stdout and stderr as binary data frames; the
//! server stores them as before and forwards them unchanged to watchers that ask
//! (`?output=binary`), translating to the reference JSON only for watchers that do not; an
//! agent without the capability keeps the reference frames; `rmm exec` writes the bytes out
//! exactly; a binary watcher that stops reading costs bounded memory.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::StreamExt as _;
use reqwest::Method;
use rmm_e2e::agent::ScriptedAgent;
use rmm_e2e::pg::sqlite_url;
use rmm_e2e::procfs::proc_bytes;
use rmm_e2e::real_agent::spawn_agent;
use rmm_e2e::server::{StartOptions, TestServer, rmm_command};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt as _;
use tokio::process::Child;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const WAIT: Duration = Duration::from_secs(60);
const MIB: u64 = 1024 * 1024;

/// The memory test measures RSS on a 2-core machine: the tests of this file run one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct World {
    dir: TempDir,
    server: TestServer,
    admin: String,
    tech: String,
    agent_id: String,
    key: String,
    _agent: Option<Child>,
}

/// A server on SQLite, an agent `web-01` (the real one when `real_agent`) and `tina`.
async fn world(real_agent: bool) -> World {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&sqlite_url(dir.path()), &[], StartOptions::default())
        .await
        .unwrap();
    let admin = server.admin_token().await.unwrap();
    let (agent_id, key) = server.register_agent(&admin, "web-01").await.unwrap();
    let agent = if real_agent {
        let child = spawn_agent(&server, &key).unwrap();
        server.wait_connected(&admin, &agent_id).await.unwrap();
        Some(child)
    } else {
        None
    };
    let tech = server.tech_token("tina").await.unwrap();
    World {
        dir,
        server,
        admin,
        tech,
        agent_id,
        key,
        _agent: agent,
    }
}

impl World {
    async fn open(&self) -> String {
        let body = json!({ "agent_id": self.agent_id });
        let (code, opened) = self
            .server
            .call(
                Method::POST,
                "/api/v1/tunnel/open",
                Some(&self.tech),
                Some(body),
            )
            .await
            .unwrap();
        assert_eq!(code, 200, "{opened}");
        opened["session_id"].as_str().unwrap().to_owned()
    }

    /// Starts `command`: its id and channel.
    async fn start(&self, session: &str, command: &str) -> (String, String) {
        let (code, started) = self
            .server
            .call(
                Method::POST,
                &format!("/api/v1/tunnel/{session}/command"),
                Some(&self.tech),
                Some(json!({ "command": command })),
            )
            .await
            .unwrap();
        assert_eq!(code, 202, "{started}");
        (
            started["command_id"].as_str().unwrap().to_owned(),
            started["channel_id"].as_str().unwrap().to_owned(),
        )
    }

    async fn stored(&self, session: &str, id: &str, stream: &str) -> Vec<u8> {
        let (status, _, bytes) = self
            .server
            .raw_output(&self.tech, session, id, stream)
            .await
            .unwrap();
        assert_eq!(status, 200);
        bytes
    }

    /// A watcher of the session's stream, `query` appended to its URL.
    async fn watcher(&self, session: &str, query: &str) -> Socket {
        let url = format!(
            "ws://{}/api/v1/tunnel/{session}/stream{query}",
            self.server.addr
        );
        let mut request = url.into_client_request().unwrap();
        let bearer = format!("Bearer {}", self.tech).parse().unwrap();
        request.headers_mut().insert("authorization", bearer);
        tokio_tungstenite::connect_async(request).await.unwrap().0
    }

    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What a watcher received for one command: its JSON frames and its binary output frames
/// (stream, offset, bytes), up to and including the final frame.
#[derive(Debug, Default)]
struct Seen {
    json: Vec<Value>,
    binary: Vec<(String, u64, Vec<u8>)>,
}

impl Seen {
    /// The bytes of `stream` from the binary frames, checking their offsets follow on.
    fn binary_bytes(&self, stream: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, offset, data) in &self.binary {
            if name == stream {
                assert_eq!(*offset, out.len() as u64, "{stream}: a gap or an overlap");
                out.extend_from_slice(data);
            }
        }
        out
    }

    /// The bytes of `stream` (`stdout`, `stderr`) from the JSON frames, lossless extension
    /// included.
    fn json_bytes(&self, stream: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for frame in &self.json {
            let payload = &frame["payload"]["data"]["payload"];
            match payload[format!("{stream}_b64")].as_str() {
                Some(b64) => out.extend(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap(),
                ),
                None => out.extend_from_slice(payload[stream].as_str().unwrap().as_bytes()),
            }
        }
        out
    }

    fn last(&self) -> &Value {
        &self.json.last().unwrap()["payload"]["data"]["payload"]
    }
}

/// Reads a watcher until the final frame on `channel`.
async fn collect(socket: &mut Socket, channel: &str) -> Seen {
    let mut seen = Seen::default();
    loop {
        let next = tokio::time::timeout(WAIT, socket.next()).await.unwrap();
        match next.unwrap().unwrap() {
            Message::Text(text) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame["payload"]["channel_id"] != channel {
                    continue;
                }
                let last = !frame["payload"]["data"]["payload"]["exit_code"].is_null();
                assert_eq!(frame["type"], "tunnel_data", "{frame}");
                seen.json.push(frame);
                if last {
                    return seen;
                }
            }
            Message::Binary(bytes) => {
                let (id, offset, data) = data_frame(&bytes);
                let (frame_channel, stream) = id.rsplit_once('/').unwrap();
                if frame_channel == channel {
                    seen.binary.push((stream.to_owned(), offset, data));
                }
            }
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// A binary data frame: channel id, offset, data.
fn data_frame(bytes: &[u8]) -> (String, u64, Vec<u8>) {
    let len = usize::from(bytes[0]);
    let id = String::from_utf8(bytes[1..=len].to_vec()).unwrap();
    let offset = u64::from_be_bytes(bytes[1 + len..9 + len].try_into().unwrap());
    (id, offset, bytes[9 + len..].to_vec())
}

/// Every byte value many times over, then bytes that are not UTF-8 at all.
fn binary_bytes() -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..1024).flat_map(|_| 0..=255u8).collect();
    bytes.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28, 0xe2, 0x82]);
    bytes
}

/// Valid UTF-8 with a three-byte character across the 64 KiB read boundary.
fn split_text() -> Vec<u8> {
    let mut text = "a".repeat(64 * 1024 - 1);
    text.push_str("€ and more text\n");
    text.repeat(3).into_bytes()
}

#[tokio::test]
async fn the_agents_binary_frames_reach_an_opted_in_watcher_unchanged_and_a_json_watcher_as_today()
{
    let _alone = ONE_AT_A_TIME.lock().await;
    let w = world(true).await;
    let session = w.open().await;
    let stdout = binary_bytes();
    let stderr: Vec<u8> = (0x80..=0xffu8).rev().collect();
    let text = split_text();
    let out_file = w.file("out.bin", &stdout);
    let err_file = w.file("err.bin", &stderr);
    let text_file = w.file("text.txt", &text);
    let mut binary = w.watcher(&session, "?output=binary").await;
    let mut reference = w.watcher(&session, "").await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (id, channel) = w
        .start(
            &session,
            &format!("cat {out_file}; cat {err_file} >&2; exit 3"),
        )
        .await;
    let seen = collect(&mut binary, &channel).await;
    assert!(
        !seen.binary.is_empty(),
        "no binary frame reached the watcher"
    );
    assert!(seen.binary_bytes("stdout") == stdout, "stdout differs");
    assert_eq!(seen.binary_bytes("stderr"), stderr);
    // The JSON frames carry only the end.
    assert_eq!(seen.json.len(), 1, "{:?}", seen.json);
    assert_eq!(seen.last()["exit_code"], 3);
    assert_eq!(
        (
            seen.last()["stdout"].as_str(),
            seen.last()["stderr"].as_str()
        ),
        (Some(""), Some(""))
    );

    let seen = collect(&mut reference, &channel).await;
    assert!(
        seen.binary.is_empty(),
        "a watcher without the opt-in got binary frames"
    );
    assert!(seen.json_bytes("stdout") == stdout, "stdout differs");
    assert_eq!(seen.json_bytes("stderr"), stderr);
    assert_eq!(seen.last()["exit_code"], 3);
    for frame in &seen.json {
        let payload = &frame["payload"]["data"]["payload"];
        // One stream per chunk, as the reference agent sends them.
        assert!(
            payload["stdout"] == "" || payload["stderr"] == "",
            "{payload}"
        );
    }
    // Stored as before, every byte.
    assert!(w.stored(&session, &id, "stdout").await == stdout);
    assert_eq!(w.stored(&session, &id, "stderr").await, stderr);

    // Text split across reads: a JSON watcher still gets whole characters in plain strings.
    let (id, channel) = w.start(&session, &format!("cat {text_file}")).await;
    let seen = collect(&mut binary, &channel).await;
    assert!(seen.binary_bytes("stdout") == text);
    let seen = collect(&mut reference, &channel).await;
    assert!(seen.json_bytes("stdout") == text);
    for frame in &seen.json {
        let payload = &frame["payload"]["data"]["payload"];
        assert!(payload.get("stdout_b64").is_none(), "a character was split");
    }
    assert!(w.stored(&session, &id, "stdout").await == text);
}

#[tokio::test]
async fn rmm_exec_writes_every_byte_of_stdout_and_stderr_exactly() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let w = world(true).await;
    let stdout: Vec<u8> = [binary_bytes(), split_text()].concat();
    let stderr: Vec<u8> = (0..=255u8).rev().collect();
    let out_file = w.file("out.bin", &stdout);
    let err_file = w.file("err.bin", &stderr);
    let home = tempfile::tempdir().unwrap();
    let rmm = |args: &[&str]| rmm_command(&w.server.url(""), home.path(), args).unwrap();
    let mut login = rmm(&["login", "--username", "tina", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = login.stdin.take().unwrap();
    pipe.write_all(b"tina-password\n").await.unwrap();
    drop(pipe);
    assert!(login.wait().await.unwrap().success());
    let command = format!("cat {out_file}; cat {err_file} >&2; cat {out_file}");
    let out = tokio::time::timeout(WAIT, rmm(&["exec", "web-01", "--", &command]).output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == [&stdout[..], &stdout[..]].concat(),
        "stdout differs"
    );
    assert_eq!(out.stderr, stderr);
}

fn chunk(channel: &str, payload: &Value) -> String {
    json!({"type":"tunnel_data","payload":{"channel_id":channel,"data":{"type":"terminal_output","payload":payload}}}).to_string()
}

/// A scripted agent connected with `capabilities` (none: the reference protocol), and its
/// tunnel opened by `tina`.
async fn scripted(w: &World, capabilities: Option<&str>) -> (ScriptedAgent, String) {
    let url = w.server.ws_url();
    let mut agent = match capabilities {
        Some(caps) => ScriptedAgent::connect_with_capabilities(&url, &w.key, caps)
            .await
            .unwrap(),
        None => ScriptedAgent::connect(&url, Some(&w.key)).await.unwrap(),
    };
    w.server
        .wait_connected(&w.admin, &w.agent_id)
        .await
        .unwrap();
    let (session, opened) = tokio::join!(w.open(), async {
        let session = agent.expect_open().await.unwrap();
        agent.ready(&session).await.unwrap();
    });
    let () = opened;
    (agent, session)
}

#[tokio::test]
async fn an_agent_without_the_capability_keeps_the_reference_frames_and_both_watchers_get_them() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let w = world(false).await;
    let (mut agent, session) = scripted(&w, None).await;
    let mut binary = w.watcher(&session, "?output=binary").await;
    let mut reference = w.watcher(&session, "").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (id, channel) = w.start(&session, "job").await;
    let terminal = agent.recv_json(WAIT).await.unwrap();
    let payload = &terminal["payload"]["data"]["payload"];
    assert_eq!(payload["command"], "job");
    assert!(payload.get("binary_output").is_none(), "{terminal}");
    let raw = [0xffu8, 0x00, b'x', 0xe2];
    let sent = [
        json!({"stdout":"text é\n","stderr":"","exit_code":null}),
        json!({"stdout":"\u{fffd}\u{0000}x\u{fffd}","stderr":"warn\n","exit_code":null,
               "stdout_b64": base64::engine::general_purpose::STANDARD.encode(raw)}),
        json!({"stdout":"","stderr":"","exit_code":0}),
    ];
    for payload in &sent {
        agent.send_text(&chunk(&channel, payload)).await.unwrap();
    }
    let expected_stdout = [&b"text \xc3\xa9\n"[..], &raw].concat();
    // The watcher without the opt-in: the agent's frames as they were sent.
    let seen = collect(&mut reference, &channel).await;
    let payloads: Vec<&Value> = seen
        .json
        .iter()
        .map(|f| &f["payload"]["data"]["payload"])
        .collect();
    assert_eq!(payloads, sent.iter().collect::<Vec<_>>());
    // The opted-in watcher: the same bytes in binary frames, the end in JSON.
    let seen = collect(&mut binary, &channel).await;
    assert_eq!(seen.binary_bytes("stdout"), expected_stdout);
    assert_eq!(seen.binary_bytes("stderr"), b"warn\n");
    assert_eq!(seen.json.len(), 1);
    assert_eq!(seen.last()["exit_code"], 0);
    assert_eq!(w.stored(&session, &id, "stdout").await, expected_stdout);
}

#[tokio::test]
async fn an_agent_with_the_capability_is_asked_for_binary_frames_and_they_are_stored_exactly() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let w = world(false).await;
    let (mut agent, session) = scripted(&w, Some("command-binary-output")).await;
    let mut reference = w.watcher(&session, "").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (id, channel) = w.start(&session, "job").await;
    let terminal = agent.recv_json(WAIT).await.unwrap();
    assert_eq!(
        terminal["payload"]["data"]["payload"]["binary_output"], true,
        "{terminal}"
    );
    let frame = |stream: &str, offset: u64, data: &[u8]| {
        let id = format!("{channel}/{stream}");
        let mut bytes = vec![u8::try_from(id.len()).unwrap()];
        bytes.extend_from_slice(id.as_bytes());
        bytes.extend_from_slice(&offset.to_be_bytes());
        bytes.extend_from_slice(data);
        Message::binary(bytes)
    };
    agent.send(frame("stdout", 0, b"ab\xff")).await.unwrap();
    // A repeat of bytes already sent: only the new ones count.
    agent.send(frame("stdout", 0, b"ab\xffcd")).await.unwrap();
    agent.send(frame("stderr", 0, b"e\x80")).await.unwrap();
    agent
        .send_text(&chunk(
            &channel,
            &json!({"stdout":"","stderr":"","exit_code":0}),
        ))
        .await
        .unwrap();
    let seen = collect(&mut reference, &channel).await;
    assert_eq!(seen.json_bytes("stdout"), b"ab\xffcd");
    assert_eq!(seen.json_bytes("stderr"), b"e\x80");
    assert_eq!(
        seen.json[0]["payload"]["data"]["payload"]["stdout"],
        "ab\u{fffd}"
    );
    assert_eq!(seen.json[1]["payload"]["data"]["payload"]["stdout"], "cd");
    assert_eq!(w.stored(&session, &id, "stdout").await, b"ab\xffcd");
    assert_eq!(w.stored(&session, &id, "stderr").await, b"e\x80");
    let (code, body) = w
        .server
        .call(
            Method::GET,
            &format!("/api/v1/tunnel/{session}/commands/{id}?wait=10"),
            Some(&w.tech),
            None,
        )
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        (body["status"].as_str(), body["stdout_bytes"].as_u64()),
        (Some("completed"), Some(5))
    );
    // A watcher asking for an unknown output form is refused before the upgrade.
    let bad = format!("/api/v1/tunnel/{session}/stream?output=xml");
    let answer = w
        .server
        .http()
        .get(w.server.url(&bad))
        .bearer_auth(&w.tech)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 400);
    let _ = agent.send(Message::Close(None)).await;
}

/// Reads a binary watcher until the command's final frame; the stdout bytes seen.
async fn read_binary(mut socket: Socket, seen: Arc<AtomicU64>) -> Result<u64, String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(120), socket.next()).await {
            Ok(Some(Ok(Message::Binary(bytes)))) => {
                let (_, _, data) = data_frame(&bytes);
                seen.fetch_add(data.len() as u64, Ordering::SeqCst);
            }
            Ok(Some(Ok(Message::Text(text)))) if !text.contains(r#""exit_code":null"#) => {
                return Ok(seen.load(Ordering::SeqCst));
            }
            Ok(Some(Ok(Message::Close(frame)))) => return Err(format!("closed: {frame:?}")),
            Ok(Some(Ok(_))) => {}
            other => return Err(format!("no last frame: {other:?}")),
        }
    }
}

// Several threads: the reading watcher must not wait behind the test's other tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_watcher_that_stops_reading_costs_bounded_memory_and_is_closed_too_slow() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // 120 MB in bursts of 1 MB: far more than the 16 MiB a watcher may lag.
    const BURSTS: u64 = 120;
    const OUTPUT: u64 = BURSTS * 1_000_000;
    let w = world(true).await;
    let session = w.open().await;
    let pid = w.server.pid().unwrap();
    let mut slow = w.watcher(&session, "?output=binary").await;
    let seen = Arc::new(AtomicU64::new(0));
    let reading = w.watcher(&session, "?output=binary").await;
    let reader = tokio::spawn(read_binary(reading, Arc::clone(&seen)));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let before = proc_bytes(pid, "VmRSS");
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(proc_bytes(pid, "VmRSS"), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let started = Instant::now();
    w.start(
        &session,
        &format!("for i in $(seq {BURSTS}); do head -c 1000000 /dev/zero; sleep 0.01; done"),
    )
    .await;
    while seen.load(Ordering::SeqCst) < 60_000_000
        && started.elapsed() < Duration::from_secs(7)
        && !reader.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let behind = seen.load(Ordering::SeqCst);
    assert!(
        behind > 40_000_000,
        "only {behind} bytes passed while the watcher paused"
    );
    let total = reader.await.unwrap().unwrap();
    assert_eq!(total, OUTPUT, "the reading watcher missed output");
    stop.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    let growth = peak.load(Ordering::SeqCst).saturating_sub(before);
    eprintln!(
        "paused binary watcher: {behind} bytes passed it; RSS +{} KiB",
        growth / 1024
    );
    assert!(
        growth < 64 * MIB,
        "a binary watcher that stopped reading grew the server's RSS by {} MiB",
        growth / MIB
    );
    let close = loop {
        let next = tokio::time::timeout(Duration::from_secs(30), slow.next()).await;
        match next.unwrap() {
            Some(Ok(Message::Close(frame))) => break frame.unwrap(),
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(close.code, CloseCode::Policy, "{close:?}");
    assert!(close.reason.contains("too slow"), "{close:?}");
}

#[tokio::test]
async fn rmm_exec_reading_slower_than_the_command_writes_gets_every_byte_paced_not_dropped() {
    use tokio::io::AsyncReadExt as _;
    let _alone = ONE_AT_A_TIME.lock().await;
    let w = world(true).await;
    // 48 MiB, three times the 16 MiB the server stores: a dropped stream could not be made
    // whole from the stored output.
    let data: Vec<u8> = (0..48 * MIB).map(|i| (i * 7 + i / 4093) as u8).collect();
    let file = w.file("big.bin", &data);
    let home = tempfile::tempdir().unwrap();
    let rmm = |args: &[&str]| rmm_command(&w.server.url(""), home.path(), args).unwrap();
    let mut login = rmm(&["login", "--username", "tina", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = login.stdin.take().unwrap();
    pipe.write_all(b"tina-password\n").await.unwrap();
    drop(pipe);
    assert!(login.wait().await.unwrap().success());
    let mut child = rmm(&["exec", "web-01", "--", &format!("cat {file}")])
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0; 256 * 1024];
    let started = Instant::now();
    // A slow reader: about 40 MB/s.
    loop {
        let n = tokio::time::timeout(WAIT, stdout.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let out = child.wait_with_output().await.unwrap();
    eprintln!(
        "slow reader: {} bytes in {:?}",
        got.len(),
        started.elapsed()
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the output differs");
}
