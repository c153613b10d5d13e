//! Admission control of agent handshakes, end to end against the real `rmm-server` (SQLite)
//! and the real `rmm-agent`: beyond `RMM_AGENT_HANDSHAKES` running and
//! `RMM_AGENT_HANDSHAKE_QUEUE` waiting, an agent upgrade is answered `503 server_busy` with
//! `Retry-After`, and a real agent so answered waits for the hint (with jitter) and connects
//! once the server has room.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmm_e2e::agent::ScriptedAgent;
use rmm_e2e::pg::sqlite_url;
use rmm_e2e::real_agent::agent_command;
use rmm_e2e::server::TestServer;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Child;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// Keeps the server's handshakes busy until `stop`: `tasks` loops, each connecting with
/// `key` and dropping the connection at once.
fn flood(server: &TestServer, key: &str, tasks: usize, stop: Arc<AtomicBool>) {
    for _ in 0..tasks {
        let (url, key, stop) = (server.ws_url(), key.to_owned(), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = ScriptedAgent::connect(&url, Some(&key)).await;
            }
        });
    }
}

/// The status, `Retry-After` and body of a refused upgrade with `key`; `None` if upgraded.
async fn refusal(server: &TestServer, key: &str) -> Option<(u16, Option<String>, String)> {
    let mut request = server.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => None,
        Err(WsError::Http(response)) => Some((
            response.status().as_u16(),
            response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(e) => panic!("handshake failed without an HTTP answer: {e}"),
    }
}

#[tokio::test]
async fn handshakes_beyond_the_limit_are_shed_with_retry_after_and_a_real_agent_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RMM_AGENT_HANDSHAKES", "1"),
        ("RMM_AGENT_HANDSHAKE_QUEUE", "0"),
    ];
    let server = TestServer::start(&sqlite_url(dir.path()), &env)
        .await
        .unwrap();
    let token = server.admin_token().await.unwrap();
    let (_, holder_key) = server.register_agent(&token, "holder").await.unwrap();
    let (agent_id, agent_key) = server.register_agent(&token, "real").await.unwrap();

    // Many handshakes at once against one slot and no queue: those that find the slot
    // taken are shed at once, with the hint and the code.
    let attempts = (0..40).map(|_| refusal(&server, &holder_key));
    let answers = futures_util::future::join_all(attempts).await;
    let shed: Vec<_> = answers.iter().flatten().collect();
    assert!(shed.len() >= 10, "{} of 40 shed", shed.len());
    for (status, retry_after, body) in &shed {
        assert_eq!(*status, 503, "{body}");
        // The hint grows with the handshakes shed this second, from 1 s up to 10 s.
        let hint: u64 = retry_after.as_deref().unwrap().parse().unwrap();
        assert!((1..=10).contains(&hint), "{hint}");
        assert!(body.contains(r#""code":"server_busy""#), "{body}");
    }

    // A real agent started while the handshakes are flooded is shed too, and comes back
    // after the server's hint; once the flood stops it connects.
    let stop = Arc::new(AtomicBool::new(false));
    flood(&server, &holder_key, 24, Arc::clone(&stop));
    let mut shed_agent = None;
    for _ in 0..5 {
        let (agent, lines) = spawn_logged_agent(&server, &agent_key);
        let started = Instant::now();
        while hint(&lines).is_none() && started.elapsed() < Duration::from_secs(8) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(hint) = hint(&lines) {
            shed_agent = Some((agent, hint));
            break;
        }
        // It won the slot before being shed (the flood is not a lock): try again.
        drop(agent);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (mut agent, hint) = shed_agent.expect("a real agent shed with a hint");
    stop.store(true, Ordering::Relaxed);
    let shed_at = Instant::now();
    // It comes back no sooner than the hint, and within twice the hint (plus slack).
    let hint = Duration::from_secs(hint);
    while !connected(&server, &token, &agent_id).await {
        assert!(
            shed_at.elapsed() < hint * 2 + Duration::from_secs(10),
            "not back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back = shed_at.elapsed();
    assert!(
        back + Duration::from_millis(300) >= hint,
        "back after {back:?}, hint {hint:?}"
    );
    agent.kill().await.unwrap();
}

async fn connected(server: &TestServer, token: &str, agent_id: &str) -> bool {
    let (_, agents) = server
        .call(reqwest::Method::GET, "/api/v1/agents", Some(token), None)
        .await
        .unwrap();
    agents
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["agent_id"] == agent_id && a["connected"] == true)
}

type Lines = Arc<Mutex<Vec<String>>>;

/// A real `rmm-agent` whose log lines are collected.
fn spawn_logged_agent(server: &TestServer, key: &str) -> (Child, Lines) {
    let mut agent = agent_command(server, key, &[]).unwrap();
    agent.env("RUST_LOG", "warn").stderr(Stdio::piped());
    let mut agent = agent.spawn().unwrap();
    let lines = Lines::default();
    let mut stderr = BufReader::new(agent.stderr.take().unwrap()).lines();
    tokio::spawn({
        let lines = Arc::clone(&lines);
        async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                eprintln!("agent: {line}");
                lines.lock().unwrap().push(line);
            }
        }
    });
    (agent, lines)
}

/// The hint (seconds) of the first time the agent said the server was busy and it would
/// come back after the server's hint.
fn hint(lines: &Lines) -> Option<u64> {
    lines.lock().unwrap().iter().find_map(|l| {
        if !l.contains("server busy (HTTP 503)") {
            return None;
        }
        let value = l.split("retry_after_secs=").nth(1)?;
        value
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}
