//! The PostgreSQL store: every storage port over one `sqlx` pool, schema from
//! `migrations/postgres`. Uuids are native `uuid`, times `timestamptz` (microsecond precision,
//! the same as the domain's [`Timestamp`]).

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use rmm_application::{
    AgentRecord, AgentRepository, AuditEntry, AuditEvent, AuditLog, AuditQuery, CommandOutcome,
    CommandRecord, CommandRepository, HostFacts, KeyDigest, OutputStream, SessionRepository,
    StoreError, UserRecord, UserRepository,
};
use rmm_domain::{
    AgentId, CloseReason, CommandId, CommandStatus, Session, SessionId, Timestamp, Username,
};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection as _, Postgres, QueryBuilder, Row as _};
use uuid::Uuid;

use super::{
    AgentRow, AuditDetails, AuditRow, CommandRow, RowError, SessionRow, UserRow, audit_page_size,
    merge_seen, redact_url, seq_to_db, store_error, u64_from_db, u64_to_db,
};

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

fn session_from_row(row: &PgRow) -> Result<Session, StoreError> {
    let decoded = SessionRow {
        session_id: row.try_get("session_id").map_err(store_error)?,
        tech_id: row.try_get("tech_id").map_err(store_error)?,
        agent_id: row.try_get("agent_id").map_err(store_error)?,
        opened_at: from_db(row.try_get("opened_at").map_err(store_error)?),
        last_activity: from_db(row.try_get("last_activity").map_err(store_error)?),
        status: row.try_get("status").map_err(store_error)?,
        closed_at: row
            .try_get::<Option<DateTime<Utc>>, _>("closed_at")
            .map_err(store_error)?
            .map(from_db),
        close_reason: row.try_get("close_reason").map_err(store_error)?,
    };
    Session::try_from(decoded)
}

fn sessions_from_rows(rows: &[PgRow]) -> Result<Vec<Session>, StoreError> {
    rows.iter().map(session_from_row).collect()
}

fn agent_from_row(row: &PgRow) -> Result<AgentRecord, StoreError> {
    let decoded = AgentRow {
        agent_id: row.try_get("agent_id").map_err(store_error)?,
        name: row.try_get("name").map_err(store_error)?,
        key_digest: row.try_get("key_digest").map_err(store_error)?,
        created_at: from_db(row.try_get("created_at").map_err(store_error)?),
        last_seen: row
            .try_get::<Option<DateTime<Utc>>, _>("last_seen")
            .map_err(store_error)?
            .map(from_db),
        agent_version: row.try_get("agent_version").map_err(store_error)?,
        hostname: row.try_get("hostname").map_err(store_error)?,
        os: row.try_get("os").map_err(store_error)?,
        uptime_secs: row.try_get("uptime_secs").map_err(store_error)?,
    };
    AgentRecord::try_from(decoded)
}

fn user_from_row(row: &PgRow) -> Result<UserRecord, StoreError> {
    let decoded = UserRow {
        user_id: row.try_get("user_id").map_err(store_error)?,
        username: row.try_get("username").map_err(store_error)?,
        password_hash: row.try_get("password_hash").map_err(store_error)?,
        role: row.try_get("role").map_err(store_error)?,
        created_at: from_db(row.try_get("created_at").map_err(store_error)?),
    };
    UserRecord::try_from(decoded)
}

fn opt_time(row: &PgRow, column: &str) -> Result<Option<Timestamp>, StoreError> {
    Ok(row
        .try_get::<Option<DateTime<Utc>>, _>(column)
        .map_err(store_error)?
        .map(from_db))
}

fn audit_from_row(row: &PgRow) -> Result<AuditEntry, StoreError> {
    let decoded = AuditRow {
        audit_id: row.try_get("audit_id").map_err(store_error)?,
        occurred_at: from_db(row.try_get("occurred_at").map_err(store_error)?),
        action: row.try_get("action").map_err(store_error)?,
        tech_id: row.try_get("tech_id").map_err(store_error)?,
        agent_id: row.try_get("agent_id").map_err(store_error)?,
        session_id: row.try_get("session_id").map_err(store_error)?,
        detail: row.try_get("detail").map_err(store_error)?,
        command_id: row.try_get("command_id").map_err(store_error)?,
        command: row.try_get("command").map_err(store_error)?,
        status: row.try_get("status").map_err(store_error)?,
        exit_code: row.try_get("exit_code").map_err(store_error)?,
        stdout_bytes: row.try_get("stdout_bytes").map_err(store_error)?,
        stderr_bytes: row.try_get("stderr_bytes").map_err(store_error)?,
        duration_ms: row.try_get("duration_ms").map_err(store_error)?,
        path: row.try_get("path").map_err(store_error)?,
        direction: row.try_get("direction").map_err(store_error)?,
        size_bytes: row.try_get("size_bytes").map_err(store_error)?,
        sha256: row.try_get("sha256").map_err(store_error)?,
        result: row.try_get("result").map_err(store_error)?,
    };
    AuditEntry::try_from(decoded)
}

