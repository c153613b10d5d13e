//! Interactive terminals end to end (issue 13): the real `rmm-server` (SQLite, and PostgreSQL
//! for the basic case) and the real `rmm-agent` on this machine, driven over the terminals
//! API and the terminal's WebSocket (tests/src/terminal.rs):
//!
//! - a login shell has a real tty, its size follows resizes, `exit 5` ends it with an exit
//!   frame, close 1000, its removal from the list and an audited exit code;
//! - DELETE and the grace period (nobody attached) kill the process (checked in /proc);
//! - a reattach within the grace period replays what was written while detached;
//! - a second attach of the owner closes the first with 4000;
//! - logging out the socket's token closes it with 1008 within about a second;
//! - closing the tunnel ends its terminals (close 1000 `terminal closed: session_closed`,
//!   the recording finished, the process gone).

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::terminal::{Rig, processes_with, rig, sleep_marker, wait_gone};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);
/// The server's grace period for detached terminals, seconds.
const GRACE_SECS: u64 = 3;
const ENV: &[(&str, &str)] = &[("RMM_TERMINAL_GRACE_SECS", "3")];

async fn sqlite_rig() -> Rig {
    rig(true, ENV).await.unwrap()
}

/// Waits until a process with `marker` in its command line runs.
async fn wait_running(marker: &str) {
    let started = Instant::now();
    while processes_with(marker).is_empty() {
        assert!(started.elapsed() < WAIT, "no process with {marker} started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_login_shell_has_a_tty_follows_resizes_and_exit_5_ends_it(on_sqlite: bool) {
    let r = rig(on_sqlite, ENV).await.unwrap();
    let tid = r.open(80, 24, None).await.unwrap();
    let listed = r.terminals().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let t = &listed[0];
    assert_eq!(
        (
            t["terminal_id"].as_str(),
            t["cols"].as_u64(),
            t["rows"].as_u64()
        ),
        (Some(tid.as_str()), Some(80), Some(24)),
        "{t}"
    );
    assert_eq!(t["term"], "xterm-256color", "{t}");
    assert_eq!(t["attached"], false, "{t}");

    let mut sock = r.attach(&tid, &r.tech, false).await.unwrap();
    assert_eq!(r.terminals().await.unwrap()[0]["attached"], true);

    sock.input(b"tty\r").await.unwrap();
    sock.read_until("/dev/pts/", WAIT).await.unwrap();
    let rest = sock.read_until("\r\n", WAIT).await.unwrap();
    let number = rest.trim_end();
    assert!(
        !number.is_empty() && number.chars().all(|c| c.is_ascii_digit()),
        "tty printed /dev/pts/{rest:?}"
    );

    sock.input(b"stty size\r").await.unwrap();
    sock.read_until("24 80\r\n", WAIT).await.unwrap();
    sock.resize(120, 40).await.unwrap();
    sock.input(b"stty size\r").await.unwrap();
    sock.read_until("40 120\r\n", WAIT).await.unwrap();

    sock.input(b"exit 5\r").await.unwrap();
    let (texts, close) = sock.until_closed(WAIT).await.unwrap();
    assert_eq!(texts, vec![json!({"type": "exit", "exit_code": 5})]);
    assert_eq!(close, Some((1000, "terminal ended".to_owned())));
    assert_eq!(
        r.terminals().await.unwrap(),
        Vec::<serde_json::Value>::new()
    );
    let id = format!("terminal_id={tid}");
    r.wait_audit("terminal_open", &[&id, "command=(login shell)"])
        .await
        .unwrap();
    r.wait_audit("terminal_close", &[&id, "reason=exited", "exit_code=5"])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_login_shell_has_a_tty_follows_resizes_and_exit_5_ends_it_on_sqlite() {
    a_login_shell_has_a_tty_follows_resizes_and_exit_5_ends_it(true).await;
}

#[tokio::test]
async fn a_login_shell_has_a_tty_follows_resizes_and_exit_5_ends_it_on_postgres() {
    a_login_shell_has_a_tty_follows_resizes_and_exit_5_ends_it(false).await;
}

#[tokio::test]
async fn delete_kills_the_terminals_process_group() {
    let r = sqlite_rig().await;
    let marker = sleep_marker();
    let tid = r
        .open(80, 24, Some(&format!("sleep {marker}")))
        .await
        .unwrap();
    wait_running(&marker).await;

    let asked = Instant::now();
    let (code, body) = r.delete(&tid).await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["terminal_id"], tid.as_str(), "{body}");
    assert_eq!(body["reason"], "closed", "{body}");
    // SIGHUP to the process group ends `sleep` at once.
    assert_eq!(body["signal"], 1, "{body}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    wait_gone(&marker, Duration::from_secs(1)).await.unwrap();
    assert!(r.terminals().await.unwrap().is_empty());
    let (code, body) = r.delete(&tid).await.unwrap();
    assert_eq!(
        (code, body["code"].as_str()),
        (404, Some("terminal_not_found"))
    );
    let id = format!("terminal_id={tid}");
    r.wait_audit("terminal_close", &[&id, "reason=closed", "signal=1"])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_detached_terminal_is_killed_when_the_grace_period_ends() {
    let r = sqlite_rig().await;
    let marker = sleep_marker();
    let tid = r
        .open(80, 24, Some(&format!("sleep {marker}")))
        .await
        .unwrap();
    wait_running(&marker).await;
    let sock = r.attach(&tid, &r.tech, false).await.unwrap();
    drop(sock);
    let detached = Instant::now();

    // Within the grace period it lives on, detached.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !processes_with(&marker).is_empty(),
        "killed before the grace period ended"
    );
    let listed = r.terminals().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["attached"], false, "{listed:?}");

    wait_gone(&marker, Duration::from_secs(GRACE_SECS + 5))
        .await
        .unwrap();
    let lived = detached.elapsed();
    assert!(
        lived >= Duration::from_millis(GRACE_SECS * 1000 - 300),
        "gone after {lived:?}"
    );
    let id = format!("terminal_id={tid}");
    r.wait_audit("terminal_close", &[&id, "reason=grace_expired"])
        .await
        .unwrap();
    assert!(r.terminals().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_reattach_within_the_grace_period_replays_what_was_written_while_detached() {
    let r = sqlite_rig().await;
    // The marker is computed by the shell, so only its output can contain it.
    let tid = r
        .open(80, 24, Some("sleep 1; echo MARK-$((6*7))-DONE; exec cat"))
        .await
        .unwrap();
    let first = r.attach(&tid, &r.tech, false).await.unwrap();
    assert!(!first.text().contains("MARK"), "{}", first.text());
    first.close().await;

    tokio::time::sleep(Duration::from_millis(1800)).await;
    let mut sock = r.attach(&tid, &r.tech, false).await.unwrap();
    sock.read_until("MARK-42-DONE\r\n", WAIT).await.unwrap();
    // Still alive: `cat` echoes (the tty's echo, then cat's copy).
    sock.input(b"back-again\r").await.unwrap();
    sock.read_until("back-again\r\nback-again\r\n", WAIT)
        .await
        .unwrap();
    sock.input(&[0x04]).await.unwrap();
    let (texts, close) = sock.until_closed(WAIT).await.unwrap();
    assert_eq!(texts, vec![json!({"type": "exit", "exit_code": 0})]);
    assert_eq!(close, Some((1000, "terminal ended".to_owned())));
}

#[tokio::test]
async fn a_second_attach_of_the_owner_takes_over_with_4000() {
    let r = sqlite_rig().await;
    let tid = r.open(80, 24, Some("cat")).await.unwrap();
    let mut first = r.attach(&tid, &r.tech, false).await.unwrap();
    let mut second = r.attach(&tid, &r.tech, false).await.unwrap();
    let (texts, close) = first.until_closed(WAIT).await.unwrap();
    assert!(texts.is_empty(), "{texts:?}");
    assert_eq!(close, Some((4000, "attached elsewhere".to_owned())));
    second.input(b"taken-over\r").await.unwrap();
    second
        .read_until("taken-over\r\ntaken-over\r\n", WAIT)
        .await
        .unwrap();
    assert_eq!(r.terminals().await.unwrap()[0]["attached"], true);
}

#[tokio::test]
async fn logging_out_the_sockets_token_closes_it_with_1008_within_a_second() {
    let r = sqlite_rig().await;
    let tid = r.open(80, 24, Some("cat")).await.unwrap();
    // A second login of the owner: logging it out leaves the session (opened with the
    // first token) and the terminal alive.
    let second = r.server.login("tina", "tina-password").await.unwrap();
    let mut sock = r.attach(&tid, &second, false).await.unwrap();
    sock.input(b"before\r").await.unwrap();
    sock.read_until("before\r\nbefore\r\n", WAIT).await.unwrap();

    let (code, body) = r
        .server
        .call(Method::POST, "/api/v1/auth/logout", Some(&second), None)
        .await
        .unwrap();
    assert_eq!(code, 204, "{body}");
    let logged_out = Instant::now();
    let (_, close) = sock.until_closed(Duration::from_secs(5)).await.unwrap();
    let took = logged_out.elapsed();
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("revoked"), "{reason}");
    assert!(took < Duration::from_millis(1500), "closed after {took:?}");

    // The terminal lives on for its owner's other token.
    let mut again = r.attach(&tid, &r.tech, false).await.unwrap();
    again.input(b"after\r").await.unwrap();
    again.read_until("after\r\nafter\r\n", WAIT).await.unwrap();
}

#[tokio::test]
async fn closing_the_tunnel_ends_its_terminals_and_finishes_their_recordings() {
    let r = sqlite_rig().await;
    let marker = sleep_marker();
    let tid = r
        .open(80, 24, Some(&format!("sleep {marker}")))
        .await
        .unwrap();
    wait_running(&marker).await;
    let mut sock = r.attach(&tid, &r.tech, false).await.unwrap();

    let (code, body) = r
        .server
        .call(
            Method::POST,
            "/api/v1/tunnel/close",
            Some(&r.tech),
            Some(json!({ "session_id": r.session })),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let (texts, close) = sock.until_closed(WAIT).await.unwrap();
    assert!(texts.is_empty(), "{texts:?}");
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, 1000, "{reason}");
    wait_gone(&marker, Duration::from_secs(6)).await.unwrap();

    let started = Instant::now();
    loop {
        let (code, body) = r
            .server
            .call(Method::GET, "/api/v1/recordings", Some(&r.tech), None)
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        let recording = body["recordings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|rec| rec["recording_id"] == tid.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("recording {tid} not listed: {body}"));
        if recording["ended_at"].is_string() {
            break;
        }
        assert!(started.elapsed() < WAIT, "never finished: {recording}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Why it ended: the tunnel's close, not a lost agent (the agent is still connected).
    let id = format!("terminal_id={tid}");
    let detail = r.wait_audit("terminal_close", &[&id]).await.unwrap();
    assert_eq!(reason, "terminal closed: session_closed", "audit: {detail}");
    assert!(detail.contains("reason=session_closed"), "{detail}");
}

/// A figure of `/proc/<pid>/status` (`VmRSS`), in bytes.
fn proc_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// `/proc/<pid>/stat` after the command name: state, ppid, ..., as fields.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The process named `name` (its `comm`) below `ancestor`.
fn descendant_named(ancestor: u32, name: &str) -> Option<u32> {
    let parent = |pid: u32| stat_fields(pid)?.get(1)?.parse::<u32>().ok();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .find(|pid| {
            let mut at = *pid;
            for _ in 0..16 {
                match parent(at) {
                    Some(p) if p == ancestor => return true,
                    Some(p) if p > 1 => at = p,
                    _ => return false,
                }
            }
            false
        })
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let fields = stat_fields(pid).unwrap();
    // After the name: state is field 3 of the line, utime 14 and stime 15.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn a_client_that_stops_reading_holds_the_agent_not_the_servers_memory() {
    const MIB: u64 = 1024 * 1024;
    let r = sqlite_rig().await;
    let server = r.server.pid().unwrap();
    let agent = r.agent.id().unwrap();
    let tid = r.open(80, 24, None).await.unwrap();
    let mut sock = r.attach(&tid, &r.tech, false).await.unwrap();
    let before = proc_bytes(server, "VmRSS");
    sock.input(b"yes\r").await.unwrap();
    while sock.output.len() < 2 * 1024 * 1024 {
        sock.next(WAIT).await.unwrap().expect("yes keeps writing");
    }

    // Stop reading for 10 s: sample the server's memory and `yes`'s CPU time meanwhile.
    let paused_at = sock.output.len();
    let yes = descendant_named(agent, "yes").expect("yes runs under the agent");
    let mut peak = before;
    let started = Instant::now();
    let mut ticks_at_3s = None;
    let mut ticks_at_9s = None;
    while started.elapsed() < Duration::from_secs(10) {
        peak = peak.max(proc_bytes(server, "VmRSS"));
        let t = started.elapsed();
        if t >= Duration::from_secs(3) && ticks_at_3s.is_none() {
            ticks_at_3s = Some(cpu_ticks(yes));
        }
        if t >= Duration::from_secs(9) && ticks_at_9s.is_none() {
            ticks_at_9s = Some(cpu_ticks(yes));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let grew = peak.saturating_sub(before);
    let yes_ticks = ticks_at_9s.unwrap() - ticks_at_3s.unwrap();
    eprintln!(
        "flow control: server RSS before {} KiB, peak {} KiB (+{} KiB); yes used {yes_ticks} ticks in 6 s of the pause",
        before / 1024,
        peak / 1024,
        grew / 1024
    );
    assert!(grew < 32 * MIB, "the server grew by {grew} bytes");
    // Blocked on its terminal: a few ticks at most (a running `yes` uses ~100 per second).
    assert!(
        yes_ticks < 60,
        "yes used {yes_ticks} ticks while nobody read"
    );

    // Resume: interrupt, then a command whose output differs from its echo.
    let resumed = Instant::now();
    sock.input(&[0x03]).await.unwrap();
    let drain_until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < drain_until {
        sock.next(Duration::from_millis(50)).await.unwrap();
    }
    sock.input(b"echo alive-$((100+23))\r").await.unwrap();
    sock.read_until("alive-123", WAIT).await.unwrap();
    let backlog = (sock.output.len() - paused_at) as u64;
    eprintln!(
        "flow control: {backlog} bytes arrived after the pause; alive after {:?}",
        resumed.elapsed()
    );
    assert!(backlog < 16 * MIB, "{backlog} bytes were in flight");
    assert!(resumed.elapsed() < Duration::from_secs(5));
}
