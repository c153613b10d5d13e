//! The front-door attacks of the "Internet-facing hardening" issue, replayed against a real
//! `rmm-server` (`rmm-attack`, bench/attack.sh): each starts a fresh server on SQLite under a
//! soft open-file limit of 1024 (systemd's default), attacks it from 127.0.0.1 with bounded
//! counts and times, and measures it from `/proc`. Not a test: it prints figures.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

pub const ADMIN_PASSWORD: &str = "attack-bench-admin-password";
const LOGIN: &str = "/api/v1/auth/login";
const MIB: u64 = 1024 * 1024;

/// One `rmm-server` under attack, killed when dropped.
#[derive(Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub pid: u32,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Target {
    /// Starts `binary` with a soft open-file limit of `soft_nofile` and `env`.
    ///
    /// # Errors
    /// When it does not answer `/healthz` within 30 s.
    pub async fn start(
        binary: &Path,
        soft_nofile: u64,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut cmd = Command::new("sh");
        cmd.args(["-c", r#"ulimit -Sn "$1" && shift && exec "$@""#, "sh"])
            .arg(soft_nofile.to_string())
            .arg(binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", dir.path().join("rmm.db").display()),
            )
            .env("RMM_LISTEN", addr.to_string())
            .env(
                "RMM_JWT_SECRET",
                "attack-bench-secret-attack-bench-secret-0",
            )
            .env("RMM_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env(
                "RUST_LOG",
                std::env::var("RMM_BENCH_SERVER_LOG").unwrap_or_else(|_| "error".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn().context("starting rmm-server")?;
        let pid = child.id().context("rmm-server has no pid")?;
        let target = Self {
            addr,
            pid,
            child,
            _dir: dir,
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if health(addr, Duration::from_secs(1)).await.is_ok() {
                return Ok(target);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("rmm-server did not answer /healthz within 30 s")
    }

    /// Peak and current resident memory, MiB (`VmHWM`, `VmRSS`).
    ///
    /// # Errors
    /// When the process is gone.
    pub fn memory_mib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(0, |kib| kib / 1024)
        };
        Ok((field("VmHWM:"), field("VmRSS:")))
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// `GET /healthz` on a new connection; how long the answer took.
///
/// # Errors
/// When there is no 200 within `within`.
pub async fn health(addr: SocketAddr, within: Duration) -> anyhow::Result<Duration> {
    let asked = Instant::now();
    let answer = tokio::time::timeout(within, async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: rmm\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await?;
        anyhow::Ok(head)
    })
    .await
    .context("no answer")??;
    if &answer[9..12] != b"200" {
        bail!("/healthz answered {}", String::from_utf8_lossy(&answer));
    }
    Ok(asked.elapsed())
}

/// Three concurrent JSON bodies of `size` bytes to the login, as the issue sent them.
#[derive(Debug, Clone)]
pub struct BodyFlood {
    pub rss_before_mib: u64,
    pub peak_mib: u64,
    /// Bytes each body got through before the server answered or stopped reading.
    pub sent_mib: Vec<u64>,
    pub statuses: Vec<u16>,
}

/// Sends three `size`-byte JSON bodies at once (Content-Length declared).
///
/// # Errors
/// When the server cannot be reached.
pub async fn body_flood(target: &Target, size: u64) -> anyhow::Result<BodyFlood> {
    let rss_before_mib = target.memory_mib()?.1;
    let floods: Vec<_> = (0..3)
        .map(|_| tokio::spawn(one_body(target.addr, size)))
        .collect();
    let (mut sent_mib, mut statuses) = (Vec::new(), Vec::new());
    for flood in floods {
        let (sent, status) = flood.await??;
        sent_mib.push(sent / MIB);
        statuses.push(status);
    }
    Ok(BodyFlood {
        rss_before_mib,
        peak_mib: target.memory_mib()?.0,
        sent_mib,
        statuses,
    })
}

async fn one_body(addr: SocketAddr, size: u64) -> anyhow::Result<(u64, u16)> {
    let (mut rd, mut wr) = TcpStream::connect(addr).await?.into_split();
    let reader = tokio::spawn(async move {
        let mut head = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(60), rd.read_to_end(&mut head)).await;
        String::from_utf8_lossy(&head)
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0)
    });
    let head = format!(
        "POST {LOGIN} HTTP/1.1\r\nHost: rmm\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n{{\"username\":\"admin\",\"password\":\""
    );
    wr.write_all(head.as_bytes()).await?;
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = head.len() as u64;
    while sent < size {
        let n = chunk
            .len()
            .min(usize::try_from(size - sent).unwrap_or(usize::MAX));
        let write = tokio::time::timeout(Duration::from_secs(5), wr.write_all(&chunk[..n])).await;
        if !matches!(write, Ok(Ok(()))) {
            break;
        }
        sent += n as u64;
    }
    Ok((sent, reader.await?))
}

/// `n` concurrent logins with the right password.
#[derive(Debug, Clone)]
pub struct LoginFlood {
    pub n: usize,
    pub peak_mib: u64,
    pub after_mib: u64,
    pub ok: usize,
    pub busy: usize,
    pub other: usize,
    /// The slowest `/healthz` answer during the flood (`None`: one got no answer in 5 s).
    pub slowest_health: Option<Duration>,
    pub took: Duration,
}

/// Sends `n` logins at once and probes `/healthz` until they are all answered.
///
/// # Errors
/// When the HTTP client cannot be built.
pub async fn login_flood(target: &Target, n: usize) -> anyhow::Result<LoginFlood> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(0)
        .build()?;
    let url = format!("http://{}{LOGIN}", target.addr);
    let started = Instant::now();
    let logins: Vec<_> = (0..n)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let body = json!({"username": "admin", "password": ADMIN_PASSWORD});
                http.post(url)
                    .json(&body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            })
        })
        .collect();
    let mut slowest_health = Some(Duration::ZERO);
    while !logins.iter().all(tokio::task::JoinHandle::is_finished)
        && started.elapsed() < Duration::from_secs(120)
    {
        slowest_health = match (
            slowest_health,
            health(target.addr, Duration::from_secs(5)).await,
        ) {
            (Some(worst), Ok(took)) => Some(worst.max(took)),
            _ => None,
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut ok, mut busy, mut other) = (0, 0, 0);
    for login in logins {
        match login.await? {
            200 => ok += 1,
            503 => busy += 1,
            _ => other += 1,
        }
    }
    let took = started.elapsed();
    let (peak_mib, after_mib) = target.memory_mib()?;
    Ok(LoginFlood {
        n,
        peak_mib,
        after_mib,
        ok,
        busy,
        other,
        slowest_health,
        took,
    })
}

