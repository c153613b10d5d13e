//! The SQLite store: every storage port over one `sqlx` pool on a database file, schema from
//! `migrations/sqlite`. Uuids are stored as hyphenated text and times as integer unix
//! microseconds, so the file stays readable in the `sqlite3` shell.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use rmm_application::{
    AgentRecord, AgentRepository, AuditEntry, AuditEvent, AuditLog, AuditQuery, CommandOutcome,
    CommandRecord, CommandRepository, HostFacts, KeyDigest, OutputStream, SessionRepository,
    StoreError, UserRecord, UserRepository,
};
use rmm_domain::{
    AgentId, CloseReason, CommandId, CommandStatus, Session, SessionId, Timestamp, Username,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row as _, Sqlite};
use uuid::Uuid;

use super::{
    AgentRow, AuditDetails, AuditRow, CommandRow, RowError, SessionRow, UserRow, audit_page_size,
    merge_seen, redact_url, seq_to_db, store_error, u64_from_db, u64_to_db,
};

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

fn session_from_row(row: &SqliteRow) -> Result<Session, StoreError> {
    let decoded = SessionRow {
        session_id: uuid_column(row, "tech_sessions", "session_id")?,
        tech_id: uuid_column(row, "tech_sessions", "tech_id")?,
        agent_id: uuid_column(row, "tech_sessions", "agent_id")?,
        opened_at: time_column(row, "opened_at")?,
        last_activity: time_column(row, "last_activity")?,
        status: row.try_get("status").map_err(store_error)?,
        closed_at: opt_time_column(row, "closed_at")?,
        close_reason: row.try_get("close_reason").map_err(store_error)?,
    };
    Session::try_from(decoded)
}

fn sessions_from_rows(rows: &[SqliteRow]) -> Result<Vec<Session>, StoreError> {
    rows.iter().map(session_from_row).collect()
}

fn agent_from_row(row: &SqliteRow) -> Result<AgentRecord, StoreError> {
    let decoded = AgentRow {
        agent_id: uuid_column(row, "agents", "agent_id")?,
        name: row.try_get("name").map_err(store_error)?,
        key_digest: row.try_get("key_digest").map_err(store_error)?,
        created_at: time_column(row, "created_at")?,
        last_seen: opt_time_column(row, "last_seen")?,
        agent_version: row.try_get("agent_version").map_err(store_error)?,
        hostname: row.try_get("hostname").map_err(store_error)?,
        os: row.try_get("os").map_err(store_error)?,
        uptime_secs: row.try_get("uptime_secs").map_err(store_error)?,
    };
    AgentRecord::try_from(decoded)
}

fn user_from_row(row: &SqliteRow) -> Result<UserRecord, StoreError> {
    let decoded = UserRow {
        user_id: uuid_column(row, "users", "user_id")?,
        username: row.try_get("username").map_err(store_error)?,
        password_hash: row.try_get("password_hash").map_err(store_error)?,
        role: row.try_get("role").map_err(store_error)?,
        created_at: time_column(row, "created_at")?,
    };
    UserRecord::try_from(decoded)
}

