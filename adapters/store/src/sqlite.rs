//! The SQLite store: every storage port over one `sqlx` pool on a database file, schema from
//! `migrations/sqlite`. Uuids are stored as hyphenated text and times as integer unix
//! microseconds, so the file stays readable in the `sqlite3` shell.
//!
//! One module per repository ([`sessions`], [`agents`] for agents and users, [`audit`],
//! [`commands`]), each with its row decoder and its statements; this module holds the pool and
//! the column conversions they share.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use rmm_application::StoreError;
use rmm_domain::Timestamp;
use sqlx::Row as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use uuid::Uuid;

use crate::{RowError, redact_url, store_error};

mod agent_admin;
mod agents;
mod audit;
mod cluster;
mod commands;
mod enrollment;
mod groups;
mod recordings;
mod retention;
mod sessions;
mod users;

/// Ends `tx` without its changes, now, and returns `value`: a rollback left to the pool (on
/// drop) could run after the connection's next statements. Every refused change goes here.
async fn rolled_back<T>(
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    value: T,
) -> Result<T, StoreError> {
    tx.rollback().await.map_err(store_error)?;
    Ok(value)
}

/// Every storage port on SQLite. Cloning shares the pools.
///
/// SQLite lets one connection write at a time. Every write (and every transaction) goes
/// through `pool`, which holds exactly one connection: writers queue in the pool, fairly,
/// instead of polling SQLite's busy handler (which sleeps 1 to 100 ms between tries and made
/// concurrent writers wait for seconds). Plain reads go to `reader`, read-only connections
/// that WAL lets run beside the writer; a write sent there by mistake fails loudly.
///
/// Neither pool pings a connection before handing it out (sqlx's `test_before_acquire`): a
/// SQLite connection is a file handle in this process and cannot hang up, and the ping is a
/// round trip to the connection's worker thread on every acquire. On the single writer that
/// was one hand-off in four.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    reader: SqlitePool,
}

/// Read-only connections beside the writer (the machine's cores, at most 4).
const READERS: u32 = 4;

impl SqliteStore {
    /// Opens (creating it and its folder if missing) the database at `url` (`sqlite://path`
    /// or `sqlite:path`) in WAL mode with foreign keys on, and brings the schema up to date.
    ///
    /// # Errors
    /// When the URL is malformed, the folder or file cannot be created or opened, or a
    /// migration fails. The message names the URL.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let shown = redact_url(url);
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("invalid SQLite URL {shown}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            // With WAL, NORMAL loses at most the last transactions on power loss, never
            // consistency; FULL would fsync on every heartbeat batch.
            .synchronous(SqliteSynchronous::Normal);
        // The file holds password hashes and agent-key digests: owner-only from the start.
        let file = on_disk(url, &options).map(Path::to_path_buf);
        if let Some(file) = &file {
            if let Some(folder) = file.parent()
                && !folder.as_os_str().is_empty()
            {
                private_folder(folder).with_context(|| {
                    format!(
                        "cannot create the folder {} for the SQLite database {shown}",
                        folder.display()
                    )
                })?;
            }
            private_file(file)
                .with_context(|| format!("cannot create the SQLite database {shown}"))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await
            .with_context(|| format!("cannot open the SQLite database {shown}"))?;
        sqlx::migrate!("../../migrations/sqlite")
            .run(&pool)
            .await
            .with_context(|| format!("migrating the SQLite database {shown} failed"))?;
        // After the migrations: the readers see the schema as it is now.
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.read_only(true))
            .await
            .with_context(|| format!("cannot open the SQLite database {shown} for reading"))?;
        if let Some(file) = &file {
            // SQLite gives its -wal and -shm the database file's mode; files left by an older
            // version, or copied in, may be wider.
            for path in [file.clone(), sibling(file, "-wal"), sibling(file, "-shm")] {
                tighten(&path).with_context(|| {
                    format!("cannot make {} readable by its owner only", path.display())
                })?;
            }
        }
        tracing::debug!(url = %shown, "SQLite store ready");
        Ok(Self { pool, reader })
    }

