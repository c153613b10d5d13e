//! The PostgreSQL store: every storage port over one `sqlx` pool, schema from
//! `migrations/postgres`. Uuids are native `uuid`, times `timestamptz` (microsecond precision,
//! the same as the domain's [`Timestamp`]).
//!
//! One module per repository ([`sessions`], [`agents`] for agents and users, [`audit`],
//! [`commands`], [`cluster`] for the nodes' leases), each with its row decoder and its
//! statements; this module holds the pool and the time conversions they share.
//!
//! In cluster mode every server is a [`PgStore::for_node`] on the shared database: each session
//! records the node that opened it, and what a node does with "its" sessions at start-up and
//! shut-down (list them, close them all, end their running commands and recordings) touches
//! only its own. Everything by id, and the rules that span the cluster (one open session per
//! agent, the per-user cap), see every node's.

use std::str::FromStr;
use std::sync::Arc;
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
    /// The node this server is in a cluster; '' when it is the only one (see [`Self::for_node`]).
    node: Arc<str>,
}

impl PgStore {
    /// Connects with the default [`PgPoolSettings`] and brings the schema up to date.
    ///
    /// # Errors
    /// As [`Self::connect_with`].
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::connect_with(url, PgPoolSettings::default()).await
    }

    /// Connects (at most 10 connections; `settings.acquire_timeout` to get one once running,
    /// but the first connection may take up to 5 s: a database starting beside the server
    /// gets that long) and brings the schema up to date.
    ///
    /// # Errors
    /// When the URL is malformed, the server cannot be reached or refuses the login, or a
    /// migration fails. The message names the URL, without its password.
    pub async fn connect_with(url: &str, settings: PgPoolSettings) -> anyhow::Result<Self> {
        let shown = redact_url(url);
        let options = PgConnectOptions::from_str(url)
            .with_context(|| format!("invalid PostgreSQL URL {shown}"))?;
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(options.clone());
        if let Err(e) = first_connection(&pool).await {
            let cause = match e {
                sqlx::Error::PoolTimedOut => why_unreachable(&options).await.unwrap_or(e),
                other => other,
            };
            return Err(cause).with_context(|| format!("cannot connect to PostgreSQL at {shown}"));
        }
        sqlx::migrate!("../../migrations/postgres")
            .run(&pool)
            .await
            .with_context(|| format!("migrating the PostgreSQL database at {shown} failed"))?;
        tracing::debug!(url = %shown, "PostgreSQL store ready");
        Ok(Self {
            pool,
            node: Arc::from(""),
        })
    }

    /// The same store as node `node` of a cluster (the pool is shared). Sessions it inserts
    /// are `node`'s, and the calls about "every open session" or "every running command" see
    /// only `node`'s: `SessionRepository::list_open`, `list_open_logged_out`,
    /// `list_open_opened_with`, `close_all_open` and `close_idle`;
    /// `CommandRepository::fail_running_commands` (commands of `node`'s sessions);
    /// `RecordingRepository::finish_abandoned` (recordings of `node`'s sessions, and of
    /// sessions since deleted). Everything by id (`get`, `close`, `activate`, `touch`, ...)
    /// sees every node's, and so do the rules that span the cluster: one open session per
    /// agent, the per-user cap on open sessions.
    ///
    /// `""`, the default, is a server alone on its database: it owns every session, whichever
    /// node opened it (those a former cluster left too), exactly as before cluster mode.
    #[must_use]
    pub fn for_node(self, node: &str) -> Self {
        Self {
            node: Arc::from(node),
            ..self
        }
    }

    /// The node this store acts for; `""` outside a cluster (see [`Self::for_node`]).
    #[must_use]
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The pool, for tests and health checks.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// How long the first connection may take at start-up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How the running pool waits for the database.
#[derive(Debug, Clone, Copy)]
pub struct PgPoolSettings {
    /// The longest a statement waits for a connection, opening one included. While the
    /// database is away every request that needs it waits this long and then fails
    /// (`StoreError::Backend`, answered 503 `database_unavailable`), so it bounds how long a
    /// client hangs on a database outage; a pool busy for longer than this is overloaded
    /// anyway.
    pub acquire_timeout: Duration,
}

impl PgPoolSettings {
    /// The default [`Self::acquire_timeout`]: well under the 2 s within which the API must
    /// answer 503 while the database is down.
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
}

impl Default for PgPoolSettings {
    fn default() -> Self {
        Self {
            acquire_timeout: Self::DEFAULT_ACQUIRE_TIMEOUT,
        }
    }
}

/// Waits for the pool's first connection, retrying the pool's own (shorter) timeout until
/// [`CONNECT_TIMEOUT`]: a database still starting refuses connections for a moment. Any
/// other failure (a refused login, a missing database) is final at once.
async fn first_connection(pool: &PgPool) -> Result<(), sqlx::Error> {
    let started = std::time::Instant::now();
    loop {
        match pool.acquire().await {
            Ok(conn) => {
                drop(conn);
                return Ok(());
            }
            Err(sqlx::Error::PoolTimedOut) if started.elapsed() < CONNECT_TIMEOUT => {}
            Err(e) => return Err(e),
        }
    }
}

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
