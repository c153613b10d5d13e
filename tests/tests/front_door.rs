//! The front door under attack, end to end against the real `rmm-server` on SQLite: no
//! unauthenticated client may exhaust it.
//!
//! 1. Bounded requests: a JSON body over the limit is answered 413 before it is read (the
//!    server's peak RSS stays put under three 64 MiB bodies); a thousand half-sent requests,
//!    at a soft open-file limit of 1024, neither keep a fresh request or an agent out nor
//!    stay open past the header-read timeout; an open-file limit too low for the connection
//!    cap refuses the start, saying how to raise it.
//! 2. Password hashing bounded: 200 concurrent logins keep RSS under 256 MiB, are answered
//!    200 or 503 with `Retry-After`, and the server keeps answering meanwhile.
//! 3. Login throttling per username and per client address (`X-Forwarded-For` believed only
//!    from `RMM_TRUSTED_PROXIES`), and the WARN lines of failed logins, 401s and 403s.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::agent::ScriptedAgent;
use rmm_e2e::pg::sqlite_url;
use rmm_e2e::server::{ADMIN_PASSWORD, JWT_SECRET, StartOptions, TestServer, binary};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const MIB: u64 = 1024 * 1024;
const LOGIN: &str = "/api/v1/auth/login";

async fn server(env: &[(&str, &str)]) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let options = StartOptions {
        capture_log: true,
        ..StartOptions::default()
    };
    let server = TestServer::start_with(&sqlite_url(dir.path()), env, options)
        .await
        .unwrap();
    (dir, server)
}

/// A figure of `/proc/<pid>/status` (`VmHWM`, `VmRSS`), in MiB.
fn proc_mib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024
}

/// Reads what the server sends until it closes or `within` passes; the status and the body.
async fn response(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    within: Duration,
) -> (u16, Value) {
    let mut data = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut data)).await;
    let text = String::from_utf8_lossy(&data);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

fn json_head(length: &str) -> String {
    format!(
        "POST {LOGIN} HTTP/1.1\r\nHost: rmm\r\nContent-Type: application/json\r\n{length}\r\n\r\n"
    )
}

#[tokio::test]
async fn json_bodies_over_the_limit_are_413_and_not_read() {
    let (_dir, server) = server(&[]).await;
    let pid = server.pid().unwrap();

    // Declared too large: answered at once, before the body is sent.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let head = json_head(&format!("Content-Length: {}", 64 * MIB));
    s.write_all(format!("{head}{{\"username\":").as_bytes())
        .await
        .unwrap();
    let (status, body) = response(&mut s, Duration::from_secs(5)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "payload_too_large");

    // Chunked, no length: read up to the limit, then refused.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut request = json_head("Transfer-Encoding: chunked").into_bytes();
    for _ in 0..32 {
        request.extend_from_slice(format!("10000\r\n{}\r\n", " ".repeat(0x10000)).as_bytes());
    }
    s.write_all(&request).await.unwrap();
    let (status, body) = response(&mut s, Duration::from_secs(5)).await;
    assert_eq!(status, 413, "{body}");

    // Three 64 MiB bodies at once: the server stops reading each early; its memory stays.
    let floods: Vec<_> = (0..3)
        .map(|_| tokio::spawn(flood_json_body(server.addr, 64 * MIB)))
        .collect();
    for flood in floods {
        let sent = flood.await.unwrap();
        assert!(
            sent < 16 * MIB,
            "the server read {} MiB of a refused body",
            sent / MIB
        );
    }
    let peak = proc_mib(pid, "VmHWM");
    assert!(peak < 128, "peak RSS {peak} MiB under three 64 MiB bodies");

    // A body within the limit is still read and parsed.
    let padding = "x".repeat(512 * 1024);
    let (status, body) = server
        .call(
            Method::POST,
            LOGIN,
            None,
            Some(json!({"username": "admin", "password": padding})),
        )
        .await
        .unwrap();
    assert_eq!(status, 401, "{body}");
}

/// Sends a chunked JSON body of `total` bytes until the server stops taking it; bytes sent.
async fn flood_json_body(addr: SocketAddr, total: u64) -> u64 {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let reader = tokio::spawn(async move { response(&mut rd, Duration::from_secs(30)).await });
    wr.write_all(json_head("Transfer-Encoding: chunked").as_bytes())
        .await
        .unwrap();
    let chunk = format!("10000\r\n{}\r\n", "a".repeat(0x10000)).into_bytes();
    let mut sent = 0;
    while sent < total {
        let write = tokio::time::timeout(Duration::from_secs(5), wr.write_all(&chunk)).await;
        if !matches!(write, Ok(Ok(()))) {
            break;
        }
        sent += 0x10000;
    }
    let _ = wr.write_all(b"0\r\n\r\n").await;
    let (status, _) = reader.await.unwrap();
    assert!(status == 413 || status == 0, "answered {status}");
    sent
}