fn command_from_row(row: &PgRow) -> Result<CommandRecord, StoreError> {
    let decoded = CommandRow {
        command_id: row.try_get("command_id").map_err(store_error)?,
        session_id: row.try_get("session_id").map_err(store_error)?,
        agent_id: row.try_get("agent_id").map_err(store_error)?,
        tech_id: row.try_get("tech_id").map_err(store_error)?,
        channel_id: row.try_get("channel_id").map_err(store_error)?,
        command: row.try_get("command").map_err(store_error)?,
        timeout_secs: row.try_get("timeout_secs").map_err(store_error)?,
        status: row.try_get("status").map_err(store_error)?,
        exit_code: row.try_get("exit_code").map_err(store_error)?,
        signal: row.try_get("signal").map_err(store_error)?,
        started_at: from_db(row.try_get("started_at").map_err(store_error)?),
        finished_at: opt_time(row, "finished_at")?,
        stdout_bytes: row.try_get("stdout_bytes").map_err(store_error)?,
        stderr_bytes: row.try_get("stderr_bytes").map_err(store_error)?,
        stdout_truncated: row.try_get("stdout_truncated").map_err(store_error)?,
        stderr_truncated: row.try_get("stderr_truncated").map_err(store_error)?,
    };
    CommandRecord::try_from(decoded)
}

