//! The agent removes its old upload partial files (issue 16, point 5), on the real binaries:
//! an upload interrupted by the agent's SIGKILL leaves `.NAME.rmm-partial`; the agent,
//! restarted with a short `RMM_AGENT_PARTIAL_MAX_AGE_SECS`, removes it once it is that old
//! (it remembers it in the journal in its state folder), while the partial file of an upload
//! still running is kept however old, and a `.x.rmm-partial` the agent did not make is left
//! alone.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::pg::sqlite_url;
use rmm_e2e::real_agent::agent_command;
use rmm_e2e::server::TestServer;
use serde_json::json;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::process::Child;

const MAX_AGE_SECS: u64 = 3;

fn partial_of(target: &Path) -> PathBuf {
    let name = target.file_name().unwrap().to_str().unwrap();
    target.with_file_name(format!(".{name}.rmm-partial"))
}

/// The agent with its state in `state`.
fn agent(server: &TestServer, key: &str, state: &Path) -> Child {
    agent_command(server, key, &[])
        .unwrap()
        .env("RMM_AGENT_STATE_DIR", state)
        .env("RMM_AGENT_PARTIAL_MAX_AGE_SECS", MAX_AGE_SECS.to_string())
        .spawn()
        .unwrap()
}

/// A technician's new tunnel to `agent_id`: (token, session).
async fn open(server: &TestServer, tech: &str, agent_id: &str) -> String {
    let (code, opened) = server
        .call(
            Method::POST,
            "/api/v1/tunnel/open",
            Some(tech),
            Some(json!({ "agent_id": agent_id })),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{opened}");
    opened["session_id"].as_str().unwrap().to_owned()
}

/// An upload to `target` that sends 1 MiB of its 8 and then waits, its socket open; returns
/// once the agent has written some of it to the partial file.
async fn stalled_upload(
    server: &TestServer,
    tech: &str,
    session: &str,
    target: &Path,
) -> TcpStream {
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "PUT /api/v1/tunnel/{session}/files?path={} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {tech}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        target.display(),
        server.addr,
        8 << 20
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&vec![0x5a_u8; 1 << 20]).await.unwrap();
    socket.flush().await.unwrap();
    let partial = partial_of(target);
    let started = Instant::now();
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the agent wrote nothing to {}",
            partial.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    socket
}

#[tokio::test]
async fn old_partial_files_of_interrupted_uploads_go_and_live_or_foreign_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let state = dir.path().join("state");
    let server = TestServer::start(&sqlite_url(dir.path()), &[])
        .await
        .unwrap();
    let admin = server.admin_token().await.unwrap();
    let (agent_id, key) = server.register_agent(&admin, "sweeper").await.unwrap();
    let tech = server.tech_token("tina").await.unwrap();

    // An upload interrupted by the agent's death leaves its partial file.
    let mut first = agent(&server, &key, &state);
    server.wait_connected(&admin, &agent_id).await.unwrap();
    let session = open(&server, &tech, &agent_id).await;
    let killed = files.join("killed.bin");
    let socket = stalled_upload(&server, &tech, &session, &killed).await;
    first.kill().await.unwrap();
    drop(socket);
    let written = std::fs::metadata(partial_of(&killed))
        .unwrap()
        .modified()
        .unwrap();

    // A partial file the agent did not make, as old as can be.
    let foreign = files.join(".x.rmm-partial");
    std::fs::write(&foreign, b"not the agent's").unwrap();
    let touched = std::process::Command::new("touch")
        .args(["-d", "2 days ago"])
        .arg(&foreign)
        .status()
        .unwrap();
    assert!(touched.success());

    // Restarted: a live upload starts (and stays stalled, its partial file untouched for
    // longer than the age), and the old partial file goes.
    let _second = agent(&server, &key, &state);
    server.wait_connected(&admin, &agent_id).await.unwrap();
    let session = open(&server, &tech, &agent_id).await;
    let live = files.join("live.bin");
    let _live_socket = stalled_upload(&server, &tech, &session, &live).await;
    let started = Instant::now();
    while partial_of(&killed).exists() {
        assert!(
            started.elapsed() < Duration::from_secs(MAX_AGE_SECS * 5),
            "the interrupted upload's partial file is still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let age = written.elapsed().unwrap();
    assert!(
        age >= Duration::from_secs(MAX_AGE_SECS),
        "removed {age:?} after its last write, before it was {MAX_AGE_SECS} s old"
    );
    // Two more sweeps (every second at this age) with the live one past the age.
    tokio::time::sleep(Duration::from_secs(MAX_AGE_SECS + 2)).await;
    let live_partial = partial_of(&live);
    assert!(
        live_partial.exists(),
        "the live upload's partial file was removed"
    );
    let untouched = std::fs::metadata(&live_partial)
        .unwrap()
        .modified()
        .unwrap()
        .elapsed()
        .unwrap();
    assert!(
        untouched >= Duration::from_secs(MAX_AGE_SECS),
        "the live partial file was written {untouched:?} ago: the check proves nothing"
    );
    assert_eq!(std::fs::read(&foreign).unwrap(), b"not the agent's");
    let journal = std::fs::read_to_string(state.join("partials.journal")).unwrap();
    assert_eq!(
        journal.lines().count(),
        1,
        "only the live one is left: {journal}"
    );
}