    /// Writes a consistent snapshot of the database to `to` (`VACUUM INTO`, on a reader
    /// connection: the server's writes go on meanwhile, the snapshot is of one moment). `to`
    /// must not exist; it is created with mode 0600 (it holds password hashes and key
    /// digests) and removed again when the snapshot fails.
    ///
    /// # Errors
    /// When `to` exists or cannot be created, or SQLite fails the snapshot.
    pub async fn backup_into(&self, to: &Path) -> anyhow::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(to)
            .with_context(|| format!("cannot create the backup file {}", to.display()))?;
        let target = to.to_string_lossy().into_owned();
        let done = sqlx::query("VACUUM INTO ?")
            .bind(&target)
            .execute(&self.reader)
            .await;
        if let Err(e) = done {
            let _ = std::fs::remove_file(to);
            return Err(e).with_context(|| format!("the snapshot into {} failed", to.display()));
        }
        tighten(to).with_context(|| format!("cannot restrict {}", to.display()))?;
        Ok(())
    }

    /// The writer's pool (its one connection), for tests and health checks.
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// The database file of `options`, unless the URL names an in-memory database.
fn on_disk<'a>(url: &str, options: &'a SqliteConnectOptions) -> Option<&'a Path> {
    let file = options.get_filename();
    let memory = url.contains(":memory:")
        || url.contains("mode=memory")
        || file.to_str().is_some_and(|f| f.starts_with("file:"));
    (!memory).then_some(file)
}

/// `file` with `suffix` appended to its name (`rmm.db` -> `rmm.db-wal`).
fn sibling(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Creates `folder` (and missing parents) with mode 0700; an existing one is left as it is.
fn private_folder(folder: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(folder)
}

/// Creates an empty `file` with mode 0600 whatever the umask, before SQLite opens it (SQLite
/// treats an empty file as a new database). An existing file is left to [`tighten`].
fn private_file(file: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(file) {
        #[cfg(unix)]
        Ok(created) => {
            use std::os::unix::fs::PermissionsExt as _;
            created.set_permissions(std::fs::Permissions::from_mode(0o600))
        }
        #[cfg(not(unix))]
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sets `path` to 0600 when it exists with group or other permissions, with a warning: the
/// database's files are this server's alone.
#[cfg(unix)]
fn tighten(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = match std::fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o777,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        tracing::warn!(path = %path.display(), "the database file was mode {mode:04o}, readable by other users; set it to 0600");
    }
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

fn id_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

fn micros(t: Timestamp) -> i64 {
    t.as_unix_micros()
}

fn uuid_column(
    row: &SqliteRow,
    table: &'static str,
    column: &'static str,
) -> Result<Uuid, StoreError> {
    let text: String = row.try_get(column).map_err(store_error)?;
    Uuid::parse_str(&text).map_err(|e| RowError::bad(table, format!("{text:?}"), column, e))
}

fn opt_uuid_column(
    row: &SqliteRow,
    table: &'static str,
    column: &'static str,
) -> Result<Option<Uuid>, StoreError> {
    let text: Option<String> = row.try_get(column).map_err(store_error)?;
    text.map(|text| {
        Uuid::parse_str(&text).map_err(|e| RowError::bad(table, format!("{text:?}"), column, e))
    })
    .transpose()
}

fn time_column(row: &SqliteRow, column: &'static str) -> Result<Timestamp, StoreError> {
    row.try_get(column)
        .map(Timestamp::from_unix_micros)
        .map_err(store_error)
}

fn opt_time_column(row: &SqliteRow, column: &'static str) -> Result<Option<Timestamp>, StoreError> {
    row.try_get::<Option<i64>, _>(column)
        .map(|t| t.map(Timestamp::from_unix_micros))
        .map_err(store_error)
}

#[cfg(all(test, unix))]
mod file_mode_tests {
    #![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn a_new_database_its_wal_and_shm_and_folder_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("new");
        let db = folder.join("rmm.db");
        let store = SqliteStore::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        assert_eq!(mode(&folder), 0o700);
        for path in [db.clone(), sibling(&db, "-wal"), sibling(&db, "-shm")] {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
        store.pool().close().await;
    }

    #[tokio::test]
    async fn wider_files_left_from_before_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("rmm.db");
        let url = format!("sqlite://{}", db.display());
        SqliteStore::connect(&url)
            .await
            .unwrap()
            .pool()
            .close()
            .await;
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = SqliteStore::connect(&url).await.unwrap();
        for path in [db.clone(), sibling(&db, "-wal"), sibling(&db, "-shm")] {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
        store.pool().close().await;
    }

    #[test]
    fn in_memory_databases_have_no_file() {
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://x.db?mode=memory",
        ] {
            let options = SqliteConnectOptions::from_str(url).unwrap();
            assert!(on_disk(url, &options).is_none(), "{url}");
        }
        let url = "sqlite://data/rmm.db";
        let options = SqliteConnectOptions::from_str(url).unwrap();
        assert_eq!(on_disk(url, &options), Some(Path::new("data/rmm.db")));
    }
}
