//! A PostgreSQL container of one test's own, for fault injection: it can be killed and
//! started again, and it comes back on the same host port (the shared container of [`crate::pg`]
//! is mapped to a random port that changes on a restart, so a server could not find it again).
//!
//! Driven with the `docker` CLI: the image is `$RMM_TEST_PG_IMAGE` as for [`crate::pg`], the
//! container carries the [`crate::pg::CONTAINER_LABEL`] label (scripts/test.sh removes
//! leftovers by it) and is removed when the value is dropped, a failed test included.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use crate::pg::{CONTAINER_LABEL, DEFAULT_IMAGE, IMAGE_ENV};

const PASSWORD: &str = "postgres";
/// How long a (re)started server may take to accept logins.
const READY_PATIENCE: Duration = Duration::from_secs(60);

/// One running (or killed) PostgreSQL container.
#[derive(Debug)]
pub struct OwnPostgres {
    name: String,
    port: u16,
}

fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running docker {args:?}"))?;
    if !out.status.success() {
        bail!(
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl OwnPostgres {
    /// Starts a container on a free loopback port and waits until it accepts logins.
    ///
    /// # Errors
    /// When Docker or the image is missing, or the server does not accept logins in time.
    pub async fn start() -> anyhow::Result<Self> {
        let image = std::env::var(IMAGE_ENV).unwrap_or_else(|_| DEFAULT_IMAGE.to_owned());
        // A port the OS calls free now; docker binds it a moment later (a race with another
        // process taking it is possible but shows as a failed start, not a wrong test).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port")?
            .port();
        let name = format!("rmm-test-pg-{}", uuid::Uuid::new_v4().simple());
        // The value owns the name from here: a failed start still removes the container.
        let pg = Self { name, port };
        docker(&[
            "run",
            "-d",
            "--name",
            &pg.name,
            "--label",
            &format!("{CONTAINER_LABEL}=1"),
            "-e",
            &format!("POSTGRES_PASSWORD={PASSWORD}"),
            "-p",
            &format!("127.0.0.1:{port}:5432"),
            &image,
            // A commit is durable once answered, as in production: the local test image
            // turns this off for speed, and a killed server then forgets transactions it
            // had confirmed, which no server above it could make up for.
            "-c",
            "synchronous_commit=on",
        ])
        .with_context(|| format!("starting PostgreSQL container {image} (set {IMAGE_ENV})"))?;
        pg.wait_ready().await?;
        Ok(pg)
    }

    /// The URL of database `postgres`.
    #[must_use]
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// Kills the server at once (SIGKILL, `docker kill`): no shutdown, its clients' connections
    /// drop, new ones are refused.
    ///
    /// # Errors
    /// When docker fails.
    pub fn kill(&self) -> anyhow::Result<()> {
        docker(&["kill", &self.name]).map(drop)
    }

    /// Starts the killed container again (same data, same host port) and waits until it
    /// accepts logins.
    ///
    /// # Errors
    /// When docker fails or the server does not accept logins in time.
    pub async fn restart(&self) -> anyhow::Result<()> {
        docker(&["start", &self.name])?;
        self.wait_ready().await
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            match PgConnection::connect(&self.url()).await {
                Ok(conn) => {
                    conn.close().await.ok();
                    return Ok(());
                }
                Err(_) if started.elapsed() < READY_PATIENCE => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "PostgreSQL container {} did not accept logins on port {} within {READY_PATIENCE:?}",
                            self.name, self.port
                        )
                    });
                }
            }
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
