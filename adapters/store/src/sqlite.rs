//! The SQLite store: every storage port over one `sqlx` pool on a database file, schema from
//! `migrations/sqlite`. Uuids are stored as hyphenated text and times as integer unix
//! microseconds, so the file stays readable in the `sqlite3` shell.
//!
//! One module per repository ([`sessions`], [`agents`] for agents and users, [`audit`],
//! [`commands`]), each with its row decoder and its statements; this module holds the pool and
//! the column conversions they share.

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

mod agents;
mod audit;
mod commands;
mod sessions;

/// Every storage port on SQLite. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

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
        if let Some(folder) = options.get_filename().parent()
            && !folder.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(folder).await.with_context(|| {
                format!(
                    "cannot create the folder {} for the SQLite database {shown}",
                    folder.display()
                )
            })?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(5)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .with_context(|| format!("cannot open the SQLite database {shown}"))?;
        sqlx::migrate!("../../migrations/sqlite")
            .run(&pool)
            .await
            .with_context(|| format!("migrating the SQLite database {shown} failed"))?;
        tracing::debug!(url = %shown, "SQLite store ready");
        Ok(Self { pool })
    }

    /// The pool, for tests and health checks.
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
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
