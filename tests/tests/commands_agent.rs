//! Phase 2 with the real agent: real processes on this machine, their bytes, their timeouts,
//! cancels and process groups, through the real server and PostgreSQL.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::agent::ScriptedAgent;
use rmm_e2e::real_agent::{Tunnel, open_tunnel};
use rmm_e2e::server::TestServer;
use serde_json::{Value, json};
use tokio::process::Child;

struct World {
    server: TestServer,
    admin: String,
    tech: String,
    session: String,
    _agent: Child,
}

async fn world() -> World {
    let Tunnel {
        server,
        admin,
        tech,
        session,
        agent,
    } = open_tunnel().await.unwrap();
    World {
        server,
        admin,
        tech,
        session,
        _agent: agent,
    }
}

impl World {
    async fn start(&self, command: &str, timeout: Option<u64>) -> String {
        let mut body = json!({ "command": command });
        if let Some(t) = timeout {
            body["timeout_secs"] = json!(t);
        }
        let (code, started) = self
            .server
            .call(
                Method::POST,
                &format!("/api/v1/tunnel/{}/command", self.session),
                Some(&self.tech),
                Some(body),
            )
            .await
            .unwrap();
        assert_eq!(code, 202, "{started}");
        started["command_id"].as_str().unwrap().to_owned()
    }

    async fn wait(&self, id: &str, secs: u64) -> Value {
        let (code, body) = self
            .server
            .call(
                Method::GET,
                &format!("/api/v1/tunnel/{}/commands/{id}?wait={secs}", self.session),
                Some(&self.tech),
                None,
            )
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        body
    }

    async fn run(&self, command: &str) -> Value {
        let id = self.start(command, None).await;
        let result = self.wait(&id, 30).await;
        assert_ne!(
            result["status"], "running",
            "{command} did not end: {result}"
        );
        result
    }

    async fn raw(&self, id: &str, stream: &str) -> Vec<u8> {
        let (status, _content_type, bytes) = self
            .server
            .raw_output(&self.tech, &self.session, id, stream)
            .await
            .unwrap();
        assert_eq!(status, 200);
        bytes
    }
}

/// Processes whose command line contains `marker`, other than a shell running this check.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) {
                found.push(cmdline);
            }
        }
    }
    found
}

#[tokio::test]
async fn stdout_stderr_and_the_exit_code_come_back() {
    let w = world().await;
    let result = w.run("echo out; echo err >&2; exit 3").await;
    assert_eq!(
        (
            result["status"].clone(),
            result["exit_code"].clone(),
            result["stdout"].clone(),
            result["stderr"].clone()
        ),
        (json!("completed"), json!(3), json!("out\n"), json!("err\n"))
    );
}

#[tokio::test]
async fn non_utf8_bytes_come_back_byte_for_byte() {
    let w = world().await;
    let id = w.start(r"printf '\377\376abc\200'", None).await;
    assert_eq!(w.wait(&id, 30).await["status"], "completed");
    assert_eq!(w.raw(&id, "stdout").await, b"\xff\xfeabc\x80");
}

#[tokio::test]
async fn eight_megabytes_of_output_arrive_intact() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big");
    // 8 MB of base64 lines, kept on disk so the test can compare with what arrived.
    let make = format!(
        "head -c 6000000 /dev/urandom | base64 > {0}; cat {0}",
        file.display()
    );
    let id = w.start(&make, None).await;
    let result = w.wait(&id, 60).await;
    assert_eq!(result["status"], "completed", "{}", result["stderr"]);
    let expected = std::fs::read(&file).unwrap();
    assert!(expected.len() > 8_000_000);
    let got = w.raw(&id, "stdout").await;
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "output differs from the file");
    assert_eq!(result["stdout_bytes"], expected.len());
}

#[tokio::test]
async fn the_first_line_reaches_a_watcher_within_a_second() {
    let w = world().await;
    let url = format!("ws://{}/api/v1/tunnel/{}/stream", w.server.addr, w.session);
    let mut watcher = ScriptedAgent::connect(&url, Some(&w.tech)).await.unwrap();
    let started = Instant::now();
    let id = w.start("echo first; sleep 3; echo last", None).await;
    let frame = watcher.recv_json(Duration::from_secs(3)).await.unwrap();
    assert_eq!(frame["payload"]["data"]["payload"]["stdout"], "first\n");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(w.wait(&id, 30).await["stdout"], "first\nlast\n");
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let w = world().await;
    let marker = "sleep 1017";
    let id = w.start(&format!("{marker} & {marker}"), Some(1)).await;
    let result = w.wait(&id, 30).await;
    assert_eq!(result["status"], "timed_out", "{result}");
    assert!(result["exit_code"].as_i64().unwrap() > 128);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        processes_with(marker),
        Vec::<String>::new(),
        "a child survived the timeout"
    );
}

#[tokio::test]
async fn cancel_kills_the_command() {
    let w = world().await;
    let marker = "sleep 1018";
    let id = w.start(marker, None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, result) = w
        .server
        .call(
            Method::DELETE,
            &format!("/api/v1/tunnel/{}/commands/{id}", w.session),
            Some(&w.tech),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (code, result["status"].clone()),
        (200, json!("cancelled")),
        "{result}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(processes_with(marker).is_empty());
}

#[tokio::test]
async fn a_command_reading_stdin_finishes_at_once() {
    let w = world().await;
    let started = Instant::now();
    let result = w.run("cat").await;
    assert_eq!(
        (result["status"].clone(), result["exit_code"].clone()),
        (json!("completed"), json!(0))
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn twenty_concurrent_commands_each_get_exactly_their_own_output() {
    let w = world().await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push((
            i,
            w.start(
                &format!("for n in 1 2 3; do echo cmd{i}-$n; sleep 0.05; done"),
                None,
            )
            .await,
        ));
    }
    for (i, id) in ids {
        let result = w.wait(&id, 30).await;
        assert_eq!(
            result["stdout"],
            format!("cmd{i}-1\ncmd{i}-2\ncmd{i}-3\n"),
            "command {i}"
        );
    }
}

#[tokio::test]
async fn closing_the_tunnel_kills_a_running_command_and_everything_is_audited() {
    let w = world().await;
    let marker = "sleep 1019";
    let id = w.start(marker, None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !processes_with(marker).is_empty(),
        "the command is not running"
    );
    let (code, _) = w
        .server
        .call(
            Method::POST,
            "/api/v1/tunnel/close",
            Some(&w.tech),
            Some(json!({ "session_id": w.session })),
        )
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(w.wait(&id, 0).await["status"], "cancelled");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_with(marker).is_empty() {
        assert!(Instant::now() < deadline, "the command outlived its tunnel");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, audit) = w
        .server
        .call(Method::GET, "/api/v1/audit?limit=50", Some(&w.admin), None)
        .await
        .unwrap();
    let events: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .filter(|e| *e != "user_created")
        .collect();
    // Newest first, in the order the changes committed (each with its entry): the tunnel
    // closed, and that cancelled the command. (The fixture's users are not the subject.)
    assert_eq!(
        events,
        ["command_end", "tunnel_close", "command", "tunnel_open"]
    );
}