impl SessionRepository for PgStore {
    async fn insert_pending(&self, session: &Session) -> Result<(), StoreError> {
        sqlx::query(
            "insert into tech_sessions (session_id, tech_id, agent_id, opened_at, last_activity, \
             status, closed_at, close_reason) values ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(session.id().as_uuid())
        .bind(session.owner().as_uuid())
        .bind(session.agent().as_uuid())
        .bind(to_db(session.opened_at())?)
        .bind(to_db(session.last_activity())?)
        .bind(session.status().as_str())
        .bind(session.closed_at().map(to_db).transpose()?)
        .bind(session.close_reason().map(CloseReason::as_str))
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(concat!(
            "select ",
            session_columns!(),
            " from tech_sessions where session_id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn activate(&self, id: SessionId, now: Timestamp) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "update tech_sessions set status = 'active', \
             last_activity = greatest(last_activity, $2) \
             where session_id = $1 and status = 'pending'",
        )
        .bind(id.as_uuid())
        .bind(to_db(now)?)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn close(
        &self,
        id: SessionId,
        reason: CloseReason,
        now: Timestamp,
    ) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(concat!(
            "update tech_sessions set status = 'closed', closed_at = $2, close_reason = $3 \
             where session_id = $1 and status in ('pending', 'active') returning ",
            session_columns!()
        ))
        .bind(id.as_uuid())
        .bind(to_db(now)?)
        .bind(reason.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn close_all_open(
        &self,
        reason: CloseReason,
        now: Timestamp,
    ) -> Result<Vec<Session>, StoreError> {
        let rows = sqlx::query(concat!(
            "update tech_sessions set status = 'closed', closed_at = $1, close_reason = $2 \
             where status in ('pending', 'active') returning ",
            session_columns!()
        ))
        .bind(to_db(now)?)
        .bind(reason.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        sessions_from_rows(&rows)
    }

    async fn close_idle(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<Session>, StoreError> {
        let rows = sqlx::query(concat!(
            "update tech_sessions set status = 'closed', closed_at = $2, close_reason = $3 \
             where status = 'active' and last_activity < $1 returning ",
            session_columns!()
        ))
        .bind(to_db(cutoff)?)
        .bind(to_db(now)?)
        .bind(CloseReason::Idle.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        sessions_from_rows(&rows)
    }

    async fn touch(&self, ids: &[SessionId], at: Timestamp) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = ids.iter().map(SessionId::as_uuid).collect();
        sqlx::query(
            "update tech_sessions set last_activity = greatest(last_activity, $2) \
             where session_id = any($1) and status = 'active'",
        )
        .bind(ids)
        .bind(to_db(at)?)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }
}

impl AgentRepository for PgStore {
    async fn insert_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "insert into agents (",
            agent_columns!(),
            ") values ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(agent.id.as_uuid())
        .bind(agent.name.as_str())
        .bind(&agent.key_digest.0[..])
        .bind(to_db(agent.created_at)?)
        .bind(agent.last_seen.map(to_db).transpose()?)
        .bind(agent.facts.version.as_deref())
        .bind(agent.facts.hostname.as_deref())
        .bind(agent.facts.os.as_deref())
        .bind(agent.facts.uptime_secs.map(u64_to_db))
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn find_agent_by_key(
        &self,
        digest: KeyDigest,
    ) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "select ",
            agent_columns!(),
            " from agents where key_digest = $1"
        ))
        .bind(&digest.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        // Byte order, as SQLite's default BINARY collation sorts: the same list on both
        // backends whatever the server's locale.
        let rows = sqlx::query(concat!(
            "select ",
            agent_columns!(),
            " from agents order by name collate \"C\", agent_id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn record_seen(
        &self,
        seen: &[(AgentId, Timestamp, Option<HostFacts>)],
    ) -> Result<(), StoreError> {
        let updates = merge_seen(seen);
        if updates.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(updates.len());
        let mut times = Vec::with_capacity(updates.len());
        let mut versions = Vec::with_capacity(updates.len());
        let mut hostnames = Vec::with_capacity(updates.len());
        let mut oses = Vec::with_capacity(updates.len());
        let mut uptimes = Vec::with_capacity(updates.len());
        for u in updates {
            ids.push(u.agent.as_uuid());
            times.push(to_db(u.at)?);
            versions.push(u.facts.version);
            hostnames.push(u.facts.hostname);
            oses.push(u.facts.os);
            uptimes.push(u.facts.uptime_secs.map(u64_to_db));
        }
        // One statement for the whole batch (merge_seen left one row per agent, so no agent
        // matches twice). Facts are taken only from a batch at least as new as the stored
        // last_seen; the right-hand sides all see the row's old values.
        sqlx::query(
            "update agents as a set \
               last_seen = greatest(coalesce(a.last_seen, s.seen_at), s.seen_at), \
               agent_version = case when s.seen_at >= coalesce(a.last_seen, s.seen_at) \
                 then coalesce(s.agent_version, a.agent_version) else a.agent_version end, \
               hostname = case when s.seen_at >= coalesce(a.last_seen, s.seen_at) \
                 then coalesce(s.hostname, a.hostname) else a.hostname end, \
               os = case when s.seen_at >= coalesce(a.last_seen, s.seen_at) \
                 then coalesce(s.os, a.os) else a.os end, \
               uptime_secs = case when s.seen_at >= coalesce(a.last_seen, s.seen_at) \
                 then coalesce(s.uptime_secs, a.uptime_secs) else a.uptime_secs end \
             from unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], \
                         $6::int8[]) \
               as s(agent_id, seen_at, agent_version, hostname, os, uptime_secs) \
             where a.agent_id = s.agent_id",
        )
        .bind(ids)
        .bind(times)
        .bind(versions)
        .bind(hostnames)
        .bind(oses)
        .bind(uptimes)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }
}

impl UserRepository for PgStore {
    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "insert into users (",
            user_columns!(),
            ") values ($1, $2, $3, $4, $5)"
        ))
        .bind(user.id.as_uuid())
        .bind(user.username.as_str())
        .bind(user.password_hash.as_str())
        .bind(user.role.as_str())
        .bind(to_db(user.created_at)?)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn find_user(&self, username: &Username) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "select ",
            user_columns!(),
            " from users where username = $1"
        ))
        .bind(username.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("select count(*) from users")
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
        u64::try_from(n).map_err(StoreError::backend)
    }
}

impl AuditLog for PgStore {
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let d = AuditDetails::of(event);
        sqlx::query(
            "insert into audit_events (occurred_at, action, tech_id, agent_id, session_id, detail, \
             command_id, command, status, exit_code, stdout_bytes, stderr_bytes, duration_ms, \
             path, direction, size_bytes, sha256, result) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
             $18)",
        )
        .bind(to_db(event.at)?)
        .bind(event.action.as_str())
        .bind(event.user.map(|u| u.as_uuid()))
        .bind(event.agent.map(|a| a.as_uuid()))
        .bind(event.session.map(|s| s.as_uuid()))
        .bind(event.detail.as_deref())
        .bind(d.command_id)
        .bind(d.command)
        .bind(d.status)
        .bind(d.exit_code)
        .bind(d.stdout_bytes)
        .bind(d.stderr_bytes)
        .bind(d.duration_ms)
        .bind(d.path)
        .bind(d.direction)
        .bind(d.size_bytes)
        .bind(d.sha256)
        .bind(d.result)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        // Only the filters in use go into the statement (from fixed fragments; every value is
        // bound), so each combination gets its own prepared statement and a plan that can use
        // the (tech_id, audit_id) / (agent_id, audit_id) indexes. `$n is null or ...` in one
        // static statement would push PostgreSQL's cached generic plan to a filtered scan.
        let mut sql = QueryBuilder::<Postgres>::new(concat!(
            "select ",
            audit_columns!(),
            " from audit_events where true"
        ));
        if let Some(user) = query.user {
            sql.push(" and tech_id = ").push_bind(user.as_uuid());
        }
        if let Some(agent) = query.agent {
            sql.push(" and agent_id = ").push_bind(agent.as_uuid());
        }
        if let Some(session) = query.session {
            sql.push(" and session_id = ").push_bind(session.as_uuid());
        }
        if let Some(since) = query.since {
            sql.push(" and occurred_at >= ").push_bind(to_db(since)?);
        }
        if let Some(until) = query.until {
            sql.push(" and occurred_at < ").push_bind(to_db(until)?);
        }
        if let Some(before) = query.before {
            sql.push(" and audit_id < ").push_bind(before);
        }
        sql.push(" order by audit_id desc limit ")
            .push_bind(audit_page_size(query.limit));
        let rows = sql
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter().map(audit_from_row).collect()
    }
}

