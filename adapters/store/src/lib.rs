//! The SQL stores: one adapter per database, [`PgStore`] (PostgreSQL) and [`SqliteStore`]
//! (SQLite), each implementing every storage port of the application (`SessionRepository`,
//! `AgentRepository`, `UserRepository`, `AuditLog`, `CommandRepository`,
//! `RecordingRepository`, ...). `main` picks one; nothing else knows which.
//!
//! This module owns the mapping between rows and domain types and between database errors and
//! [`StoreError`]; the rules (who may open what, when a session is idle) stay in the domain and
//! the use cases. Rows come back through the domain constructors, so a corrupt row is a
//! [`StoreError::Backend`] with a message naming the table, row and column, never a panic.
//! Atomicity lives in SQL: every port method is one statement or one transaction, and the
//! "one open session per agent" rule is a partial unique index, so racing opens cannot both win;
//! a command ends at most once because its end is one `update ... where status = 'running'`.
//! Every audited change (a session activated or closed, a command started or ended) writes its
//! audit entry in the same transaction as the change, one entry per row changed, so the entry
//! exists whenever the change is visible, and a failed entry rolls the change back.
//!
//! Unsigned counts are `bigint` in both databases: a value above `i64::MAX` is saturated on
//! the way in (they are sizes and durations, informational), and a negative stored value is
//! a corrupt row on the way out.

use std::collections::BTreeMap;

use rmm_application::{
    AgentRecord, AuditAction, AuditEntry, AuditEvent, CommandAudit, CommandRecord, FileAudit,
    HostFacts, KeyDigest, StoreError, UserChange, UserRecord,
};
use rmm_domain::{
    AgentId, AgentName, ChannelId, CommandEndReason, CommandId, CommandStatus, GroupName, Role,
    Session, SessionId, Timestamp, UserId, Username,
};
use uuid::Uuid;

pub use metered::Metered;
pub use postgres::{PgPoolSettings, PgStore};
pub use sqlite::SqliteStore;

/// The columns of `tech_sessions` in the order [`SessionRow`] is read, as a literal so both
/// backends can `concat!` it into static SQL.
macro_rules! session_columns {
    () => {
        "session_id, tech_id, agent_id, opened_at, last_activity, status, closed_at, close_reason"
    };
}

/// The columns of `agents` an insert writes (with `group_id`, looked up by name).
macro_rules! agent_columns {
    () => {
        "agent_id, name, key_digest, created_at, last_seen, agent_version, hostname, os, uptime_secs"
    };
}

/// `select` these (then `where ...` on `a.`) to read agents in the order [`AgentRow`] is read:
/// their group by name, and whether they are revoked.
macro_rules! agent_select {
    () => {
        "a.agent_id, a.name, a.key_digest, a.created_at, a.last_seen, a.agent_version, \
         a.hostname, a.os, a.uptime_secs, g.name as group_name, \
         (a.revoked_at is not null) as revoked \
         from agents a join groups g on g.group_id = a.group_id"
    };
}

/// The columns of `users` in the order [`UserRow`] is read.
macro_rules! user_columns {
    () => {
        "user_id, username, password_hash, role, created_at, disabled, last_login_at"
    };
}

/// The columns of `audit_events` in the order [`AuditRow`] is read.
macro_rules! audit_columns {
    () => {
        "audit_id, occurred_at, action, tech_id, agent_id, session_id, detail, \
         command_id, command, status, exit_code, stdout_bytes, stderr_bytes, duration_ms, \
         path, direction, size_bytes, sha256, result"
    };
}

/// The columns of `commands` in the order [`CommandRow`] is read.
macro_rules! command_columns {
    () => {
        "command_id, session_id, agent_id, tech_id, channel_id, command, timeout_secs, status, \
         exit_code, signal, started_at, finished_at, stdout_bytes, stderr_bytes, \
         stdout_truncated, stderr_truncated, end_reason"
    };
}

/// Read after [`command_columns`] in selects: whether the retention sweep pruned the output.
macro_rules! command_pruned_column {
    () => {
        ", output_pruned_at is not null as is_output_pruned"
    };
}

// After the macros: the backends use them by textual scope.
mod enrollment;
mod metered;
mod postgres;
mod recording;
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
    #[error("{what} {value} is above the largest the database can store ({max})", max = i64::MAX)]
    TooLarge { what: &'static str, value: u64 },
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
    group_name: String,
    revoked: bool,
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
        let group = GroupName::parse(&row.group_name)
            .map_err(|e| RowError::bad("agents", key, "group", e))?;
        Ok(Self {
            id: AgentId::from_uuid(row.agent_id),
            name,
            group,
            revoked: row.revoked,
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
    disabled: bool,
    last_login_at: Option<Timestamp>,
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
            disabled: row.disabled,
            last_login_at: row.last_login_at,
        })
    }
}

