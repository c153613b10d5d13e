//! A cluster for a test: Debian's `nats-server` and `haproxy` run as processes of the test
//! (installed by scripts/test.sh), on free loopback ports, stopped when dropped; and three
//! `rmm-server` nodes on one PostgreSQL database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tempfile::TempDir;

use crate::server::{StartOptions, TestServer};

/// A free loopback port (bound, then released).
///
/// # Errors
/// When no port can be bound.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// A program from Debian's packages: in /usr/sbin or /usr/bin, which a test's PATH may lack.
fn program(name: &str, package: &str) -> anyhow::Result<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
        .with_context(|| {
            format!("{name} is not installed: `apt-get install {package}` (scripts/test.sh does)")
        })
}

async fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited at start-up: {status}");
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{what} did not listen on {addr} within 20 s")
}

/// A running `nats-server` (core NATS, no JetStream needed).
#[derive(Debug)]
pub struct Nats {
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Nats {
    /// Starts `nats-server` on a free loopback port.
    ///
    /// # Errors
    /// When it is missing or does not listen within 20 s.
    pub async fn start() -> anyhow::Result<Self> {
        let mut nats = Self {
            addr: free_addr()?,
            child: None,
        };
        nats.spawn().await?;
        Ok(nats)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut child = Command::new(program("nats-server", "nats-server")?)
            .args(["-a", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server")?;
        wait_listening(self.addr, &mut child, "nats-server").await?;
        self.child = Some(child);
        Ok(())
    }

    /// `nats://` URL of it.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Stops it (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    ///
    /// # Errors
    /// As [`Self::start`].
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.spawn().await
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running HAProxy: one TCP frontend balancing round-robin over `backends`, each checked
/// every 300 ms, so a dead one leaves the rotation within a second.
#[derive(Debug)]
pub struct Haproxy {
    pub addr: SocketAddr,
    child: Child,
    _dir: TempDir,
}

impl Haproxy {
    /// Starts HAProxy in front of `backends`.
    ///
    /// # Errors
    /// When it is missing, refuses its configuration, or does not listen within 20 s.
    pub async fn start(backends: &[SocketAddr]) -> anyhow::Result<Self> {
        let addr = free_addr()?;
        let dir = tempfile::tempdir()?;
        let mut config = format!(
            "global\n  maxconn 2000\n\
             defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 1h\n  timeout server 1h\n\
             frontend rmm\n  bind {addr}\n  default_backend nodes\n\
             backend nodes\n  balance roundrobin\n"
        );
        for (i, backend) in backends.iter().enumerate() {
            config.push_str(&format!(
                "  server node{i} {backend} check inter 300ms fall 1 rise 1\n"
            ));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config)?;
        let mut child = Command::new(program("haproxy", "haproxy")?)
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting haproxy")?;
        wait_listening(addr, &mut child, "haproxy").await?;
        Ok(Self {
            addr,
            child,
            _dir: dir,
        })
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a node's cross-node streams reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Its cluster address (`RMM_CLUSTER_LISTEN`, a free loopback port).
    Direct,
    /// NATS alone.
    Nats,
}

/// Starts node `id` of the cluster on `database_url` through `nats`, its log kept (at
/// `info`, whatever the test's `RUST_LOG`: tests read which agents connected where, and at
/// `debug` for the cluster crate: which path each cross-node stream took), with a lease of
/// `lease_secs`, reached by other nodes by `reach`, with `extra` settings.
///
/// # Errors
/// As [`TestServer::start_with`].
pub async fn start_node_with(
    database_url: &str,
    nats: &Nats,
    id: &str,
    lease_secs: u64,
    reach: Reach,
    extra: &[(&str, &str)],
) -> anyhow::Result<TestServer> {
    let nats_url = nats.url();
    let lease = lease_secs.to_string();
    let listen = free_addr()?.to_string();
    let mut env = vec![
        ("RMM_NATS_URL", nats_url.as_str()),
        ("RMM_NODE_ID", id),
        ("RMM_NODE_LEASE_SECS", lease.as_str()),
        ("RUST_LOG", "info,sqlx=warn,poem=warn,rmm_cluster=debug"),
    ];
    if reach == Reach::Direct {
        env.push(("RMM_CLUSTER_LISTEN", listen.as_str()));
    }
    env.extend_from_slice(extra);
    TestServer::start_with(
        database_url,
        &env,
        StartOptions {
            capture_log: true,
            ..StartOptions::default()
        },
    )
    .await
}

/// [`start_node_with`] reached over its cluster address, with nothing else set.
///
/// # Errors
/// As [`TestServer::start_with`].
pub async fn start_node(
    database_url: &str,
    nats: &Nats,
    id: &str,
    lease_secs: u64,
) -> anyhow::Result<TestServer> {
    start_node_with(database_url, nats, id, lease_secs, Reach::Direct, &[]).await
}
