//! Reliability (issue 17): an `rmm-agent` killed outright (SIGKILL: no cleanup code of its own
//! runs) leaves no command process it started running on the machine, grandchildren included,
//! and its session reads closed as `agent_disconnected` within a second.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::real_agent::open_tunnel;
use serde_json::json;

/// Whether `pid` is a process still running (a zombie waiting for its reaper is not).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

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
    let (code, started) = t
        .server
        .call(
            Method::POST,
            &format!("/api/v1/tunnel/{}/command", t.session),
            Some(&t.tech),
            Some(json!({ "command": command })),
        )
        .await
        .unwrap();
    assert_eq!(code, 202, "{started}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (shell_pid, child_pid) = loop {
        if let (Some(a), Some(b)) = (read_pid(&shell), read_pid(&child)) {
            break (a, b);
        }
        assert!(Instant::now() < deadline, "the command did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
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

    let deadline = Instant::now() + Duration::from_secs(5);
    while (running(shell_pid) || running(child_pid)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !running(shell_pid),
        "the command's shell {shell_pid} outlived the agent"
    );
    assert!(
        !running(child_pid),
        "the command's background process {child_pid} outlived the agent"
    );
}
