//! The PostgreSQL store: every storage port over one `sqlx` pool, schema from
//! `migrations/postgres`. Uuids are native `uuid`, times `timestamptz` (microsecond precision,
//! the same as the domain's [`Timestamp`]).
//!
//! One module per repository ([`sessions`], [`agents`] for agents and users, [`audit`],
//! [`commands`]), each with its row decoder and its statements; this module holds the pool and
//! the time conversions they share.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use rmm_application::StoreError;
use rmm_domain::Timestamp;
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use crate::{RowError, redact_url, store_error};

mod agent_admin;
mod agents;
mod audit;
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
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    value: T,
) -> Result<T, StoreError> {
    tx.rollback().await.map_err(store_error)?;
    Ok(value)
}

/// Every storage port on PostgreSQL. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects (at most 10 connections, 5 s to get one) and brings the schema up to date.
    ///
    /// # Errors
    /// When the URL is malformed, the server cannot be reached or refuses the login, or a
    /// migration fails. The message names the URL, without its password.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let shown = redact_url(url);
        let options = PgConnectOptions::from_str(url)
            .with_context(|| format!("invalid PostgreSQL URL {shown}"))?;
        let pool = match PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options.clone())
            .await
        {
            Ok(pool) => pool,
            Err(e) => {
                let cause = match e {
                    sqlx::Error::PoolTimedOut => why_unreachable(&options).await.unwrap_or(e),
                    other => other,
                };
                return Err(cause)
                    .with_context(|| format!("cannot connect to PostgreSQL at {shown}"));
            }
        };
        sqlx::migrate!("../../migrations/postgres")
            .run(&pool)
            .await
            .with_context(|| format!("migrating the PostgreSQL database at {shown} failed"))?;
        tracing::debug!(url = %shown, "PostgreSQL store ready");
        Ok(Self { pool })
    }

    /// The pool, for tests and health checks.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The pool retries refused connections until its timeout and then reports only the timeout;
/// one direct attempt recovers the cause ("connection refused", "no such host") for the
/// operator. `None` if that attempt succeeds or times out too.
async fn why_unreachable(options: &PgConnectOptions) -> Option<sqlx::Error> {
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options)).await {
        Ok(Err(e)) => Some(e),
        Ok(Ok(conn)) => {
            conn.close().await.ok();
            None
        }
        Err(_elapsed) => None,
    }
}

fn to_db(t: Timestamp) -> Result<DateTime<Utc>, StoreError> {
    let micros = t.as_unix_micros();
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::backend(RowError::TimeOutOfRange(micros)))
}

fn from_db(t: DateTime<Utc>) -> Timestamp {
    Timestamp::from_unix_micros(t.timestamp_micros())
}