/// Raises this process's soft open-file limit to `want` (or its hard limit).
fn raise_own_open_files(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard).unwrap();
    }
}

#[tokio::test]
async fn slowloris_neither_keeps_others_out_nor_outlasts_the_header_timeout() {
    const SLOW: usize = 1000;
    const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
    raise_own_open_files(SLOW as u64 + 512);
    let dir = tempfile::tempdir().unwrap();
    let options = StartOptions {
        capture_log: true,
        ..StartOptions::default()
    };
    let env = [("RMM_HEADER_READ_TIMEOUT_SECS", "3"), ("RUST_LOG", "info")];
    let server = TestServer::start_with_soft_nofile(&sqlite_url(dir.path()), &env, options, 1024)
        .await
        .unwrap();
    let admin = server.admin_token().await.unwrap();
    let (_, agent_key) = server.register_agent(&admin, "probe").await.unwrap();

    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(json_head("X-Slow: 1").trim_end().as_bytes())
            .await
            .unwrap();
        slow.push(s);
    }
    // Each connection's header deadline runs from its own start: the last one's bounds all.
    let last_started = Instant::now();
    // A fresh client and an agent get in at once.
    let fresh = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let asked = Instant::now();
    let health = fresh.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    let ws_url = server.ws_url();
    let connect = ScriptedAgent::connect(&ws_url, Some(&agent_key));
    let agent = tokio::time::timeout(Duration::from_secs(1), connect).await;
    assert!(matches!(agent, Ok(Ok(_))), "the agent could not connect");

    // Trickling another header line does not extend the deadline: all are closed by it.
    for s in &mut slow {
        let _ = s.write_all(b"\r\nX-More: 1").await;
    }
    let deadline = last_started + HEADER_TIMEOUT + Duration::from_secs(5);
    let mut open = 0;
    for mut s in slow {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut buf = [0u8; 256];
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {}
            Ok(Ok(_)) | Err(_) => open += 1,
        }
    }
    assert_eq!(
        open, 0,
        "{open} half-sent requests outlived the header timeout"
    );
    // The effective cap is logged at start, the soft limit raised for it.
    let cap = server
        .wait_for_log(
            &["connection cap", "max_connections="],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(cap.contains("raised_from=1024"), "{cap}");
}

/// Runs `rmm-server` under `ulimit` (`limits`: arguments to sh's `ulimit`) with `env`; its
/// exit status and stderr, or panics when it is still running after 30 s.
async fn start_under_ulimit(limits: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args([
        "-c",
        &format!("ulimit {limits} && exec \"$0\""),
        binary("rmm-server").unwrap().to_str().unwrap(),
    ])
    .env_clear()
    .env("PATH", std::env::var("PATH").unwrap_or_default())
    .env("DATABASE_URL", sqlite_url(dir.path()))
    .env("RMM_LISTEN", "127.0.0.1:0")
    .env("RMM_JWT_SECRET", JWT_SECRET)
    .env("RMM_ADMIN_PASSWORD", ADMIN_PASSWORD)
    .envs(env.iter().copied())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("rmm-server kept running")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn an_open_file_limit_too_low_for_the_connection_cap_refuses_the_start() {
    let (ok, stderr) = start_under_ulimit("-n 300", &[]).await;
    assert!(!ok, "started with 300 open files");
    assert!(stderr.contains("open-file limit is 300"), "{stderr}");
    assert!(stderr.contains("LimitNOFILE="), "{stderr}");

    let (ok, stderr) = start_under_ulimit("-n 1024", &[("RMM_MAX_CONNECTIONS", "5000")]).await;
    assert!(!ok, "started with a cap of 5000 under 1024 open files");
    assert!(
        stderr.contains("RMM_MAX_CONNECTIONS=5000 needs an open-file limit of 5256"),
        "{stderr}"
    );
    assert!(stderr.contains("ulimit -n 5256"), "{stderr}");
}

#[tokio::test]
async fn a_login_flood_keeps_memory_bounded_and_the_server_answering() {
    const LOGINS: usize = 200;
    raise_own_open_files(LOGINS as u64 + 512);
    let (_dir, server) = server(&[]).await;
    let pid = server.pid().unwrap();
    let admin = server.admin_token().await.unwrap();
    let (_, agent_key) = server.register_agent(&admin, "probe").await.unwrap();

    let url = server.url(LOGIN);
    let flood: Vec<_> = (0..LOGINS)
        .map(|_| {
            let (http, url) = (server.http().clone(), url.clone());
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.headers().get("retry-after").cloned())
            })
        })
        .collect();
    // Meanwhile other requests and an agent are answered promptly.
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut slowest = Duration::ZERO;
    while !flood.iter().all(tokio::task::JoinHandle::is_finished) {
        let asked = Instant::now();
        let r = probe.get(server.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        slowest = slowest.max(asked.elapsed());
        let ws_url = server.ws_url();
        let connect = ScriptedAgent::connect(&ws_url, Some(&agent_key));
        let agent = tokio::time::timeout(Duration::from_secs(1), connect).await;
        assert!(matches!(agent, Ok(Ok(_))), "the agent could not connect");
    }
    assert!(slowest < Duration::from_secs(1), "healthz took {slowest:?}");
    let (mut ok, mut busy) = (0, 0);
    for login in flood {
        match login.await.unwrap() {
            (200, _) => ok += 1,
            (503, Some(retry)) if retry.to_str().unwrap().parse::<u64>().unwrap() > 0 => busy += 1,
            other => panic!("a login answered {other:?}"),
        }
    }
    assert!(ok > 0 && busy > 0, "{ok} logged in, {busy} told to retry");
    let peak = proc_mib(pid, "VmHWM");
    assert!(
        peak < 256,
        "peak RSS {peak} MiB under {LOGINS} concurrent logins"
    );
}