fn audit_from_row(row: &SqliteRow) -> Result<AuditEntry, StoreError> {
    const TABLE: &str = "audit_events";
    let decoded = AuditRow {
        audit_id: row.try_get("audit_id").map_err(store_error)?,
        occurred_at: time_column(row, "occurred_at")?,
        action: row.try_get("action").map_err(store_error)?,
        tech_id: opt_uuid_column(row, TABLE, "tech_id")?,
        agent_id: opt_uuid_column(row, TABLE, "agent_id")?,
        session_id: opt_uuid_column(row, TABLE, "session_id")?,
        detail: row.try_get("detail").map_err(store_error)?,
        command_id: opt_uuid_column(row, TABLE, "command_id")?,
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

fn command_from_row(row: &SqliteRow) -> Result<CommandRecord, StoreError> {
    const TABLE: &str = "commands";
    let decoded = CommandRow {
        command_id: uuid_column(row, TABLE, "command_id")?,
        session_id: uuid_column(row, TABLE, "session_id")?,
        agent_id: uuid_column(row, TABLE, "agent_id")?,
        tech_id: uuid_column(row, TABLE, "tech_id")?,
        channel_id: row.try_get("channel_id").map_err(store_error)?,
        command: row.try_get("command").map_err(store_error)?,
        timeout_secs: row.try_get("timeout_secs").map_err(store_error)?,
        status: row.try_get("status").map_err(store_error)?,
        exit_code: row.try_get("exit_code").map_err(store_error)?,
        signal: row.try_get("signal").map_err(store_error)?,
        started_at: time_column(row, "started_at")?,
        finished_at: opt_time_column(row, "finished_at")?,
        stdout_bytes: row.try_get("stdout_bytes").map_err(store_error)?,
        stderr_bytes: row.try_get("stderr_bytes").map_err(store_error)?,
        stdout_truncated: row.try_get("stdout_truncated").map_err(store_error)?,
        stderr_truncated: row.try_get("stderr_truncated").map_err(store_error)?,
    };
    CommandRecord::try_from(decoded)
}

impl SessionRepository for SqliteStore {
    async fn insert_pending(&self, session: &Session) -> Result<(), StoreError> {
        sqlx::query(
            "insert into tech_sessions (session_id, tech_id, agent_id, opened_at, last_activity, \
             status, closed_at, close_reason) values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(id_text(session.id().as_uuid()))
        .bind(id_text(session.owner().as_uuid()))
        .bind(id_text(session.agent().as_uuid()))
        .bind(micros(session.opened_at()))
        .bind(micros(session.last_activity()))
        .bind(session.status().as_str())
        .bind(session.closed_at().map(micros))
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
            " from tech_sessions where session_id = ?1"
        ))
        .bind(id_text(id.as_uuid()))
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn activate(&self, id: SessionId, now: Timestamp) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "update tech_sessions set status = 'active', last_activity = max(last_activity, ?2) \
             where session_id = ?1 and status = 'pending'",
        )
        .bind(id_text(id.as_uuid()))
        .bind(micros(now))
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
            "update tech_sessions set status = 'closed', closed_at = ?2, close_reason = ?3 \
             where session_id = ?1 and status in ('pending', 'active') returning ",
            session_columns!()
        ))
        .bind(id_text(id.as_uuid()))
        .bind(micros(now))
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
            "update tech_sessions set status = 'closed', closed_at = ?1, close_reason = ?2 \
             where status in ('pending', 'active') returning ",
            session_columns!()
        ))
        .bind(micros(now))
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
            "update tech_sessions set status = 'closed', closed_at = ?2, close_reason = ?3 \
             where status = 'active' and last_activity < ?1 returning ",
            session_columns!()
        ))
        .bind(micros(cutoff))
        .bind(micros(now))
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
        // The batch travels as one JSON array parameter, so the statement stays static and
        // one statement whatever the batch size (no `in (?, ?, ...)` built at run time, no
        // limit on bound variables).
        let ids: Vec<String> = ids.iter().map(|id| id_text(id.as_uuid())).collect();
        let ids = serde_json::to_string(&ids).map_err(StoreError::backend)?;
        sqlx::query(
            "update tech_sessions set last_activity = max(last_activity, ?2) \
             where session_id in (select value from json_each(?1)) and status = 'active'",
        )
        .bind(ids)
        .bind(micros(at))
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }
}

impl AgentRepository for SqliteStore {
    async fn insert_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "insert into agents (",
            agent_columns!(),
            ") values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        ))
        .bind(id_text(agent.id.as_uuid()))
        .bind(agent.name.as_str())
        .bind(&agent.key_digest.0[..])
        .bind(micros(agent.created_at))
        .bind(agent.last_seen.map(micros))
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
            " from agents where key_digest = ?1"
        ))
        .bind(&digest.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        // BINARY collation: byte order, which the PostgreSQL store matches with `collate "C"`.
        let rows = sqlx::query(concat!(
            "select ",
            agent_columns!(),
            " from agents order by name, agent_id"
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
        // One transaction, one fsync for the batch. Its first statement writes, so the write
        // lock is taken up front and the busy timeout applies (no read-to-write upgrade).
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        for u in updates {
            // Facts are taken only from a batch at least as new as the stored last_seen; the
            // right-hand sides all see the row's old values.
            sqlx::query(
                "update agents set \
                   last_seen = max(coalesce(last_seen, ?2), ?2), \
                   agent_version = case when ?2 >= coalesce(last_seen, ?2) \
                     then coalesce(?3, agent_version) else agent_version end, \
                   hostname = case when ?2 >= coalesce(last_seen, ?2) \
                     then coalesce(?4, hostname) else hostname end, \
                   os = case when ?2 >= coalesce(last_seen, ?2) \
                     then coalesce(?5, os) else os end, \
                   uptime_secs = case when ?2 >= coalesce(last_seen, ?2) \
                     then coalesce(?6, uptime_secs) else uptime_secs end \
                 where agent_id = ?1",
            )
            .bind(id_text(u.agent.as_uuid()))
            .bind(micros(u.at))
            .bind(u.facts.version)
            .bind(u.facts.hostname)
            .bind(u.facts.os)
            .bind(u.facts.uptime_secs.map(u64_to_db))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)
    }
}

impl UserRepository for SqliteStore {
    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "insert into users (",
            user_columns!(),
            ") values (?1, ?2, ?3, ?4, ?5)"
        ))
        .bind(id_text(user.id.as_uuid()))
        .bind(user.username.as_str())
        .bind(user.password_hash.as_str())
        .bind(user.role.as_str())
        .bind(micros(user.created_at))
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn find_user(&self, username: &Username) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "select ",
            user_columns!(),
            " from users where username = ?1"
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

