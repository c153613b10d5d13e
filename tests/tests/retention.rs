//! The retention sweep end to end (issue 16): the real `rmm-server` (SQLite and PostgreSQL)
//! and the real `rmm-agent`, with a sweep every second.
//!
//! - By age (`RMM_OUTPUT_RETENTION_SECS`, `RMM_RECORDING_RETENTION_SECS`): of two ended
//!   commands (and two ended recordings) ten seconds apart, exactly the older is pruned once
//!   it is past its age; the newer, which ended before the sweep that pruned the older ran,
//!   is not. A running command's output and a live terminal's recording are untouched
//!   although they started first. Pruned output reads `output_pruned: true`; a pruned
//!   recording is listed `pruned: true` and its download answers 410 `recording_pruned`.
//!   The sweep is audited (`retention_sweep`, with exactly these counts and bytes) and the
//!   audit entries of what it pruned are still there.
//! - By size (`RMM_OUTPUT_RETENTION_BYTES`): three commands of 1200 bytes each under a
//!   3000-byte budget: the oldest alone is pruned, and the sweep's entry says 1 and 1200.
//!
//! Timing: the age is 15 s and the two commands end 10 s apart, so the newer is at most
//! ~5 s from its own age when the older is found pruned; it is checked at once, leaving
//! seconds of slack for a loaded machine (its prune can come no earlier than 15 s after its
//! end, which the checks come well before).

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::terminal::{Rig, rig};
use serde_json::{Value, json};

const AGE_SECS: u64 = 15;
/// How long after the older command ends the newer one ends.
const GAP: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(60);

async fn run(r: &Rig, command: &str) -> String {
    let id = start(r, command).await;
    let ended = wait_command(r, &id, |c| c["status"] != "running").await;
    assert_eq!(ended["status"], "completed", "{ended}");
    id
}

async fn start(r: &Rig, command: &str) -> String {
    let (code, started) = r
        .server
        .call(
            Method::POST,
            &format!("/api/v1/tunnel/{}/command", r.session),
            Some(&r.tech),
            Some(json!({ "command": command, "timeout_secs": 300 })),
        )
        .await
        .unwrap();
    assert_eq!(code, 202, "{started}");
    started["command_id"].as_str().unwrap().to_owned()
}

async fn command(r: &Rig, id: &str) -> Value {
    let path = format!("/api/v1/tunnel/{}/commands/{id}", r.session);
    let (code, body) = r
        .server
        .call(Method::GET, &path, Some(&r.tech), None)
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    body
}

