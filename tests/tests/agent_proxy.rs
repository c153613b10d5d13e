//! The agent behind an HTTP proxy (issue 16, point 6), on the real binaries and Debian's
//! `tinyproxy`: with `HTTP_PROXY` the agent's WebSocket goes through `CONNECT` (with the
//! proxy's credentials) and a command runs through the tunnel; with `NO_PROXY` naming the
//! server it goes direct; a `wss://` server is reached through `HTTPS_PROXY` with TLS inside
//! the tunnel; a proxy that refuses gives a log line naming it (never its
//! password) and the status, and the agent keeps retrying.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::pg::sqlite_url;
use rmm_e2e::pki::TestCa;
use rmm_e2e::real_agent::agent_command;
use rmm_e2e::server::{StartOptions, TestServer};
use serde_json::json;
use tokio::io::AsyncBufReadExt as _;
use tokio::process::{Child, Command};

const USER: &str = "rmm";
const PASSWORD: &str = "pr0xy-s3cret";

/// A tinyproxy of this test's own, on a free loopback port, logging to its temp folder.
struct Tinyproxy {
    port: u16,
    log: PathBuf,
    _child: Child,
}

impl Tinyproxy {
    /// `extra`: config lines (`ConnectPort`, `BasicAuth`).
    async fn start(dir: &Path, extra: &[String]) -> Self {
        let exe = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!(
                    "tinyproxy not found: install it (`apt-get install tinyproxy`; scripts/test.sh's ensure_test_tools does)"
                )
            });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("tinyproxy.log");
        let conf = dir.join("tinyproxy.conf");
        let mut text = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Info\nPidFile \"{}\"\nMaxClients 20\nAllow 127.0.0.1\n",
            log.display(),
            dir.join("tinyproxy.pid").display()
        );
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&conf, text).unwrap();
        let child = Command::new(exe)
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "tinyproxy did not listen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            port,
            log,
            _child: child,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((user, password)) => format!("http://{user}:{password}@127.0.0.1:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }
}

/// The agent, with `env` added, its log kept.
fn agent(server: &TestServer, key: &str, env: &[(&str, String)]) -> (Child, Arc<Mutex<String>>) {
    let mut cmd = agent_command(server, key, &[]).unwrap();
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RMM_AGENT_BACKOFF_CAP_SECS", "2")
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let kept = Arc::clone(&log);
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("agent: {line}");
            kept.lock().unwrap().push_str(&line);
            kept.lock().unwrap().push('\n');
        }
    });
    (child, log)
}

