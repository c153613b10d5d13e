//! Reliability (issue 17): an `rmm-agent` killed outright (SIGKILL: no cleanup code of its own
//! runs) leaves no command process it started running on the machine, grandchildren included;
//! its session reads closed as `agent_disconnected` within a second, and the command it ran
//! reads `failed` with the same reason as its `end_reason`.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::procfs::{is_running as running, pids_written, still_running_after};
use rmm_e2e::real_agent::open_tunnel;
use rmm_e2e::reliability;
use serde_json::json;

#[tokio::test]
async fn a_killed_agent_leaves_no_command_process_running() {
    let mut t = open_tunnel().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (shell, child) = (dir.path().join("shell.pid"), dir.path().join("child.pid"));
    // The shell, and a grandchild of the agent in the background; both wait for minutes.
    let command = format!(
        "echo $$ > {shell}.tmp && mv {shell}.tmp {shell}; sleep 600 & echo $! > {child}.tmp && mv {child}.tmp {child}; wait",
        shell = shell.display(),
        child = child.display()
    );
    let command_id = t
        .start_command(json!({ "command": command }))
        .await
        .unwrap();
    let Some(&[shell_pid, child_pid]) = pids_written(&[&shell, &child], Duration::from_secs(20))
        .await
        .as_deref()
    else {
        panic!("the command did not start");
    };
    assert!(running(shell_pid) && running(child_pid));

    t.agent.kill().await.unwrap(); // SIGKILL
    let killed = Instant::now();

    // The technician learns it at once: the session is closed as agent_disconnected.
    let status_path = format!("/api/v1/tunnel/status/{}", t.session);
    let status = loop {
        let (_, status) = t
            .server
            .call(Method::GET, &status_path, Some(&t.tech), None)
            .await
            .unwrap();
        if status["status"] == "closed" || killed.elapsed() > Duration::from_secs(5) {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seen_after = killed.elapsed();
    assert_eq!(status["close_reason"], "agent_disconnected", "{status}");
    assert!(
        seen_after < Duration::from_secs(1),
        "the session closed {seen_after:?} after the agent died"
    );

    // The command's record says why it failed (its end is stored with the session's close).
    let (code, command) = t
        .server
        .call(
            Method::GET,
            &format!("/api/v1/tunnel/{}/commands/{command_id}", t.session),
            Some(&t.tech),
            None,
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{command}");
    assert_eq!(
        (&command["status"], &command["end_reason"]),
        (&json!("failed"), &json!("agent_disconnected")),
        "{command}"
    );

    let left = still_running_after(&[shell_pid, child_pid], Duration::from_secs(5)).await;
    assert!(
        left.is_empty(),
        "command processes outlived the agent: {left:?} of shell {shell_pid}, background {child_pid}"
    );
    reliability::record(
        "faults",
        "rmm-agent SIGKILLed mid-command: no command process survives; the session reads agent_disconnected within 1 s; the command reads failed (agent_disconnected)",
        &format!(
            "session closed {} ms after the kill; 0 of 2 command processes left",
            seen_after.as_millis()
        ),
        "cargo test -p rmm-e2e --test agent_crash",
    );
}
