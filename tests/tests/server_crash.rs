//! Reliability (issue 17): `rmm-server` killed outright (SIGKILL: no cleanup code of its own
//! runs) while a command runs. The agent sees its connection drop and kills the command's
//! process group, so nothing of it keeps running on the managed machine; the restarted server
//! (same database, same address) reconciles: the command reads `failed` with `end_reason`
//! `server_restart` and has exactly one `command_end` entry; the agent reconnects on its own
//! and a new tunnel runs a new command.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::pg::fresh_database;
use rmm_e2e::procfs::{group_running, is_running, process_group};
use rmm_e2e::real_agent::agent_command;
use rmm_e2e::reliability;
use rmm_e2e::server::TestServer;
use serde_json::{Value, json};

/// How long the command's processes may outlive the server. The agent reads the socket's close
/// at once and kills the group (TERM, then KILL after its 2 s grace): a few seconds at most,
/// given a wide margin for a busy CI machine.
const STOP_BOUND: Duration = Duration::from_secs(20);
/// How long the agent may take to reconnect once the server is back: its backoff is capped at
/// 2 s here, so a few seconds; the margin again for a busy machine.
const RECONNECT_BOUND: Duration = Duration::from_secs(30);

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

async fn get(server: &TestServer, token: &str, path: &str) -> Value {
    let (code, body) = server
        .call(Method::GET, path, Some(token), None)
        .await
        .unwrap();
    assert_eq!(code, 200, "GET {path}: {body}");
    body
}

async fn post(server: &TestServer, token: &str, path: &str, body: Value) -> (u16, Value) {
    server
        .call(Method::POST, path, Some(token), Some(body))
        .await
        .unwrap()
}

/// Whether the agent is listed as connected.
async fn connected(server: &TestServer, admin: &str, agent_id: &str) -> bool {
    let Ok((200, agents)) = server
        .call(Method::GET, "/api/v1/agents", Some(admin), None)
        .await
    else {
        return false;
    };
    agents.as_array().is_some_and(|list| {
        list.iter()
            .any(|a| a["agent_id"] == agent_id && a["connected"] == true)
    })
}