/// Logs in as `username`, from `forwarded_for` when given; the status and `Retry-After`.
async fn login(
    server: &TestServer,
    username: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> (u16, Option<u64>) {
    let mut req = server
        .http()
        .post(server.url(LOGIN))
        .json(&json!({"username": username, "password": password}));
    if let Some(ip) = forwarded_for {
        req = req.header("x-forwarded-for", ip);
    }
    let r = req.send().await.unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (r.status().as_u16(), retry)
}

#[tokio::test]
async fn five_failures_throttle_the_username_and_refusals_are_logged() {
    let (_dir, server) = server(&[]).await;
    // 401 and 403 are logged with the client, and the user where the token names one.
    let tech = server.tech_token("tech1").await.unwrap();
    let (status, _) = server
        .call(
            Method::POST,
            "/api/v1/agents",
            Some(&tech),
            Some(json!({"name": "x"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 403);
    let warn = [
        "WARN",
        "request refused",
        "client=127.0.0.1",
        "status=403",
        "user_id=",
    ];
    server
        .wait_for_log(&warn, Duration::from_secs(5))
        .await
        .unwrap();
    let (status, _) = server
        .call(Method::GET, "/api/v1/agents", Some("forged"), None)
        .await
        .unwrap();
    assert_eq!(status, 401);
    let warn = ["WARN", "request refused", "client=127.0.0.1", "status=401"];
    server
        .wait_for_log(&warn, Duration::from_secs(5))
        .await
        .unwrap();

    // No trusted proxy: X-Forwarded-For is not believed, every attempt is 127.0.0.1's.
    for i in 1..=5 {
        let (status, _) = login(
            &server,
            "admin",
            "wrong-password-guess",
            Some(&format!("203.0.113.{i}")),
        )
        .await;
        assert_eq!(status, 401);
    }
    let (status, retry) = login(&server, "admin", ADMIN_PASSWORD, None).await;
    assert_eq!(
        (status, retry),
        (429, Some(60)),
        "the right password after five failures"
    );
    let warn = ["WARN", "login failed", "client=127.0.0.1", "username=admin"];
    server
        .wait_for_log(&warn, Duration::from_secs(5))
        .await
        .unwrap();
    let warn = [
        "WARN",
        "login refused",
        "client=127.0.0.1",
        "username=admin",
    ];
    server
        .wait_for_log(&warn, Duration::from_secs(5))
        .await
        .unwrap();
    let leaked = server
        .wait_for_log(&["wrong-password-guess"], Duration::from_millis(200))
        .await;
    assert!(leaked.is_err(), "a password in the log: {leaked:?}");
}

#[tokio::test]
async fn a_success_resets_the_username_and_trusted_proxies_name_the_client() {
    let (_dir, server) = server(&[("RMM_TRUSTED_PROXIES", "127.0.0.1")]).await;
    let (a, b, c) = (
        Some("198.51.100.7"),
        Some("198.51.100.8"),
        Some("198.51.100.9"),
    );
    for _ in 0..4 {
        assert_eq!(login(&server, "admin", "wrong", a).await.0, 401);
    }
    assert_eq!(login(&server, "admin", ADMIN_PASSWORD, a).await.0, 200);
    for _ in 0..4 {
        assert_eq!(login(&server, "admin", "wrong", b).await.0, 401);
    }
    // Eight failures in a minute, but a success between: not locked.
    assert_eq!(login(&server, "admin", ADMIN_PASSWORD, b).await.0, 200);
    // The fifth failure from one client address locks that address, whatever the username.
    assert_eq!(login(&server, "ghost", "wrong", a).await.0, 401);
    let (status, retry) = login(&server, "admin", ADMIN_PASSWORD, a).await;
    assert_eq!(status, 429);
    assert!(retry.is_some_and(|s| s > 0 && s <= 60), "{retry:?}");
    assert_eq!(login(&server, "admin", ADMIN_PASSWORD, c).await.0, 200);
    let warn = [
        "WARN",
        "login failed",
        "client=198.51.100.7",
        "username=ghost",
    ];
    server
        .wait_for_log(&warn, Duration::from_secs(5))
        .await
        .unwrap();
}
