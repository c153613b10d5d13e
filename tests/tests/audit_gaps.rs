//! Nothing escapes the audit (issue 12, point 6), against the real server: an upload the
//! client abandons is audited as `aborted` with the bytes moved; command output written
//! while the SQLite database is locked is stored whole once the lock goes (or, when the spool
//! overflows, the command says truncated and the stored output is a prefix); a flood of
//! command frames on a technician's stream is rate limited, and every refused frame that was
//! stored is a failed command with its `command_end` entry.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::agent::{Received, ScriptedAgent};
use rmm_e2e::pg::{fresh_database, sqlite_url};
use rmm_e2e::real_agent::open_tunnel;
use rmm_e2e::server::TestServer;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

const WAIT: Duration = Duration::from_secs(10);
const MIB: usize = 1024 * 1024;

/// A server with a scripted agent and a technician's tunnel open to it.
struct World {
    server: TestServer,
    admin: String,
    tech: String,
    agent: ScriptedAgent,
    session: String,
}

async fn world(database_url: &str, env: &[(&str, &str)]) -> World {
    let server = TestServer::start(database_url, env).await.unwrap();
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
        agent,
        session,
    }
}

impl World {
    /// Runs `command`; its id and channel, once the agent has the frame.
    async fn run(&mut self, command: &str) -> (String, String) {
        let (code, started) = self
            .server
            .call(
                Method::POST,
                &format!("/api/v1/tunnel/{}/command", self.session),
                Some(&self.tech),
                Some(json!({ "command": command })),
            )
            .await
            .unwrap();
        assert_eq!(code, 202, "{started}");
        let frame = self.agent.recv_json(WAIT).await.unwrap();
        assert_eq!(frame["payload"]["data"]["type"], "terminal", "{frame}");
        (
            started["command_id"].as_str().unwrap().to_owned(),
            started["channel_id"].as_str().unwrap().to_owned(),
        )
    }

    async fn output(&mut self, channel: &str, stdout: &str, exit: Option<i32>) {
        let frame = json!({"type":"tunnel_data","payload":{"channel_id":channel,"data":{"type":"terminal_output","payload":{"stdout":stdout,"stderr":"","exit_code":exit}}}});
        self.agent.send_text(&frame.to_string()).await.unwrap();
    }

    async fn command(&self, id: &str, wait: u64) -> Value {
        let path = format!("/api/v1/tunnel/{}/commands/{id}?wait={wait}", self.session);
        let (code, body) = self
            .server
            .call(Method::GET, &path, Some(&self.tech), None)
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        body
    }

    async fn stdout(&self, id: &str) -> Vec<u8> {
        let (status, _, bytes) = self
            .server
            .raw_output(&self.tech, &self.session, id, "stdout")
            .await
            .unwrap();
        assert_eq!(status, 200);
        bytes
    }

    /// Waits for the command to be stored as ended (its end may wait for the database).
    async fn ended(&self, id: &str) -> Value {
        let started = Instant::now();
        loop {
            let body = self.command(id, 5).await;
            if body["status"] != "running" || started.elapsed() > Duration::from_secs(60) {
                return body;
            }
        }
    }
}

/// Every audit entry of `session`, oldest first.
async fn audit_of(server: &TestServer, admin: &str, session: &str) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let mut path = format!("/api/v1/audit?session_id={session}&limit=500");
        if let Some(before) = before {
            path.push_str(&format!("&before={before}"));
        }
        let (code, body) = server
            .call(Method::GET, &path, Some(admin), None)
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        entries.extend(body["entries"].as_array().cloned().unwrap());
        match body["next_before"].as_i64() {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    entries.reverse();
    entries
}