/// Whether changing a user now `role`/`disabled` by `change` (`None`: deleting them) takes an
/// enabled admin away, so that the store must first check another one remains.
fn loses_admin(role: &str, disabled: bool, change: Option<&UserChange>) -> bool {
    let admin_now = role == Role::Admin.as_str() && !disabled;
    let admin_after = change.is_some_and(|c| {
        c.role
            .map_or(role == Role::Admin.as_str(), |r| r == Role::Admin)
            && !c.disabled.unwrap_or(disabled)
    });
    admin_now && !admin_after
}

/// An unsigned count as stored (`bigint`): more than `i64::MAX` (an uptime, a byte count, a
/// timeout no one will wait for) gets the maximum rather than an error, since such values are
/// informational and the true one is unreachable anyway.
fn u64_to_db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A sum or count a query computed: never negative, so 0 rather than an error if it were.
fn sum_from_db(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A stored unsigned count; a negative one is a corrupt row.
fn u64_from_db(
    table: &'static str,
    key: impl ToString,
    column: &'static str,
    value: i64,
) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| RowError::bad(table, key, column, format!("{value} < 0")))
}

fn opt_u64_from_db(
    table: &'static str,
    key: impl ToString,
    column: &'static str,
    value: Option<i64>,
) -> Result<Option<u64>, StoreError> {
    value
        .map(|v| u64_from_db(table, key, column, v))
        .transpose()
}

/// An output chunk's number as stored. Unlike counts it is a key: saturating would make two
/// chunks collide or reorder, so a number the database cannot hold is refused.
fn seq_to_db(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| {
        StoreError::backend(RowError::TooLarge {
            what: "output chunk number",
            value: seq,
        })
    })
}

/// The most audit entries one `list_audit` returns, whatever the caller asks.
const AUDIT_PAGE_MAX: u32 = 1000;

/// `limit` clamped to `1..=AUDIT_PAGE_MAX`, as bound into `limit`.
fn audit_page_size(limit: u32) -> i64 {
    i64::from(limit.clamp(1, AUDIT_PAGE_MAX))
}

/// The audit columns beyond the common ones, as written: one flattening of an
/// [`AuditEvent`] shared by both backends, so they cannot disagree on what goes where.
struct AuditDetails<'a> {
    command_id: Option<Uuid>,
    command: Option<&'a str>,
    status: Option<&'a str>,
    exit_code: Option<i32>,
    stdout_bytes: Option<i64>,
    stderr_bytes: Option<i64>,
    duration_ms: Option<i64>,
    path: Option<&'a str>,
    direction: Option<&'a str>,
    size_bytes: Option<i64>,
    sha256: Option<&'a str>,
    result: Option<&'a str>,
}

impl<'a> AuditDetails<'a> {
    fn of(event: &'a AuditEvent) -> Self {
        let c = event.command.as_ref();
        let f = event.file.as_ref();
        Self {
            command_id: c.and_then(|c| c.command_id).map(|id| id.as_uuid()),
            command: c.and_then(|c| c.text.as_deref()),
            status: c.and_then(|c| c.status.as_deref()),
            exit_code: c.and_then(|c| c.exit_code),
            stdout_bytes: c.and_then(|c| c.stdout_bytes).map(u64_to_db),
            stderr_bytes: c.and_then(|c| c.stderr_bytes).map(u64_to_db),
            duration_ms: c.and_then(|c| c.duration_ms).map(u64_to_db),
            path: f.map(|f| f.path.as_str()),
            direction: f.map(|f| f.direction.as_str()),
            size_bytes: f.and_then(|f| f.size).map(u64_to_db),
            sha256: f.and_then(|f| f.sha256.as_deref()),
            result: f.map(|f| f.result.as_str()),
        }
    }
}

/// An `audit_events` row with its columns decoded but not yet validated.
struct AuditRow {
    audit_id: i64,
    occurred_at: Timestamp,
    action: String,
    tech_id: Option<Uuid>,
    agent_id: Option<Uuid>,
    session_id: Option<Uuid>,
    detail: Option<String>,
    command_id: Option<Uuid>,
    command: Option<String>,
    status: Option<String>,
    exit_code: Option<i32>,
    stdout_bytes: Option<i64>,
    stderr_bytes: Option<i64>,
    duration_ms: Option<i64>,
    path: Option<String>,
    direction: Option<String>,
    size_bytes: Option<i64>,
    sha256: Option<String>,
    result: Option<String>,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;