/// `n` half-sent requests held open.
#[derive(Debug, Clone)]
pub struct Slowloris {
    pub opened: usize,
    /// How long a fresh `/healthz` took under the attack (`None`: no answer in 10 s).
    pub fresh: Option<Duration>,
    /// When the last half-sent request was closed by the server, from the attack's start
    /// (`None`: some were still open after `wait`).
    pub all_closed_after: Option<Duration>,
    pub peak_mib: u64,
}

/// Opens `n` connections that each send part of a request head, one more header line a
/// second later; times a fresh request, then waits up to `wait` for the server to close them.
///
/// # Errors
/// When the first connection cannot be made.
pub async fn slowloris(target: &Target, n: usize, wait: Duration) -> anyhow::Result<Slowloris> {
    let started = Instant::now();
    let mut slow = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(target.addr)).await
        else {
            break;
        };
        let head = format!("POST {LOGIN} HTTP/1.1\r\nHost: rmm\r\nContent-Type: application/json");
        if s.write_all(head.as_bytes()).await.is_ok() {
            slow.push(s);
        }
    }
    let opened = slow.len();
    if opened == 0 {
        bail!("no connection could be opened");
    }
    let fresh = health(target.addr, Duration::from_secs(10)).await.ok();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for s in &mut slow {
        let _ = s.write_all(b"\r\nX-Slow: 1").await;
    }
    let deadline = started + wait;
    let mut all_closed_after = Some(Duration::ZERO);
    for mut s in slow {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut buf = [0u8; 256];
        all_closed_after = match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => all_closed_after.map(|_| started.elapsed()),
            _ => None,
        };
    }
    Ok(Slowloris {
        opened,
        fresh,
        all_closed_after,
        peak_mib: target.memory_mib()?.0,
    })
}

/// Wrong passwords for one username at a steady rate, then the right one.
#[derive(Debug, Clone)]
pub struct BruteForce {
    pub attempts: usize,
    pub checked: usize,
    pub throttled: usize,
    pub per_minute: f64,
    pub retry_after: Option<u64>,
    pub right_password: u16,
}

/// Tries `rate` wrong passwords a second for `duration`, then the right one.
///
/// # Errors
/// When the HTTP client cannot be built.
pub async fn brute_force(
    target: &Target,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<BruteForce> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("http://{}{LOGIN}", target.addr);
    let login = |password: String| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .post(url)
                .json(&json!({"username": "admin", "password": password}))
                .send()
                .await;
            r.map(|r| {
                let retry = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                (r.status().as_u16(), retry)
            })
            .unwrap_or((0, None))
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    let started = Instant::now();
    let (mut attempts, mut checked, mut throttled, mut retry_after) = (0, 0, 0, None);
    while started.elapsed() < duration {
        tick.tick().await;
        attempts += 1;
        match login(format!("guess-{attempts}")).await {
            (401, _) => checked += 1,
            (429, retry) => {
                throttled += 1;
                retry_after = retry_after.or(retry);
            }
            _ => {}
        }
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let right_password = login(ADMIN_PASSWORD.to_owned()).await.0;
    Ok(BruteForce {
        attempts,
        checked,
        throttled,
        per_minute: checked as f64 / minutes,
        retry_after,
        right_password,
    })
}

/// The machine's load average (1, 5, 15 minutes), as `/proc/loadavg` says.
#[must_use]
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The server binary: `explicit`, else `target/release/rmm-server` beside this program.
///
/// # Errors
/// When it does not exist.
pub fn server_binary(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match explicit {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("no folder")?
            .join("rmm-server"),
    };
    if !path.exists() {
        bail!(
            "{} not found: build it (cargo build --release --bins)",
            path.display()
        );
    }
    Ok(path)
}
