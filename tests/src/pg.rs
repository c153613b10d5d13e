//! Databases for tests. [`fresh_database`] gives every test its own brand-new, empty
//! PostgreSQL database, all on one container started lazily the first time a test of this
//! process asks; [`sqlite_url`] names a SQLite file in a test's temporary folder.
//!
//! The image is `$RMM_TEST_PG_IMAGE` (`name:tag`, default `postgres:16`). testcontainers pulls
//! it only when it is not present locally, so a locally built image works with no registry;
//! it must log PostgreSQL's "ready to accept connections" line on stderr and honour
//! `POSTGRES_PASSWORD` like the official image.
//!
//! Each `#[tokio::test]` runs on its own runtime, so nothing here keeps a connection or pool
//! beyond one call: only the container handle and its port are shared.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection as _, Executor as _};
use testcontainers::core::{IntoContainerPort as _, WaitFor};
use testcontainers::runners::AsyncRunner as _;
use testcontainers::{ContainerAsync, GenericImage, ImageExt as _};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The environment variable naming the PostgreSQL image, `name:tag`.
pub const IMAGE_ENV: &str = "RMM_TEST_PG_IMAGE";
/// The image used when [`IMAGE_ENV`] is not set.
pub const DEFAULT_IMAGE: &str = "postgres:16";
/// The label on every container started here (value `1`), so scripts can find leftovers.
pub const CONTAINER_LABEL: &str = "rmm-tunnel-test";

const USER: &str = "postgres";
const PASSWORD: &str = "postgres";
const READY_LINE: &str = "database system is ready to accept connections";
/// How long the server may take to accept TCP logins after its ready line: the official
/// image logs that line once for its private init-time server too.
const CONNECT_PATIENCE: Duration = Duration::from_secs(60);

/// The one server of this test process.
struct Server {
    port: u16,
    /// Held, never dropped: a static is not dropped at exit, so the container outlives the
    /// process. The reaper below removes it when the process ends, and `docker rm` on the
    /// label (as scripts/test.sh does) clears anything a killed run left behind.
    _container: ContainerAsync<GenericImage>,
    _reaper: Option<Child>,
}

static SERVER: OnceCell<Server> = OnceCell::const_new();

/// Creates a brand-new empty database and returns its `postgres://` URL. The first call of
/// the process starts the container and waits until it accepts logins.
///
/// # Errors
/// When Docker is unreachable, the image is missing and cannot be pulled, the server does not
/// accept logins within a minute, or `create database` fails.
pub async fn fresh_database() -> anyhow::Result<String> {
    let server = SERVER.get_or_try_init(start_server).await?;
    let name = format!("test_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&url(server.port, "postgres"))
        .await
        .context("connecting to the test PostgreSQL server")?;
    // `name` is `test_` and 32 hex digits: nothing to escape.
    admin
        .execute(AssertSqlSafe(format!("create database {name}")))
        .await
        .with_context(|| format!("creating test database {name}"))?;
    admin.close().await.ok();
    Ok(url(server.port, &name))
}

/// A `sqlite://` URL for a database file inside `dir` (typically a `tempfile::TempDir`).
#[must_use]
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("rmm.sqlite3").display())
}

fn url(port: u16, database: &str) -> String {
    format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{port}/{database}")
}

/// `name:tag` split at the last `:`; a `:` inside a registry host (`host:5000/pg`) is not a
/// tag separator.
fn image_name_and_tag(spec: &str) -> (&str, &str) {
    match spec.rsplit_once(':') {
        Some((name, tag)) if !name.is_empty() && !tag.is_empty() && !tag.contains('/') => {
            (name, tag)
        }
        _ => (spec, "latest"),
    }
}

async fn start_server() -> anyhow::Result<Server> {
    let spec = std::env::var(IMAGE_ENV).unwrap_or_else(|_| DEFAULT_IMAGE.to_owned());
    let (name, tag) = image_name_and_tag(&spec);
    let container = GenericImage::new(name, tag)
        .with_exposed_port(5432.tcp())
        .with_wait_for(WaitFor::message_on_stderr(READY_LINE))
        .with_env_var("POSTGRES_PASSWORD", PASSWORD)
        .with_label(CONTAINER_LABEL, "1")
        .with_startup_timeout(Duration::from_secs(120))
        .start()
        .await
        .with_context(|| {
            format!("starting PostgreSQL container {name}:{tag} (set {IMAGE_ENV} to change it)")
        })?;
    let reaper = spawn_reaper(container.id());
    let port = container
        .get_host_port_ipv4(5432)
        .await
        .context("reading the PostgreSQL container's mapped port")?;

    let started = Instant::now();
    loop {
        match PgConnection::connect(&url(port, "postgres")).await {
            Ok(conn) => {
                conn.close().await.ok();
                break;
            }
            Err(_) if started.elapsed() < CONNECT_PATIENCE => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "PostgreSQL container {name}:{tag} did not accept logins on \
                         127.0.0.1:{port} within {CONNECT_PATIENCE:?}"
                    )
                });
            }
        }
    }
    Ok(Server {
        port,
        _container: container,
        _reaper: reaper,
    })
}

/// A detached shell that removes the container once this process has exited. It gets its own
/// process group so a Ctrl-C to `cargo test` does not kill it with us. Best effort: without
/// `sh` or the `docker` CLI nothing happens and the label is the fallback.
#[cfg(unix)]
fn spawn_reaper(container_id: &str) -> Option<Child> {
    use std::os::unix::process::CommandExt as _;
    use std::process::{Command, Stdio};

    Command::new("sh")
        .arg("-c")
        .arg(r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; docker rm -f -v "$2" >/dev/null 2>&1"#)
        .arg("rmm-pg-reaper")
        .arg(std::process::id().to_string())
        .arg(container_id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ok()
}

#[cfg(not(unix))]
fn spawn_reaper(_container_id: &str) -> Option<Child> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_specs_split_at_the_last_colon_outside_the_registry_host() {
        assert_eq!(image_name_and_tag("postgres:16"), ("postgres", "16"));
        assert_eq!(
            image_name_and_tag("rmm-postgres:15-bookworm"),
            ("rmm-postgres", "15-bookworm")
        );
        assert_eq!(
            image_name_and_tag("registry:5000/pg:16"),
            ("registry:5000/pg", "16")
        );
        assert_eq!(
            image_name_and_tag("registry:5000/pg"),
            ("registry:5000/pg", "latest")
        );
        assert_eq!(image_name_and_tag("postgres"), ("postgres", "latest"));
    }

    #[test]
    fn sqlite_urls_point_into_the_folder() {
        assert_eq!(
            sqlite_url(Path::new("/tmp/x")),
            "sqlite:///tmp/x/rmm.sqlite3"
        );
    }
}