async fn wait_for(log: &Mutex<String>, needles: &[&str], count: usize) -> String {
    let started = Instant::now();
    loop {
        let text = log.lock().unwrap().clone();
        let found = text
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count();
        if found >= count {
            return text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no {count} agent log lines with {needles:?}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A server on SQLite in `dir`, its admin token, and a registered agent `(id, key)`.
async fn server(dir: &Path) -> (TestServer, String, String, String) {
    let server = TestServer::start(&sqlite_url(dir), &[]).await.unwrap();
    let admin = server.admin_token().await.unwrap();
    let (id, key) = server.register_agent(&admin, "behind-proxy").await.unwrap();
    (server, admin, id, key)
}

#[tokio::test]
async fn the_agent_connects_through_the_proxy_with_its_credentials_and_a_command_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin, agent_id, key) = server(dir.path()).await;
    let sp = server.addr.port();
    let proxy = Tinyproxy::start(
        dir.path(),
        &[
            format!("ConnectPort {sp}"),
            format!("BasicAuth {USER} {PASSWORD}"),
        ],
    )
    .await;
    let (_agent, log) = agent(
        &server,
        &key,
        &[("HTTP_PROXY", proxy.url(Some((USER, PASSWORD))))],
    );
    server.wait_connected(&admin, &agent_id).await.unwrap();
    let connect = format!("CONNECT 127.0.0.1:{sp} HTTP/1.1");
    assert!(
        proxy.log_text().contains(&connect),
        "the proxy saw no {connect}: {}",
        proxy.log_text()
    );
    let text = wait_for(&log, &["connecting through the HTTP proxy", "rmm:***@"], 1).await;
    assert!(!text.contains(PASSWORD), "the password is logged: {text}");

    // A command through the tunnel, which runs over the proxy's connection.
    let tech = server.tech_token("tina").await.unwrap();
    let (code, opened) = server
        .call(
            Method::POST,
            "/api/v1/tunnel/open",
            Some(&tech),
            Some(json!({ "agent_id": agent_id })),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{opened}");
    let session = opened["session_id"].as_str().unwrap();
    let (code, started) = server
        .call(
            Method::POST,
            &format!("/api/v1/tunnel/{session}/command"),
            Some(&tech),
            Some(json!({ "command": "echo via-proxy-$((6*7))" })),
        )
        .await
        .unwrap();
    assert_eq!(code, 202, "{started}");
    let id = started["command_id"].as_str().unwrap();
    let (code, result) = server
        .call(
            Method::GET,
            &format!("/api/v1/tunnel/{session}/commands/{id}?wait=30"),
            Some(&tech),
            None,
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{result}");
    assert_eq!(
        (result["exit_code"].clone(), result["stdout"].clone()),
        (json!(0), json!("via-proxy-42\n")),
        "{result}"
    );
}

#[tokio::test]
async fn no_proxy_naming_the_server_connects_directly() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin, agent_id, key) = server(dir.path()).await;
    let proxy = Tinyproxy::start(dir.path(), &[]).await;
    let (_agent, log) = agent(
        &server,
        &key,
        &[
            ("HTTPS_PROXY", proxy.url(None)),
            ("http_proxy", proxy.url(None)),
            ("NO_PROXY", "example.com, 127.0.0.1".to_owned()),
        ],
    );
    server.wait_connected(&admin, &agent_id).await.unwrap();
    wait_for(&log, &["NO_PROXY exempts the server", "127.0.0.1"], 1).await;
    // (The readiness probe's connection is logged as a "Connect"; it never sends a request.)
    let seen = proxy.log_text();
    assert!(
        !seen.contains("Request (file descriptor") && !seen.contains("CONNECT 127.0.0.1"),
        "the proxy was used: {seen}"
    );
}

#[tokio::test]
async fn a_proxy_that_refuses_gives_a_log_line_naming_it_and_the_status_and_the_agent_retries() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _admin, _agent_id, key) = server(dir.path()).await;
    let sp = server.addr.port();

    // Only port 443 may be CONNECTed to: 403.
    let forbidding = Tinyproxy::start(dir.path(), &["ConnectPort 443".to_owned()]).await;
    let (mut agent1, log) = agent(
        &server,
        &key,
        &[("HTTP_PROXY", forbidding.url(Some((USER, PASSWORD))))],
    );
    let shown = format!("proxy http://{USER}:***@127.0.0.1:{}", forbidding.port);
    let text = wait_for(
        &log,
        &[
            "cannot connect",
            &shown,
            &format!("refused CONNECT 127.0.0.1:{sp}"),
            "HTTP 403",
        ],
        2,
    )
    .await;
    assert!(!text.contains(PASSWORD), "the password is logged: {text}");
    agent1.kill().await.unwrap();

    // Credentials required and none given: 407.
    let sub = dir.path().join("auth");
    std::fs::create_dir(&sub).unwrap();
    let auth = Tinyproxy::start(&sub, &[format!("BasicAuth {USER} {PASSWORD}")]).await;
    let (_agent2, log) = agent(&server, &key, &[("HTTP_PROXY", auth.url(None))]);
    wait_for(
        &log,
        &[&format!("proxy http://127.0.0.1:{}", auth.port), "HTTP 407"],
        1,
    )
    .await;

    // Nobody listening there: unreachable, named.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_agent3, log) = agent(
        &server,
        &key,
        &[("ALL_PROXY", format!("http://127.0.0.1:{closed}"))],
    );
    wait_for(
        &log,
        &[&format!("cannot reach proxy http://127.0.0.1:{closed}")],
        1,
    )
    .await;
}

#[tokio::test]
async fn a_wss_server_is_reached_through_https_proxy_with_tls_over_the_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path()).unwrap();
    let cert = ca.server_cert(dir.path(), "rmm-server").unwrap();
    let options = StartOptions {
        tls_ca_pem: Some(ca.pem()),
        ..StartOptions::default()
    };
    let env = [
        ("RMM_TLS_CERT", cert.cert_file.to_str().unwrap()),
        ("RMM_TLS_KEY", cert.key_file.to_str().unwrap()),
    ];
    let server = TestServer::start_with(&sqlite_url(dir.path()), &env, options)
        .await
        .unwrap();
    let admin = server.admin_token().await.unwrap();
    let (agent_id, key) = server
        .register_agent(&admin, "tls-behind-proxy")
        .await
        .unwrap();
    let sp = server.addr.port();
    let proxy = Tinyproxy::start(dir.path(), &[format!("ConnectPort {sp}")]).await;
    // HTTP_PROXY names a dead port: a wss:// server must use HTTPS_PROXY.
    let (_agent, _log) = agent(
        &server,
        &key,
        &[
            ("RMM_SERVER", format!("https://localhost:{sp}")),
            ("RMM_AGENT_CA_FILE", ca.ca_file().display().to_string()),
            ("HTTPS_PROXY", proxy.url(None)),
            ("HTTP_PROXY", "http://127.0.0.1:9".to_owned()),
        ],
    );
    server.wait_connected(&admin, &agent_id).await.unwrap();
    let connect = format!("CONNECT localhost:{sp} HTTP/1.1");
    assert!(
        proxy.log_text().contains(&connect),
        "the proxy saw no {connect}: {}",
        proxy.log_text()
    );
}
