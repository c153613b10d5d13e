//! Performance (issue 15): once a tunnel has run a command, `rmm-agent` keeps a command
//! supervisor started ahead (`__supervise <pid> --spare`), so the next command costs no
//! process start of the agent's own. These tests show that the next command does run on that
//! spare, with the same stdin as before (`/dev/null`, or the technician's bytes with
//! `"stdin": true`), and that a command on a spare still dies with an agent killed outright.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::procfs::{is_running as running, pids_written, still_running_after};
use rmm_e2e::real_agent::{Tunnel, open_tunnel};
use serde_json::{Value, json};

/// The spare supervisor the agent `agent` holds: its pid, once one is there (within 10 s).
async fn spare_of(agent: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{agent}/task/{agent}/children"))
            .unwrap_or_default();
        let spare = children
            .split_whitespace()
            .filter_map(|pid| pid.parse::<u32>().ok())
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmdline| cmdline.split(|&b| b == 0).any(|arg| arg == b"--spare"))
            });
        if let Some(spare) = spare {
            return spare;
        }
        assert!(
            Instant::now() < deadline,
            "no spare supervisor under the agent {agent}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the command `id` to end; its record and its stdout.
async fn ended(t: &Tunnel, id: &str) -> (Value, String) {
    let path = format!("/api/v1/tunnel/{}/commands/{id}?wait=10", t.session);
    let (code, record) = t
        .server
        .call(Method::GET, &path, Some(&t.tech), None)
        .await
        .unwrap();
    assert_eq!(
        (code, &record["status"]),
        (200, &json!("completed")),
        "{record}"
    );
    let (code, _, stdout) = t
        .server
        .raw_output(&t.tech, &t.session, id, "stdout")
        .await
        .unwrap();
    assert_eq!(code, 200);
    (record, String::from_utf8(stdout).unwrap())
}

#[tokio::test]
async fn the_next_command_runs_on_the_spare_with_its_stdin() {
    let t = open_tunnel().await.unwrap();
    let agent = t.agent.id().unwrap();
    // No command yet: no spare.
    let first = t
        .start_command(json!({ "command": "echo $PPID" }))
        .await
        .unwrap();
    let (_, out) = ended(&t, &first).await;
    let cold_supervisor: u32 = out.trim().parse().unwrap();

    // Without stdin: the shell's parent is the spare, and its stdin is /dev/null.
    let spare = spare_of(agent).await;
    assert_ne!(spare, cold_supervisor);
    let second = t
        .start_command(json!({ "command": "echo $PPID; readlink /proc/self/fd/0" }))
        .await
        .unwrap();
    let (record, out) = ended(&t, &second).await;
    assert_eq!(record["exit_code"], 0, "{record}");
    assert_eq!(out, format!("{spare}\n/dev/null\n"));

    // With stdin: the technician's bytes reach the command through the spare.
    let spare = spare_of(agent).await;
    let third = t
        .start_command(json!({ "command": "echo $PPID; cat", "stdin": true }))
        .await
        .unwrap();
    let put = t
        .server
        .http()
        .put(t.server.url(&format!(
            "/api/v1/tunnel/{}/commands/{third}/stdin",
            t.session
        )))
        .bearer_auth(&t.tech)
        .body("from the technician\n")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 200);
    let (_, out) = ended(&t, &third).await;
    assert_eq!(out, format!("{spare}\nfrom the technician\n"));

    // Exit codes come through the spare as before.
    let fourth = t
        .start_command(json!({ "command": "exit 7" }))
        .await
        .unwrap();
    let path = format!("/api/v1/tunnel/{}/commands/{fourth}?wait=10", t.session);
    let (_, record) = t
        .server
        .call(Method::GET, &path, Some(&t.tech), None)
        .await
        .unwrap();
    assert_eq!(record["exit_code"], 7, "{record}");
}

#[tokio::test]
async fn a_command_on_a_spare_dies_with_a_killed_agent() {
    let mut t = open_tunnel().await.unwrap();
    let agent = t.agent.id().unwrap();
    let first = t.start_command(json!({ "command": "true" })).await.unwrap();
    ended(&t, &first).await;
    let spare = spare_of(agent).await;

    let dir = tempfile::tempdir().unwrap();
    let (shell, child) = (dir.path().join("shell.pid"), dir.path().join("child.pid"));
    let long = format!(
        "echo $PPID > {shell}.tmp && mv {shell}.tmp {shell}; sleep 600 & echo $! > {child}.tmp && mv {child}.tmp {child}; wait",
        shell = shell.display(),
        child = child.display()
    );
    t.start_command(json!({ "command": long })).await.unwrap();
    let Some(&[parent, child_pid]) = pids_written(&[&shell, &child], Duration::from_secs(20))
        .await
        .as_deref()
    else {
        panic!("the command did not start");
    };
    assert_eq!(parent, spare, "the command ran on the spare");
    assert!(running(spare) && running(child_pid));

    t.agent.kill().await.unwrap(); // SIGKILL
    let left = still_running_after(&[spare, child_pid], Duration::from_secs(5)).await;
    assert!(
        left.is_empty(),
        "outlived the agent: {left:?} of spare {spare}, background {child_pid}"
    );
}