    /// The command part is present when any of its columns is set (so a `CommandAudit` with
    /// nothing in it reads back as none); the file part when any of its columns is set, and
    /// then its path, direction and result must all be.
    fn try_from(row: AuditRow) -> Result<Self, Self::Error> {
        const TABLE: &str = "audit_events";
        let key = row.audit_id;
        let action = AuditAction::parse(&row.action).ok_or_else(|| {
            RowError::bad(
                TABLE,
                key,
                "action",
                format!("unknown action {:?}", row.action),
            )
        })?;
        let command = if row.command_id.is_some()
            || row.command.is_some()
            || row.status.is_some()
            || row.exit_code.is_some()
            || row.stdout_bytes.is_some()
            || row.stderr_bytes.is_some()
            || row.duration_ms.is_some()
        {
            Some(CommandAudit {
                command_id: row.command_id.map(CommandId::from_uuid),
                text: row.command,
                status: row.status,
                exit_code: row.exit_code,
                stdout_bytes: opt_u64_from_db(TABLE, key, "stdout_bytes", row.stdout_bytes)?,
                stderr_bytes: opt_u64_from_db(TABLE, key, "stderr_bytes", row.stderr_bytes)?,
                duration_ms: opt_u64_from_db(TABLE, key, "duration_ms", row.duration_ms)?,
            })
        } else {
            None
        };
        let file = match (row.path, row.direction, row.result) {
            (None, None, None) if row.size_bytes.is_none() && row.sha256.is_none() => None,
            (Some(path), Some(direction), Some(result)) => Some(FileAudit {
                path,
                direction,
                size: opt_u64_from_db(TABLE, key, "size_bytes", row.size_bytes)?,
                sha256: row.sha256,
                result,
            }),
            (path, direction, result) => {
                return Err(RowError::bad(
                    TABLE,
                    key,
                    "path/direction/result",
                    format!(
                        "a file entry needs all three, got {:?}/{:?}/{:?}",
                        path.is_some(),
                        direction.is_some(),
                        result.is_some()
                    ),
                ));
            }
        };
        Ok(Self {
            id: row.audit_id,
            event: AuditEvent {
                at: row.occurred_at,
                action,
                user: row.tech_id.map(UserId::from_uuid),
                agent: row.agent_id.map(AgentId::from_uuid),
                session: row.session_id.map(SessionId::from_uuid),
                detail: row.detail,
                command,
                file,
            },
        })
    }
}

/// A `commands` row with its columns decoded but not yet validated.
struct CommandRow {
    command_id: Uuid,
    session_id: Uuid,
    agent_id: Uuid,
    tech_id: Uuid,
    channel_id: String,
    command: String,
    timeout_secs: i64,
    status: String,
    exit_code: Option<i32>,
    signal: Option<String>,
    started_at: Timestamp,
    finished_at: Option<Timestamp>,
    stdout_bytes: i64,
    stderr_bytes: i64,
    stdout_truncated: bool,
    stderr_truncated: bool,
    output_pruned: bool,
    end_reason: Option<String>,
}

impl TryFrom<CommandRow> for CommandRecord {
    type Error = StoreError;

    fn try_from(row: CommandRow) -> Result<Self, Self::Error> {
        const TABLE: &str = "commands";
        let key = row.command_id;
        Ok(Self {
            id: CommandId::from_uuid(row.command_id),
            session: SessionId::from_uuid(row.session_id),
            agent: AgentId::from_uuid(row.agent_id),
            owner: UserId::from_uuid(row.tech_id),
            channel: ChannelId::parse(&row.channel_id)
                .map_err(|e| RowError::bad(TABLE, key, "channel_id", e))?,
            text: row.command,
            timeout_secs: u64_from_db(TABLE, key, "timeout_secs", row.timeout_secs)?,
            status: CommandStatus::parse(&row.status).ok_or_else(|| {
                RowError::bad(
                    TABLE,
                    key,
                    "status",
                    format!("unknown status {:?}", row.status),
                )
            })?,
            exit_code: row.exit_code,
            signal: row.signal,
            end_reason: row
                .end_reason
                .map(|reason| {
                    CommandEndReason::parse(&reason).ok_or_else(|| {
                        RowError::bad(
                            TABLE,
                            key,
                            "end_reason",
                            format!("unknown end reason {reason:?}"),
                        )
                    })
                })
                .transpose()?,
            started_at: row.started_at,
            finished_at: row.finished_at,
            stdout_bytes: u64_from_db(TABLE, key, "stdout_bytes", row.stdout_bytes)?,
            stderr_bytes: u64_from_db(TABLE, key, "stderr_bytes", row.stderr_bytes)?,
            stdout_truncated: row.stdout_truncated,
            stderr_truncated: row.stderr_truncated,
            output_pruned: row.output_pruned,
        })
    }
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
pub fn redact_url(url: &str) -> String {
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
mod tests;