/// Polls the command until `done` holds.
async fn wait_command(r: &Rig, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let body = command(r, id).await;
        if done(&body) {
            return body;
        }
        assert!(
            started.elapsed() < WAIT,
            "command {id} never got there: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn recording(r: &Rig, id: &str) -> Value {
    let (code, body) = r
        .server
        .call(Method::GET, "/api/v1/recordings", Some(&r.tech), None)
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    body["recordings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|rec| rec["recording_id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("recording {id} not listed: {body}"))
}

async fn wait_recording(r: &Rig, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let rec = recording(r, id).await;
        if done(&rec) {
            return rec;
        }
        assert!(
            started.elapsed() < WAIT,
            "recording {id} never got there: {rec}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A terminal running `cat`, ended by DELETE once its recording has its header; its id.
async fn ended_terminal(r: &Rig) -> String {
    let tid = r.open(80, 24, Some("cat")).await.unwrap();
    wait_recording(r, &tid, |rec| rec["size"].as_u64() > Some(0)).await;
    let (code, body) = r.delete(&tid).await.unwrap();
    assert!(code < 300, "{code} {body}");
    wait_recording(r, &tid, |rec| rec["ended_at"].is_string()).await;
    tid
}

async fn download_status(r: &Rig, id: &str) -> (u16, Value) {
    r.server
        .call(
            Method::GET,
            &format!("/api/v1/recordings/{id}"),
            Some(&r.tech),
            None,
        )
        .await
        .unwrap()
}

/// Every `retention_sweep` entry's `key=value` figures, summed.
async fn sweep_totals(r: &Rig) -> (usize, std::collections::BTreeMap<String, u64>) {
    let entries = r.audit("retention_sweep").await.unwrap();
    let mut totals = std::collections::BTreeMap::new();
    for entry in &entries {
        assert!(entry["tech_id"].is_null(), "{entry}");
        for pair in entry["detail"].as_str().unwrap().split_whitespace() {
            let (key, value) = pair.split_once('=').unwrap();
            *totals.entry(key.to_owned()).or_insert(0) += value.parse::<u64>().unwrap();
        }
    }
    (entries.len(), totals)
}

async fn the_sweep_prunes_exactly_what_is_past_its_age(on_sqlite: bool) {
    let age = AGE_SECS.to_string();
    let env = [
        ("RMM_OUTPUT_RETENTION_SECS", age.as_str()),
        ("RMM_RECORDING_RETENTION_SECS", age.as_str()),
        ("RMM_RETENTION_SWEEP_SECS", "1"),
    ];
    let r = rig(on_sqlite, &env).await.unwrap();
    // Started first and still running at the end: never pruned.
    let running = start(&r, "echo running-output; sleep 120").await;
    wait_command(&r, &running, |c| c["stdout"] == "running-output\n").await;
    let live = r.open(80, 24, Some("cat")).await.unwrap();
    wait_recording(&r, &live, |rec| rec["size"].as_u64() > Some(0)).await;

    let older = run(&r, "echo older-output").await;
    let older_cast = ended_terminal(&r).await;
    let older_size = recording(&r, &older_cast).await["size"].as_u64().unwrap();
    tokio::time::sleep(GAP).await;
    let newer = run(&r, "echo newer-output").await;
    let newer_cast = ended_terminal(&r).await;

    let pruned = wait_command(&r, &older, |c| c["output_pruned"] == true).await;
    assert_eq!(
        (pruned["stdout"].as_str(), pruned["stdout_bytes"].as_u64()),
        (Some(""), Some(13))
    );
    // Its raw output reads as pruned too, not as empty.
    let (code, _, body) = r
        .server
        .raw_output(&r.tech, &r.session, &older, "stdout")
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(
        (code, body["code"].as_str()),
        (410, Some("output_pruned")),
        "{body}"
    );
    let pruned_cast = wait_recording(&r, &older_cast, |rec| rec["pruned"] == true).await;
    // At once: the newer ones ended ~10 s after the older ones, so are ~5 s from their age.
    let kept = command(&r, &newer).await;
    assert_eq!(
        (kept["output_pruned"].as_bool(), kept["stdout"].as_str()),
        (Some(false), Some("newer-output\n")),
        "{kept}"
    );
    let (code, _, bytes) = r
        .server
        .raw_output(&r.tech, &r.session, &newer, "stdout")
        .await
        .unwrap();
    assert_eq!((code, bytes.as_slice()), (200, &b"newer-output\n"[..]));
    let kept_cast = recording(&r, &newer_cast).await;
    assert_eq!(kept_cast["pruned"], false, "{kept_cast}");
    assert_eq!(download_status(&r, &newer_cast).await.0, 200);
    let still = command(&r, &running).await;
    assert_eq!(
        (
            still["status"].as_str(),
            still["output_pruned"].as_bool(),
            still["stdout"].as_str()
        ),
        (Some("running"), Some(false), Some("running-output\n")),
        "{still}"
    );
    let live_rec = recording(&r, &live).await;
    assert!(
        live_rec["ended_at"].is_null() && live_rec["pruned"] == false,
        "{live_rec}"
    );

    // The pruned recording is still listed, its size as it was; its download is gone.
    assert_eq!(
        pruned_cast["size"].as_u64(),
        Some(older_size),
        "{pruned_cast}"
    );
    let (code, body) = download_status(&r, &older_cast).await;
    assert_eq!(
        (code, body["code"].as_str()),
        (410, Some("recording_pruned")),
        "{body}"
    );

    // Audited: exactly one command's 13 bytes and one recording, whatever the sweeps.
    let (_, totals) = sweep_totals(&r).await;
    assert_eq!(totals["output_commands"], 1, "{totals:?}");
    assert_eq!(totals["output_bytes"], 13, "{totals:?}");
    assert_eq!(totals["output_by_age"], 1, "{totals:?}");
    assert_eq!(totals["output_by_size"], 0, "{totals:?}");
    assert_eq!(totals["recordings"], 1, "{totals:?}");
    assert_eq!(totals["recording_bytes"], older_size, "{totals:?}");
    // And the audit entries of what was pruned are all still there.
    let ends = r.audit("command_end").await.unwrap();
    assert!(
        ends.iter().any(|e| e["command_id"] == older.as_str()),
        "{ends:?}"
    );
    let closes = r.audit("terminal_close").await.unwrap();
    assert!(closes.len() >= 2, "{closes:?}");
}

#[tokio::test]
async fn the_sweep_prunes_exactly_what_is_past_its_age_sqlite() {
    the_sweep_prunes_exactly_what_is_past_its_age(true).await;
}

#[tokio::test]
async fn the_sweep_prunes_exactly_what_is_past_its_age_postgres() {
    the_sweep_prunes_exactly_what_is_past_its_age(false).await;
}

async fn the_size_limit_prunes_the_oldest_output_first(on_sqlite: bool) {
    let env = [
        ("RMM_OUTPUT_RETENTION_BYTES", "3000"),
        ("RMM_RETENTION_SWEEP_SECS", "1"),
    ];
    let r = rig(on_sqlite, &env).await.unwrap();
    let write = "head -c 1200 /dev/zero | tr '\\0' x";
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(run(&r, write).await);
        // Distinct ends, so "oldest" is one command.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_command(&r, &ids[0], |c| c["output_pruned"] == true).await;
    // 2400 bytes are left, within 3000: no later sweep prunes more.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for id in &ids[1..] {
        let kept = command(&r, id).await;
        assert_eq!(kept["output_pruned"], false, "{kept}");
        assert_eq!(kept["stdout"].as_str().map(str::len), Some(1200), "{id}");
    }
    let (entries, totals) = sweep_totals(&r).await;
    assert_eq!(entries, 1, "{totals:?}");
    assert_eq!(totals["output_commands"], 1, "{totals:?}");
    assert_eq!(totals["output_bytes"], 1200, "{totals:?}");
    assert_eq!(totals["output_by_size"], 1, "{totals:?}");
    assert_eq!(totals["recordings"], 0, "{totals:?}");
}

#[tokio::test]
async fn the_size_limit_prunes_the_oldest_output_first_sqlite() {
    the_size_limit_prunes_the_oldest_output_first(true).await;
}

#[tokio::test]
async fn the_size_limit_prunes_the_oldest_output_first_postgres() {
    the_size_limit_prunes_the_oldest_output_first(false).await;
}