impl CommandRepository for PgStore {
    async fn insert_command(&self, command: &CommandRecord) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "insert into commands (",
            command_columns!(),
            ") values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        ))
        .bind(command.id.as_uuid())
        .bind(command.session.as_uuid())
        .bind(command.agent.as_uuid())
        .bind(command.owner.as_uuid())
        .bind(command.channel.as_str())
        .bind(command.text.as_str())
        .bind(u64_to_db(command.timeout_secs))
        .bind(command.status.as_str())
        .bind(command.exit_code)
        .bind(command.signal.as_deref())
        .bind(to_db(command.started_at)?)
        .bind(command.finished_at.map(to_db).transpose()?)
        .bind(u64_to_db(command.stdout_bytes))
        .bind(u64_to_db(command.stderr_bytes))
        .bind(command.stdout_truncated)
        .bind(command.stderr_truncated)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn get_command(&self, id: CommandId) -> Result<Option<CommandRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "select ",
            command_columns!(),
            " from commands where command_id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.as_ref().map(command_from_row).transpose()
    }

    async fn append_output(
        &self,
        id: CommandId,
        stream: OutputStream,
        seq: u64,
        data: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "insert into command_output (command_id, stream, seq, data) values ($1, $2, $3, $4)",
        )
        .bind(id.as_uuid())
        .bind(stream.as_str())
        .bind(seq_to_db(seq)?)
        .bind(data)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn read_output(
        &self,
        id: CommandId,
        stream: OutputStream,
        from: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "select seq, data from command_output \
             where command_id = $1 and stream = $2 and seq >= $3 order by seq limit $4",
        )
        .bind(id.as_uuid())
        .bind(stream.as_str())
        .bind(u64_to_db(from))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.into_iter()
            .map(|(seq, data)| Ok((u64_from_db("command_output", id, "seq", seq)?, data)))
            .collect()
    }

    async fn finish_command(
        &self,
        id: CommandId,
        outcome: &CommandOutcome,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "update commands set status = $2, exit_code = $3, signal = $4, finished_at = $5, \
             stdout_bytes = $6, stderr_bytes = $7, stdout_truncated = $8, stderr_truncated = $9 \
             where command_id = $1 and status = 'running'",
        )
        .bind(id.as_uuid())
        .bind(outcome.status.as_str())
        .bind(outcome.exit_code)
        .bind(outcome.signal.as_deref())
        .bind(to_db(outcome.finished_at)?)
        .bind(u64_to_db(outcome.stdout_bytes))
        .bind(u64_to_db(outcome.stderr_bytes))
        .bind(outcome.stdout_truncated)
        .bind(outcome.stderr_truncated)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn fail_running_commands(
        &self,
        status: CommandStatus,
        at: Timestamp,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "update commands set status = $1, finished_at = $2 where status = 'running' \
             returning ",
            command_columns!()
        ))
        .bind(status.as_str())
        .bind(to_db(at)?)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter().map(command_from_row).collect()
    }
}
