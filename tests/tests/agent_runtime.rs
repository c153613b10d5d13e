//! The real `rmm-agent`'s runtime (bin/agent/src/runtime.rs), end to end with the real server
//! on SQLite: one thread runs every task, so a command, a file upload and an interactive
//! terminal must all make progress at the same time without one waiting for another; the
//! blocking pool stays bounded while a transfer runs, and an idle agent is back to one thread
//! once its blocking threads' keep-alive has passed.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::pseudo_random;
use rmm_e2e::terminal::{Rig, rig};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const WAIT: Duration = Duration::from_secs(10);
const MIB: usize = 1024 * 1024;
/// The agent's blocking-pool bound (bin/agent/src/runtime.rs, BLOCKING_THREADS).
const BLOCKING_THREADS: u64 = 4;

/// `Threads:` of `/proc/<pid>/status`.
fn threads(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

async fn start_command(r: &Rig, command: &str) -> String {
    let (code, started) = r
        .server
        .call(
            Method::POST,
            &format!("/api/v1/tunnel/{}/command", r.session),
            Some(&r.tech),
            Some(json!({ "command": command, "timeout_secs": 120 })),
        )
        .await
        .unwrap();
    assert_eq!(code, 202, "{started}");
    started["command_id"].as_str().unwrap().to_owned()
}

async fn command_result(r: &Rig, id: &str) -> Value {
    let (code, body) = r
        .server
        .call(
            Method::GET,
            &format!("/api/v1/tunnel/{}/commands/{id}?wait=60", r.session),
            Some(&r.tech),
            None,
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    body
}

#[tokio::test]
async fn a_command_an_upload_and_a_terminal_make_progress_at_the_same_time() {
    let r = rig(true, &[]).await.unwrap();
    let pid = r.agent.id().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("upload.bin");
    let seen = dir.path().join("command-saw-the-upload");

    // The command runs until the upload has landed: it is running for the whole transfer.
    let command = start_command(
        &r,
        &format!(
            "n=0; while [ ! -f '{t}' ]; do n=$((n+1)); sleep 0.05; done; echo polled $n > '{s}'; \
             echo command-saw-the-upload",
            t = target.display(),
            s = seen.display()
        ),
    )
    .await;
    let tid = r.open(80, 24, Some("cat")).await.unwrap();
    let mut term = r.attach(&tid, &r.tech, false).await.unwrap();

    let data = pseudo_random(0x9e37_79b9_7f4a_7c15, 48 * MIB);
    let sum: String = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let upload = async {
        let response = r
            .server
            .http()
            .put(r.server.url(&format!(
                "/api/v1/tunnel/{}/files?path={}",
                r.session,
                target.display()
            )))
            .bearer_auth(&r.tech)
            .timeout(Duration::from_secs(600))
            .body(data.clone())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    // While the upload runs: the terminal answers each line, and the agent's threads stay
    // within the bound.
    let interactive = async {
        let mut echoes = Vec::new();
        let mut most_threads = 0;
        for n in 0..20 {
            let line = format!("echo-{n}");
            let sent = Instant::now();
            term.input(format!("{line}\r").as_bytes()).await.unwrap();
            // cooked PTY echo, then cat's copy: the line twice.
            term.read_until(&format!("{line}\r\n"), WAIT).await.unwrap();
            term.read_until(&format!("{line}\r\n"), WAIT).await.unwrap();
            echoes.push(sent.elapsed());
            most_threads = most_threads.max(threads(pid));
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        (echoes, most_threads)
    };
    let ((code, body), (echoes, most_threads)) = tokio::join!(upload, interactive);
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["sha256"], json!(sum), "{body}");
    assert_eq!(std::fs::read(&target).unwrap(), data);
    let slowest = echoes.iter().max().unwrap();
    assert!(
        *slowest < Duration::from_secs(5),
        "a terminal echo took {slowest:?} during the upload: {echoes:?}"
    );
    assert!(
        most_threads <= 1 + BLOCKING_THREADS,
        "the agent ran {most_threads} threads during the upload"
    );

    let result = command_result(&r, &command).await;
    assert_eq!(
        (
            result["status"].clone(),
            result["exit_code"].clone(),
            result["stdout"].clone()
        ),
        (
            json!("completed"),
            json!(0),
            json!("command-saw-the-upload\n")
        ),
        "{result}"
    );
    // The command kept polling while the upload ran (it did not wait for the transfer to
    // end before it could start).
    let polled = std::fs::read_to_string(&seen).unwrap();
    assert!(polled.starts_with("polled "), "{polled}");

    term.input(b"still-here\r").await.unwrap();
    term.read_until("still-here\r\n", WAIT).await.unwrap();
    term.close().await;

    // Idle again: the blocking threads end after their keep-alive (2 s), leaving the one
    // thread that runs every task.
    let idle_since = Instant::now();
    while threads(pid) > 1 {
        assert!(
            idle_since.elapsed() < Duration::from_secs(15),
            "the idle agent still runs {} threads",
            threads(pid)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
