//! The real `rmm-agent` end to end: the real `rmm-server` on a free port, a fresh PostgreSQL
//! database from testcontainers, and the agent binary as a child process configured through
//! its environment, exactly as an MSP would run it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::pg::fresh_database;
use rmm_e2e::real_agent::agent_command;
use rmm_e2e::server::{TestServer, binary};
use serde_json::{Value, json};
use tokio::process::Child;

const WAIT: Duration = Duration::from_secs(10);

struct World {
    server: TestServer,
    admin: String,
    agent_id: String,
    agent_key: String,
}

async fn world() -> World {
    let db = fresh_database().await.expect("test database");
    let server = TestServer::start(&db, &[]).await.expect("server");
    let admin = server.admin_token().await.expect("admin login");
    let (agent_id, agent_key) = server
        .register_agent(&admin, "web-01")
        .await
        .expect("agent");
    World {
        server,
        admin,
        agent_id,
        agent_key,
    }
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_owned()
}

impl World {
    fn spawn_agent(&self) -> Child {
        agent_command(&self.server, &self.agent_key, &[])
            .expect("agent binary")
            .spawn()
            .expect("agent starts")
    }

    async fn agent_listing(&self) -> Value {
        let (status, body) = self
            .server
            .call(Method::GET, "/api/v1/agents", Some(&self.admin), None)
            .await
            .expect("agents");
        assert_eq!(status, 200, "{body}");
        body.as_array()
            .and_then(|a| a.iter().find(|a| a["agent_id"] == self.agent_id.as_str()))
            .cloned()
            .expect("the agent is listed")
    }