/// Opens a tunnel to `agent_id` for `tech`; its session id.
async fn open(server: &TestServer, tech: &str, agent_id: &str) -> String {
    let (code, opened) = post(
        server,
        tech,
        "/api/v1/tunnel/open",
        json!({ "agent_id": agent_id }),
    )
    .await;
    assert_eq!(code, 200, "{opened}");
    opened["session_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_killed_server_leaves_no_command_running_and_its_restart_fails_the_command() {
    let db = fresh_database().await.unwrap();
    let mut server = TestServer::start(&db, &[]).await.unwrap();
    let admin = server.admin_token().await.unwrap();
    let (agent_id, key) = server.register_agent(&admin, "web-01").await.unwrap();
    let mut agent = {
        let mut cmd = agent_command(&server, &key, &[]).unwrap();
        cmd.env("RMM_AGENT_BACKOFF_CAP_SECS", "2");
        cmd.spawn().unwrap()
    };
    server.wait_connected(&admin, &agent_id).await.unwrap();
    let tech = server.tech_token("tina").await.unwrap();
    let session = open(&server, &tech, &agent_id).await;

    // A shell that records its pid, with a background grandchild that records its own; both
    // wait for minutes.
    let dir = tempfile::tempdir().unwrap();
    let (shell, child) = (dir.path().join("shell.pid"), dir.path().join("child.pid"));
    let command = format!(
        "echo $$ > {shell}.tmp && mv {shell}.tmp {shell}; sleep 300 & echo $! > {child}.tmp && mv {child}.tmp {child}; wait",
        shell = shell.display(),
        child = child.display()
    );
    let (code, started) = post(
        &server,
        &tech,
        &format!("/api/v1/tunnel/{session}/command"),
        json!({ "command": command }),
    )
    .await;
    assert_eq!(code, 202, "{started}");
    let command_id = started["command_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (shell_pid, child_pid) = loop {
        if let (Some(a), Some(b)) = (read_pid(&shell), read_pid(&child)) {
            break (a, b);
        }
        assert!(Instant::now() < deadline, "the command did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let group = process_group(shell_pid).expect("the command's shell runs");
    assert_eq!(
        process_group(child_pid),
        Some(group),
        "the background process is in the command's group"
    );
    let members = group_running(group);
    assert!(
        members.contains(&shell_pid) && members.contains(&child_pid),
        "group {group}: {members:?}"
    );

    server.kill().await.unwrap(); // SIGKILL
    let killed = Instant::now();

    // The agent kills the command's whole group: nothing of it outlives the server.
    let survivors = loop {
        let survivors = group_running(group);
        if survivors.is_empty() || killed.elapsed() > STOP_BOUND {
            break survivors;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stopped_after = killed.elapsed();
    assert!(
        survivors.is_empty(),
        "processes of the command's group {group} still run {stopped_after:?} after the server died: {survivors:?}"
    );
    assert!(!is_running(shell_pid) && !is_running(child_pid));
    // The agent itself stays up, redialling.
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent exited with its server"
    );

    // The same database, the same address: the agent finds it again.
    server.restart().await.unwrap();
    let restarted = Instant::now();
    while !connected(&server, &admin, &agent_id).await {
        assert!(
            restarted.elapsed() < RECONNECT_BOUND,
            "the agent did not reconnect within {RECONNECT_BOUND:?} of the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reconnected_after = restarted.elapsed();

    // Reconciled at start-up: the command failed, and says why; its session closed.
    let record = get(
        &server,
        &tech,
        &format!("/api/v1/tunnel/{session}/commands/{command_id}"),
    )
    .await;
    assert_eq!(
        (
            &record["status"],
            &record["end_reason"],
            &record["exit_code"]
        ),
        (&json!("failed"), &json!("server_restart"), &Value::Null),
        "{record}"
    );
    assert!(record["finished_at"].is_string(), "{record}");
    let status = get(&server, &tech, &format!("/api/v1/tunnel/status/{session}")).await;
    assert_eq!(
        (&status["status"], &status["close_reason"]),
        (&json!("closed"), &json!("server_restart")),
        "{status}"
    );

    // Its audit has exactly one end, with the reason.
    let audit = get(
        &server,
        &admin,
        &format!("/api/v1/audit?session_id={session}&limit=500"),
    )
    .await;
    let ends: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "command_end" && e["command_id"] == command_id.as_str())
        .collect();
    assert_eq!(ends.len(), 1, "{audit}");
    assert_eq!(
        (&ends[0]["status"], &ends[0]["detail"]),
        (&json!("failed"), &json!("server_restart")),
        "{audit}"
    );

    // And the agent works: a new tunnel runs a new command to its end.
    let again = open(&server, &tech, &agent_id).await;
    let (code, started) = post(
        &server,
        &tech,
        &format!("/api/v1/tunnel/{again}/command"),
        json!({ "command": "echo back" }),
    )
    .await;
    assert_eq!(code, 202, "{started}");
    let ran = get(
        &server,
        &tech,
        &format!(
            "/api/v1/tunnel/{again}/commands/{}?wait=30",
            started["command_id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(
        (
            &ran["status"],
            &ran["exit_code"],
            &ran["end_reason"],
            &ran["stdout"]
        ),
        (
            &json!("completed"),
            &json!(0),
            &Value::Null,
            &json!("back\n")
        ),
        "{ran}"
    );

    reliability::record(
        "faults",
        "rmm-server SIGKILLed mid-command: the agent kills the command's process group; the restart reconciles it as failed (server_restart) with one command_end; the agent reconnects and runs a new command",
        &format!(
            "command group gone {} ms after the kill; agent back {} ms after the restart",
            stopped_after.as_millis(),
            reconnected_after.as_millis()
        ),
        "cargo test -p rmm-e2e --test server_crash",
    );
}
