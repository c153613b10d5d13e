//! The SQL stores: one adapter per database, [`PgStore`] (PostgreSQL) and [`SqliteStore`]
//! (SQLite), each implementing every storage port of the application (`SessionRepository`,
//! `AgentRepository`, `UserRepository`, `AuditLog`). `main` picks one; nothing else knows
//! which.
//!
//! This module owns the mapping between rows and domain types and between database errors and
//! [`StoreError`]; the rules (who may open what, when a session is idle) stay in the domain and
//! the use cases. Rows come back through the domain constructors, so a corrupt row is a
//! [`StoreError::Backend`] with a message naming the table, row and column, never a panic.
//! Atomicity lives in SQL: every port method is one statement or one transaction, and the
//! "one open session per agent" rule is a partial unique index, so racing opens cannot both win.

use std::collections::BTreeMap;

use rmm_application::{AgentRecord, HostFacts, KeyDigest, StoreError, UserRecord};
use rmm_domain::{AgentId, AgentName, Role, Session, SessionId, Timestamp, UserId, Username};
use uuid::Uuid;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// The columns of `tech_sessions` in the order [`SessionRow`] is read, as a literal so both
/// backends can `concat!` it into static SQL.
macro_rules! session_columns {
    () => {
        "session_id, tech_id, agent_id, opened_at, last_activity, status, closed_at, close_reason"
    };
}

/// The columns of `agents` in the order [`AgentRow`] is read.
macro_rules! agent_columns {
    () => {
        "agent_id, name, key_digest, created_at, last_seen, agent_version, hostname, os, uptime_secs"
    };
}

/// The columns of `users` in the order [`UserRow`] is read.
macro_rules! user_columns {
    () => {
        "user_id, username, password_hash, role, created_at"
    };
}

// After the macros: the backends use them by textual scope.
mod postgres;
mod sqlite;

/// Why a stored value could not be used: the database holds something the domain rejects, or
/// a value cannot be represented in the database.
#[derive(Debug, thiserror::Error)]
enum RowError {
    #[error("stored {table} row {key} has an invalid {column}: {reason}")]
    BadColumn {
        table: &'static str,
        key: String,
        column: &'static str,
        reason: String,
    },
    #[error("timestamp {0} µs since the epoch is outside the range the database can store")]
    TimeOutOfRange(i64),
}

impl RowError {
    fn bad(
        table: &'static str,
        key: impl ToString,
        column: &'static str,
        reason: impl ToString,
    ) -> StoreError {
        StoreError::backend(Self::BadColumn {
            table,
            key: key.to_string(),
            column,
            reason: reason.to_string(),
        })
    }
}

/// Maps a driver error: a unique violation (Postgres SQLSTATE 23505, SQLite
/// `SQLITE_CONSTRAINT_UNIQUE`/`_PRIMARYKEY`) is the caller's [`StoreError::Conflict`];
/// anything else is the backend's failure.
fn store_error(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        StoreError::Conflict
    } else {
        StoreError::backend(e)
    }
}

/// A `tech_sessions` row with its columns decoded but not yet validated.
struct SessionRow {
    session_id: Uuid,
    tech_id: Uuid,
    agent_id: Uuid,
    opened_at: Timestamp,
    last_activity: Timestamp,
    status: String,
    closed_at: Option<Timestamp>,
    close_reason: Option<String>,
}

impl TryFrom<SessionRow> for Session {
    type Error = StoreError;

    fn try_from(row: SessionRow) -> Result<Self, Self::Error> {
        let state =
            Session::state_from_parts(&row.status, row.closed_at, row.close_reason.as_deref())
                .map_err(|e| {
                    RowError::bad(
                        "tech_sessions",
                        row.session_id,
                        "status/closed_at/close_reason",
                        format!("{e} (status {:?})", row.status),
                    )
                })?;
        Ok(Session::restore(
            SessionId::from_uuid(row.session_id),
            AgentId::from_uuid(row.agent_id),
            UserId::from_uuid(row.tech_id),
            row.opened_at,
            row.last_activity,
            state,
        ))
    }
}

/// An `agents` row with its columns decoded but not yet validated.
struct AgentRow {
    agent_id: Uuid,
    name: String,
    key_digest: Vec<u8>,
    created_at: Timestamp,
    last_seen: Option<Timestamp>,
    agent_version: Option<String>,
    hostname: Option<String>,
    os: Option<String>,
    uptime_secs: Option<i64>,
}

impl TryFrom<AgentRow> for AgentRecord {
    type Error = StoreError;

    fn try_from(row: AgentRow) -> Result<Self, Self::Error> {
        let key = row.agent_id;
        let name =
            AgentName::parse(&row.name).map_err(|e| RowError::bad("agents", key, "name", e))?;
        let digest = <[u8; 32]>::try_from(row.key_digest.as_slice()).map_err(|_| {
            RowError::bad(
                "agents",
                key,
                "key_digest",
                format!("{} bytes, expected 32", row.key_digest.len()),
            )
        })?;
        let uptime_secs = row
            .uptime_secs
            .map(u64::try_from)
            .transpose()
            .map_err(|e| RowError::bad("agents", key, "uptime_secs", e))?;
        Ok(Self {
            id: AgentId::from_uuid(row.agent_id),
            name,
            key_digest: KeyDigest(digest),
            created_at: row.created_at,
            last_seen: row.last_seen,
            facts: HostFacts {
                version: row.agent_version,
                hostname: row.hostname,
                os: row.os,
                uptime_secs,
            },
        })
    }
}