#[tokio::test]
async fn an_upload_the_client_abandons_is_audited_as_aborted_with_the_bytes_moved() {
    let tunnel = open_tunnel().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("abandoned.bin");
    let total = 8 * MIB;
    let sent = 3 * MIB;
    let mut socket = tokio::net::TcpStream::connect(tunnel.server.addr)
        .await
        .unwrap();
    let head = format!(
        "PUT /api/v1/tunnel/{}/files?path={} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n",
        tunnel.session,
        target.display(),
        tunnel.server.addr,
        tunnel.tech
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![0x5a_u8; 64 * 1024];
    for _ in 0..sent / chunk.len() {
        socket.write_all(&chunk).await.unwrap();
    }
    socket.flush().await.unwrap();
    // Let the server stream what it has to the agent, then walk away mid-body.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(socket);

    let started = Instant::now();
    let entry = loop {
        let audit = audit_of(&tunnel.server, &tunnel.admin, &tunnel.session).await;
        if let Some(e) = audit.iter().find(|e| e["event"] == "file_upload") {
            break e.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no file_upload entry for the abandoned upload: {audit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(entry["result"], "aborted", "{entry}");
    assert_eq!(entry["path"], target.display().to_string());
    let size = entry["size"].as_u64().unwrap();
    assert!(
        size > 0 && size < total as u64 && size <= sent as u64,
        "bytes moved: {entry}"
    );
    assert!(!target.exists(), "an abandoned upload leaves no file");
}

/// Holds an exclusive lock on the SQLite database at `file` for `secs` seconds (longer than
/// the server's 5 s busy timeout); returns once the lock is held.
async fn lock_database(file: &std::path::Path, secs: f64) -> tokio::process::Child {
    let script = format!(
        "import sqlite3, sys, time\n\
         con = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)\n\
         con.execute('BEGIN EXCLUSIVE')\n\
         print('locked', flush=True)\n\
         time.sleep({secs})\n\
         con.execute('COMMIT')\n"
    );
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .arg(file)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line.as_deref(), Some("locked"));
    child
}

#[tokio::test]
async fn output_written_while_the_database_is_locked_is_stored_whole_once_it_frees() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let mut w = world(&url, &[]).await;
    let (id, channel) = w.run("build.sh").await;
    w.output(&channel, "before the lock\n", None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut lock = lock_database(&dir.path().join("rmm.sqlite3"), 8.0).await;
    let mut written = String::from("before the lock\n");
    for n in 0..4 {
        let line = format!("line {n} written while the database is locked\n");
        w.output(&channel, &line, None).await;
        written.push_str(&line);
    }
    w.output(&channel, "", Some(0)).await;
    lock.wait().await.unwrap();

    let result = w.ended(&id).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["stdout_bytes"], written.len(), "{result}");
    assert_eq!(result["stdout_truncated"], false, "{result}");
    assert_eq!(
        String::from_utf8(w.stdout(&id).await).unwrap(),
        written,
        "every chunk stored, in order"
    );
}

#[tokio::test]
async fn output_the_spool_cannot_hold_makes_the_command_truncated_never_silently_short() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let mut w = world(&url, &[("RMM_OUTPUT_SPOOL_BYTES", "65536")]).await;
    let (id, channel) = w.run("dump.sh").await;
    let first = "stored before the lock\n";
    w.output(&channel, first, None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Held long enough that every write below fails first (each waits out the server's 5 s
    // busy timeout): with a shorter lock the spooled chunk may be stored when it is retried
    // before the second, and nothing overflows.
    let mut lock = lock_database(&dir.path().join("rmm.sqlite3"), 25.0).await;
    // Two 40 KiB chunks while locked: the second does not fit behind the first.
    let big = "x".repeat(40 * 1024);
    w.output(&channel, &big, None).await;
    w.output(&channel, &big, None).await;
    w.output(&channel, "after\n", None).await;
    w.output(&channel, "", Some(0)).await;
    lock.wait().await.unwrap();

    let result = w.ended(&id).await;
    let total = first.len() + 2 * big.len() + "after\n".len();
    let facts = (
        result["status"].clone(),
        result["stdout_bytes"].clone(),
        result["stdout_truncated"].clone(),
    );
    assert_eq!(facts, (json!("completed"), json!(total), json!(true)));
    let stored = w.stdout(&id).await;
    assert!(stored.len() < total, "{} of {total}", stored.len());
    assert_eq!(stored, first.as_bytes(), "the stored output is a prefix");
}

#[tokio::test]
async fn a_flood_of_stream_frames_is_rate_limited_and_every_refused_one_is_audited_failed() {
    let db = fresh_database().await.unwrap();
    let mut w = world(&db, &[]).await;
    let url = format!("ws://{}/api/v1/tunnel/{}/stream", w.server.addr, w.session);
    let mut watcher = ScriptedAgent::connect(&url, Some(&w.tech)).await.unwrap();
    let frame = json!({"type":"tunnel_data","payload":{"channel_id":"busy-1","data":{"type":"terminal","payload":{"command":"sleep 600"}}}}).to_string();
    // The first runs and keeps its channel busy.
    watcher.send_text(&frame).await.unwrap();
    let sent = w.agent.recv_json(WAIT).await.unwrap();
    assert_eq!(sent["payload"]["channel_id"], "busy-1", "{sent}");

    let flood_started = Instant::now();
    for _ in 0..300 {
        watcher.send_text(&frame).await.unwrap();
    }
    let (mut busy, mut limited, mut closed) = (0, 0, None);
    loop {
        match watcher.recv(Duration::from_secs(3)).await {
            Ok(Received::Json(reply)) => {
                assert_eq!(reply["type"], "tunnel_error", "{reply}");
                let error = reply["payload"]["error"].as_str().unwrap_or_default();
                if error.starts_with("rate limited") {
                    assert_eq!(reply["payload"]["channel_id"], "client");
                    limited += 1;
                } else {
                    assert_eq!(reply["payload"]["channel_id"], "busy-1", "{reply}");
                    busy += 1;
                }
            }
            Ok(Received::Closed(frame)) => {
                closed = Some(frame);
                break;
            }
            Err(_) => break,
        }
        if busy + limited == 300 {
            break;
        }
    }
    let elapsed = flood_started.elapsed().as_secs_f64();
    assert!(limited > 0, "no rate-limit error among {busy} answers");
    if let Some(frame) = closed {
        let code = frame.map(|f| u16::from(f.code));
        assert_eq!(code, Some(1008), "closed only for the policy");
    }

    // What was run is bounded by the limit: the burst, plus the rate over the flood.
    let audit = audit_of(&w.server, &w.admin, &w.session).await;
    let started: Vec<&Value> = audit.iter().filter(|e| e["event"] == "command").collect();
    let bound = 1 + 20 + (10.0 * elapsed).ceil() as usize;
    assert!(
        started.len() <= bound,
        "{} commands stored in {elapsed:.2} s (bound {bound})",
        started.len()
    );
    assert_eq!(
        started.len(),
        1 + busy,
        "one stored command per refused frame answered"
    );
    // Every refused one is failed, with its end in the audit: none left running.
    for entry in &started[1..] {
        let id = entry["command_id"].as_str().unwrap();
        let end = audit
            .iter()
            .find(|e| e["event"] == "command_end" && e["command_id"] == id);
        let end = end.unwrap_or_else(|| panic!("no command_end for {id}"));
        assert_eq!(end["status"], "failed", "{end}");
        assert_eq!(w.command(id, 0).await["status"], "failed");
    }
    // The first still runs.
    let first = started[0]["command_id"].as_str().unwrap();
    assert_eq!(w.command(first, 0).await["status"], "running");
}