    /// Polls the listing until `check` holds; panics with the last listing after `wait`.
    async fn wait_listing(&self, wait: Duration, what: &str, check: impl Fn(&Value) -> bool) {
        let started = Instant::now();
        loop {
            let listed = self.agent_listing().await;
            if check(&listed) {
                return;
            }
            assert!(
                started.elapsed() < wait,
                "agent never {what} within {wait:?}: {listed}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_connected(&self, wait: Duration) {
        self.wait_listing(wait, "listed as connected", |a| {
            a["connected"] == json!(true)
        })
        .await;
    }

    async fn open(&self, token: &str) -> (u16, Value) {
        self.server
            .call(
                Method::POST,
                "/api/v1/tunnel/open",
                Some(token),
                Some(json!({ "agent_id": self.agent_id })),
            )
            .await
            .expect("open")
    }

    async fn open_active(&self, token: &str) -> String {
        let (code, body) = self.open(token).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["status"], "active");
        body["session_id"].as_str().expect("session_id").to_owned()
    }

    async fn status(&self, token: &str, session: &str) -> Value {
        let (code, body) = self
            .server
            .call(
                Method::GET,
                &format!("/api/v1/tunnel/status/{session}"),
                Some(token),
                None,
            )
            .await
            .expect("status");
        assert_eq!(code, 200, "{body}");
        body
    }

    async fn wait_closed(&self, token: &str, session: &str) -> Value {
        let started = Instant::now();
        loop {
            let body = self.status(token, session).await;
            if body["status"] == "closed" {
                return body;
            }
            assert!(started.elapsed() < WAIT, "session never closed: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn the_agent_connects_and_is_listed_with_the_facts_of_its_heartbeat() {
    let w = world().await;
    let _agent = w.spawn_agent();
    let hostname = local_hostname();
    w.wait_listing(WAIT, "listed with its host facts", |a| {
        a["connected"] == json!(true) && a["hostname"] == hostname.as_str()
    })
    .await;
    let listed = w.agent_listing().await;
    assert_eq!(listed["mode"], "heartbeat");
    assert_eq!(listed["os"], "linux");
    assert_eq!(listed["agent_version"], env!("CARGO_PKG_VERSION"));
    assert!(listed["uptime_secs"].as_u64().is_some(), "{listed}");
    assert!(listed["last_seen"].is_string(), "{listed}");
}

#[tokio::test]
async fn tunnels_open_and_close_through_the_agent_and_a_second_tech_gets_409() {
    let w = world().await;
    let _agent = w.spawn_agent();
    w.wait_connected(WAIT).await;
    let alice = w.server.tech_token("alice").await.expect("alice");
    let bob = w.server.tech_token("bob").await.expect("bob");

    let session = w.open_active(&alice).await;
    assert_eq!(w.agent_listing().await["mode"], "tunnel");
    let (code, body) = w.open(&bob).await;
    assert_eq!(code, 409, "{body}");
    // The first tunnel is untouched by the refused open.
    assert_eq!(w.status(&alice, &session).await["status"], "active");

    let (code, body) = w
        .server
        .call(
            Method::POST,
            "/api/v1/tunnel/close",
            Some(&alice),
            Some(json!({ "session_id": session })),
        )
        .await
        .expect("close");
    assert_eq!(code, 200, "{body}");
    let closed = w.wait_closed(&alice, &session).await;
    assert_eq!(closed["close_reason"], "closed_by_owner", "{closed}");
    w.wait_listing(WAIT, "back in heartbeat mode", |a| a["mode"] == "heartbeat")
        .await;

    // The agent is in heartbeat mode again: the next tech's open succeeds.
    let next = w.open_active(&bob).await;
    assert_ne!(next, session);
}

#[tokio::test]
async fn a_killed_agent_closes_its_session_and_is_listed_disconnected_within_seconds() {
    let w = world().await;
    let mut agent = w.spawn_agent();
    w.wait_connected(WAIT).await;
    let session = w.open_active(&w.admin).await;

    agent.kill().await.expect("SIGKILL");
    let closed = w.wait_closed(&w.admin, &session).await;
    assert_eq!(closed["close_reason"], "agent_disconnected", "{closed}");
    w.wait_listing(Duration::from_secs(5), "listed as disconnected", |a| {
        a["connected"] == json!(false)
    })
    .await;
}

#[tokio::test]
async fn the_agent_comes_back_by_itself_after_a_server_restart() {
    let mut w = world().await;
    let _agent = w.spawn_agent();
    w.wait_connected(WAIT).await;

    w.server.kill().await.expect("kill server");
    // Down for a while, so the agent's dials fail and its backoff grows before the restart.
    tokio::time::sleep(Duration::from_secs(3)).await;
    w.server.restart().await.expect("restart server");
    let restarted = Instant::now();
    // Tokens survive a restart (same secret), so the admin's keeps working.
    w.wait_connected(Duration::from_secs(20)).await;
    note_reconnect(restarted.elapsed());
    let session = w.open_active(&w.admin).await;
    assert_eq!(w.status(&w.admin, &session).await["status"], "active");
}

/// The reconnect time, visible with `--nocapture`: useful when tuning the backoff.
fn note_reconnect(elapsed: Duration) {
    eprintln!("agent reconnected {elapsed:?} after the server came back");
}

#[tokio::test]
async fn sigterm_closes_the_socket_cleanly_and_exits_zero() {
    let w = world().await;
    let mut agent = w.spawn_agent();
    w.wait_connected(WAIT).await;
    let session = w.open_active(&w.admin).await;

    let pid = agent.id().expect("pid").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(sent.success());
    let exit = tokio::time::timeout(WAIT, agent.wait())
        .await
        .expect("agent exits after SIGTERM")
        .expect("wait");
    assert_eq!(exit.code(), Some(0));
    let closed = w.wait_closed(&w.admin, &session).await;
    assert_eq!(closed["close_reason"], "agent_disconnected", "{closed}");
    w.wait_listing(Duration::from_secs(5), "listed as disconnected", |a| {
        a["connected"] == json!(false)
    })
    .await;
}

#[tokio::test]
async fn a_wrong_key_never_connects_and_once_exits_non_zero_saying_why() {
    let w = world().await;
    let _retrying = agent_command(&w.server, "not-the-agent-key", &[])
        .expect("agent binary")
        .spawn()
        .expect("agent starts");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let listed = w.agent_listing().await;
        assert_eq!(listed["connected"], json!(false), "{listed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let out = agent_command(&w.server, "not-the-agent-key", &["--once"])
        .expect("agent binary")
        .stderr(Stdio::piped())
        .spawn()
        .expect("agent starts")
        .wait_with_output();
    let out = tokio::time::timeout(WAIT, out)
        .await
        .expect("--once exits promptly")
        .expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("server rejected the agent key"),
        "stderr: {stderr}"
    );
    assert_eq!(w.agent_listing().await["connected"], json!(false));
}

#[tokio::test]
async fn once_exits_non_zero_when_the_server_is_unreachable() {
    let w = world().await;
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let out = agent_command(&w.server, &w.agent_key, &["--once"])
        .expect("agent binary")
        .env("RMM_SERVER", format!("ws://{closed_port}"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("agent starts")
        .wait_with_output();
    let out = tokio::time::timeout(WAIT, out)
        .await
        .expect("--once exits promptly")
        .expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("cannot connect"), "stderr: {stderr}");
}

/// A setting the agent cannot use ends it with one line naming the cause and exit code 1,
/// never a backtrace, even with `RUST_BACKTRACE=1`. No server is needed: it stops before it
/// dials.
#[tokio::test]
async fn a_bad_setting_exits_1_with_one_line_naming_the_cause_and_no_backtrace() {
    let agent = binary("rmm-agent").expect("agent binary");
    let dir = tempfile::tempdir().expect("temporary directory");
    let missing = dir.path().join("agent.toml");
    let missing = missing.to_str().expect("a UTF-8 path");
    let read_missing = format!("cannot read the config file {missing}");
    // (environment, arguments, what the one error line must contain)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
    let cases: [Case; 3] = [
        (
            &[
                ("RMM_SERVER", "ftp://rmm.example.com"),
                ("RMM_AGENT_KEY", "k"),
            ],
            &[],
            "invalid server URL",
        ),
        (
            &[("RMM_SERVER", "https://rmm.example.com")],
            &[],
            "no agent key",
        ),
        (&[], &["--config", missing], &read_missing),
    ];
    for (env, args, cause) in cases {
        let out = tokio::process::Command::new(&agent)
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .output();
        let out = tokio::time::timeout(WAIT, out)
            .await
            .expect("the agent exits promptly")
            .expect("output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cause}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line for {cause}: {stderr}");
        assert!(
            stderr.starts_with(&format!("rmm-agent: error: {cause}")),
            "stderr: {stderr}"
        );
        assert!(
            !stderr.to_lowercase().contains("backtrace"),
            "stderr: {stderr}"
        );
    }
}