/// A `users` row with its columns decoded but not yet validated.
struct UserRow {
    user_id: Uuid,
    username: String,
    password_hash: String,
    role: String,
    created_at: Timestamp,
}

impl TryFrom<UserRow> for UserRecord {
    type Error = StoreError;

    fn try_from(row: UserRow) -> Result<Self, Self::Error> {
        let key = row.user_id;
        Ok(Self {
            id: UserId::from_uuid(row.user_id),
            username: Username::parse(&row.username)
                .map_err(|e| RowError::bad("users", key, "username", e))?,
            password_hash: row.password_hash,
            role: Role::parse(&row.role).map_err(|e| RowError::bad("users", key, "role", e))?,
            created_at: row.created_at,
        })
    }
}

/// Uptime as stored (`bigint`): a host claiming more than `i64::MAX` seconds gets the maximum
/// rather than an error, since the value is informational.
fn uptime_to_db(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// One agent's share of a `record_seen` batch, after merging its heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SeenUpdate {
    agent: AgentId,
    /// The newest time the agent was seen in the batch.
    at: Timestamp,
    /// Each fact from the newest heartbeat that carried it.
    facts: HostFacts,
}

/// Merges a batch so each agent is written once: the latest time wins, and each fact comes
/// from the newest heartbeat that reported it (a heartbeat without a fact keeps the old one).
/// The stores then apply the facts only when the batch is not older than what is stored, so
/// a late batch can neither move `last_seen` back nor overwrite newer facts.
fn merge_seen(seen: &[(AgentId, Timestamp, Option<HostFacts>)]) -> Vec<SeenUpdate> {
    let mut by_time: Vec<_> = seen.iter().collect();
    // Stable: equal times keep the order they were reported in, the later one winning.
    by_time.sort_by_key(|(_, at, _)| *at);
    let mut merged: BTreeMap<AgentId, SeenUpdate> = BTreeMap::new();
    for (agent, at, facts) in by_time {
        let entry = merged.entry(*agent).or_insert_with(|| SeenUpdate {
            agent: *agent,
            at: *at,
            facts: HostFacts::default(),
        });
        entry.at = *at;
        if let Some(facts) = facts {
            let old = std::mem::take(&mut entry.facts);
            entry.facts = HostFacts {
                version: facts.version.clone().or(old.version),
                hostname: facts.hostname.clone().or(old.hostname),
                os: facts.os.clone().or(old.os),
                uptime_secs: facts.uptime_secs.or(old.uptime_secs),
            };
        }
    }
    merged.into_values().collect()
}

/// `url` with any password replaced by `***`, for error messages and logs.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(n: u128) -> AgentId {
        AgentId::from_uuid(Uuid::from_u128(n))
    }

    fn t(micros: i64) -> Timestamp {
        Timestamp::from_unix_micros(micros)
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://rmm:s3cret@db:5432/rmm?sslmode=disable"),
            "postgres://rmm:***@db:5432/rmm?sslmode=disable"
        );
        assert_eq!(redact_url("postgres://rmm@db/rmm"), "postgres://rmm@db/rmm");
        assert_eq!(redact_url("postgres://db/x@y"), "postgres://db/x@y");
        assert_eq!(redact_url("sqlite://data/rmm.db"), "sqlite://data/rmm.db");
        assert_eq!(redact_url("sqlite:rmm.db"), "sqlite:rmm.db");
    }

    #[test]
    fn a_batch_is_merged_to_one_update_per_agent_with_the_newest_facts() {
        let facts = |v: &str, up: Option<u64>| HostFacts {
            version: Some(v.into()),
            hostname: None,
            os: Some("linux".into()),
            uptime_secs: up,
        };
        let merged = merge_seen(&[
            (agent(1), t(30), Some(facts("1.1", None))),
            (agent(2), t(5), None),
            (agent(1), t(10), Some(facts("1.0", Some(7)))),
            (agent(1), t(20), None),
        ]);
        assert_eq!(
            merged,
            vec![
                SeenUpdate {
                    agent: agent(1),
                    at: t(30),
                    facts: HostFacts {
                        version: Some("1.1".into()),
                        hostname: None,
                        os: Some("linux".into()),
                        uptime_secs: Some(7),
                    },
                },
                SeenUpdate {
                    agent: agent(2),
                    at: t(5),
                    facts: HostFacts::default(),
                },
            ]
        );
    }

    #[test]
    fn corrupt_rows_become_backend_errors_naming_the_column() {
        let row = SessionRow {
            session_id: Uuid::from_u128(9),
            tech_id: Uuid::from_u128(1),
            agent_id: Uuid::from_u128(2),
            opened_at: t(1),
            last_activity: t(1),
            status: "closed".into(),
            closed_at: None,
            close_reason: Some("idle".into()),
        };
        let err = Session::try_from(row).expect_err("closed without time");
        let StoreError::Backend(cause) = err else {
            panic!("expected a backend error, got {err:?}");
        };
        assert!(cause.to_string().contains("tech_sessions row"));

        let row = AgentRow {
            agent_id: Uuid::from_u128(3),
            name: "web".into(),
            key_digest: vec![0; 31],
            created_at: t(0),
            last_seen: None,
            agent_version: None,
            hostname: None,
            os: None,
            uptime_secs: None,
        };
        let err = AgentRecord::try_from(row).expect_err("short digest");
        assert!(matches!(err, StoreError::Backend(c) if c.to_string().contains("key_digest")));
    }
}