impl AuditLog for SqliteStore {
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let d = AuditDetails::of(event);
        sqlx::query(
            "insert into audit_events (occurred_at, action, tech_id, agent_id, session_id, detail, \
             command_id, command, status, exit_code, stdout_bytes, stderr_bytes, duration_ms, \
             path, direction, size_bytes, sha256, result) \
             values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
             ?18)",
        )
        .bind(micros(event.at))
        .bind(event.action.as_str())
        .bind(event.user.map(|u| id_text(u.as_uuid())))
        .bind(event.agent.map(|a| id_text(a.as_uuid())))
        .bind(event.session.map(|s| id_text(s.as_uuid())))
        .bind(event.detail.as_deref())
        .bind(d.command_id.map(id_text))
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
        // bound): SQLite plans a statement once, and `?n is null or ...` would keep it off the
        // (tech_id, audit_id) / (agent_id, audit_id) indexes for good.
        let mut sql = QueryBuilder::<Sqlite>::new(concat!(
            "select ",
            audit_columns!(),
            " from audit_events where true"
        ));
        if let Some(user) = query.user {
            sql.push(" and tech_id = ")
                .push_bind(id_text(user.as_uuid()));
        }
        if let Some(agent) = query.agent {
            sql.push(" and agent_id = ")
                .push_bind(id_text(agent.as_uuid()));
        }
        if let Some(session) = query.session {
            sql.push(" and session_id = ")
                .push_bind(id_text(session.as_uuid()));
        }
        if let Some(since) = query.since {
            sql.push(" and occurred_at >= ").push_bind(micros(since));
        }
        if let Some(until) = query.until {
            sql.push(" and occurred_at < ").push_bind(micros(until));
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

impl CommandRepository for SqliteStore {
    async fn insert_command(&self, command: &CommandRecord) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "insert into commands (",
            command_columns!(),
            ") values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
        ))
        .bind(id_text(command.id.as_uuid()))
        .bind(id_text(command.session.as_uuid()))
        .bind(id_text(command.agent.as_uuid()))
        .bind(id_text(command.owner.as_uuid()))
        .bind(command.channel.as_str())
        .bind(command.text.as_str())
        .bind(u64_to_db(command.timeout_secs))
        .bind(command.status.as_str())
        .bind(command.exit_code)
        .bind(command.signal.as_deref())
        .bind(micros(command.started_at))
        .bind(command.finished_at.map(micros))
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
            " from commands where command_id = ?1"
        ))
        .bind(id_text(id.as_uuid()))
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
            "insert into command_output (command_id, stream, seq, data) values (?1, ?2, ?3, ?4)",
        )
        .bind(id_text(id.as_uuid()))
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
             where command_id = ?1 and stream = ?2 and seq >= ?3 order by seq limit ?4",
        )
        .bind(id_text(id.as_uuid()))
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
            "update commands set status = ?2, exit_code = ?3, signal = ?4, finished_at = ?5, \
             stdout_bytes = ?6, stderr_bytes = ?7, stdout_truncated = ?8, stderr_truncated = ?9 \
             where command_id = ?1 and status = 'running'",
        )
        .bind(id_text(id.as_uuid()))
        .bind(outcome.status.as_str())
        .bind(outcome.exit_code)
        .bind(outcome.signal.as_deref())
        .bind(micros(outcome.finished_at))
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
            "update commands set status = ?1, finished_at = ?2 where status = 'running' \
             returning ",
            command_columns!()
        ))
        .bind(status.as_str())
        .bind(micros(at))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter().map(command_from_row).collect()
    }
}
