//! The storage contract, written once and run against every SQL store: each behaviour below is
//! a function generic over a [`Backend`], and `contract!` instantiates it as `pg::<name>`
//! (a brand-new database on the test PostgreSQL container) and `sqlite::<name>` (a file in a
//! temporary folder). Expected sessions are computed with the domain's own transitions, so the
//! stores are held to the same rules as the model.
//!
//! Run one half with `cargo test -p rmm-adapters --test store_contract sqlite` (or `pg`); the
//! PostgreSQL image comes from `RMM_TEST_PG_IMAGE`.

use anyhow::{Context as _, ensure};
use rmm_application::{
    AgentRecord, AgentRepository, AuditAction, AuditEntry, AuditEvent, AuditLog, AuditNote,
    AuditQuery, CommandAudit, CommandOutcome, CommandRecord, CommandRepository, FileAudit,
    GroupRepository, HostFacts, KeyDigest, OutputStream, SessionRepository, StoreError, UserRecord,
    UserRepository,
};
use rmm_domain::{
    AgentId, AgentName, ChannelId, CloseReason, CommandEndReason, CommandId, CommandStatus, Role,
    Session, SessionId, SessionStatus, Timestamp, UserId, Username,
};
use rmm_store::{PgStore, SqliteStore};
use tempfile::TempDir;
use uuid::Uuid;

/// Everything a SQL store implements.
trait Store:
    SessionRepository
    + AgentRepository
    + UserRepository
    + GroupRepository
    + AuditLog
    + CommandRepository
    + rmm_application::EnrollmentRepository
    + rmm_application::RecordingRepository
{
}
impl<T> Store for T where
    T: SessionRepository
        + AgentRepository
        + UserRepository
        + GroupRepository
        + AuditLog
        + CommandRepository
        + rmm_application::EnrollmentRepository
        + rmm_application::RecordingRepository
{
}

/// A store on a fresh database, plus the raw SQL access the ports deliberately lack (deleting
/// users, agents and sessions, counting output rows, reading and tampering with the audit
/// table).
trait Backend: Sized {
    type Store: Store;

    async fn fresh() -> anyhow::Result<Self>;
    fn store(&self) -> &Self::Store;
    /// Closes and drops the store, then opens the same database again.
    async fn reopen(self) -> anyhow::Result<Self>;
    async fn delete_user(&self, id: UserId) -> anyhow::Result<()>;
    async fn delete_agent(&self, id: AgentId) -> anyhow::Result<()>;
    /// Moves an agent into the group named `group` (no port does yet).
    async fn move_agent(&self, id: AgentId, group: &str) -> anyhow::Result<()>;
    /// Adds a group named `name` (agents can then be moved to it).
    async fn add_group_for_agents(&self, name: &str) -> anyhow::Result<()>;
    async fn delete_session(&self, id: SessionId) -> anyhow::Result<()>;
    /// Rows in `command_output`, of every command.
    async fn output_rows(&self) -> anyhow::Result<i64>;
    /// The audit table's actions, oldest first, but the fixtures' `user_created`.
    async fn audit_actions(&self) -> anyhow::Result<Vec<String>>;
    async fn update_audit(&self) -> Result<u64, sqlx::Error>;
    async fn delete_audit(&self) -> Result<u64, sqlx::Error>;
    /// From now on every insert into the audit table fails, in the database itself.
    async fn fail_audit_inserts(&self) -> anyhow::Result<()>;
    /// Undoes [`Self::fail_audit_inserts`].
    async fn restore_audit_inserts(&self) -> anyhow::Result<()>;
}

struct Pg {
    url: String,
    store: PgStore,
}

impl Backend for Pg {
    type Store = PgStore;

    async fn fresh() -> anyhow::Result<Self> {
        let url = rmm_e2e::pg::fresh_database().await?;
        let store = PgStore::connect(&url).await?;
        Ok(Self { url, store })
    }

    fn store(&self) -> &PgStore {
        &self.store
    }

    async fn reopen(self) -> anyhow::Result<Self> {
        self.store.pool().close().await;
        drop(self.store);
        let store = PgStore::connect(&self.url).await?;
        Ok(Self {
            url: self.url,
            store,
        })
    }

    async fn delete_user(&self, id: UserId) -> anyhow::Result<()> {
        sqlx::query("delete from users where user_id = $1")
            .bind(id.as_uuid())
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    async fn delete_agent(&self, id: AgentId) -> anyhow::Result<()> {
        sqlx::query("delete from agents where agent_id = $1")
            .bind(id.as_uuid())
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    async fn move_agent(&self, id: AgentId, group: &str) -> anyhow::Result<()> {
        sqlx::query(
            "update agents set group_id = (select group_id from groups where name = $2) \
             where agent_id = $1",
        )
        .bind(id.as_uuid())
        .bind(group)
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    async fn add_group_for_agents(&self, name: &str) -> anyhow::Result<()> {
        sqlx::query("insert into groups (group_id, name) values ($1, $2)")
            .bind(Uuid::new_v4())
            .bind(name)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    async fn delete_session(&self, id: SessionId) -> anyhow::Result<()> {
        sqlx::query("delete from tech_sessions where session_id = $1")
            .bind(id.as_uuid())
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    async fn output_rows(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("select count(*) from command_output")
            .fetch_one(self.store.pool())
            .await?)
    }

    async fn audit_actions(&self) -> anyhow::Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "select action from audit_events where action <> 'user_created' order by audit_id",
        )
        .fetch_all(self.store.pool())
        .await?)
    }

    async fn update_audit(&self) -> Result<u64, sqlx::Error> {
        sqlx::query("update audit_events set detail = 'rewritten', result = 'ok'")
            .execute(self.store.pool())
            .await
            .map(|r| r.rows_affected())
    }

    async fn delete_audit(&self) -> Result<u64, sqlx::Error> {
        sqlx::query("delete from audit_events")
            .execute(self.store.pool())
            .await
            .map(|r| r.rows_affected())
    }

    async fn fail_audit_inserts(&self) -> anyhow::Result<()> {
        sqlx::query(
            "create or replace function inject_audit_failure() returns trigger \
             language plpgsql as $$ begin raise exception 'injected audit failure'; end $$",
        )
        .execute(self.store.pool())
        .await?;
        sqlx::query(
            "create trigger inject_audit_failure before insert on audit_events \
             for each row execute function inject_audit_failure()",
        )
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    async fn restore_audit_inserts(&self) -> anyhow::Result<()> {
        sqlx::query("drop trigger inject_audit_failure on audit_events")
            .execute(self.store.pool())
            .await?;
        Ok(())
    }
}

struct Sqlite {
    /// Removed (with the database) when the test ends.
    dir: TempDir,
    store: SqliteStore,
}

impl Backend for Sqlite {
    type Store = SqliteStore;

    async fn fresh() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        // A folder that does not exist yet: connect must create it.
        let store =
            SqliteStore::connect(&rmm_e2e::pg::sqlite_url(&dir.path().join("data"))).await?;
        Ok(Self { dir, store })
    }

    fn store(&self) -> &SqliteStore {
        &self.store
    }

    async fn reopen(self) -> anyhow::Result<Self> {
        self.store.pool().close().await;
        drop(self.store);
        let url = rmm_e2e::pg::sqlite_url(&self.dir.path().join("data"));
        let store = SqliteStore::connect(&url).await?;
        Ok(Self {
            dir: self.dir,
            store,
        })
    }

    async fn delete_user(&self, id: UserId) -> anyhow::Result<()> {
        sqlx::query("delete from users where user_id = ?1")
            .bind(id.to_string())
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    async fn delete_agent(&self, id: AgentId) -> anyhow::Result<()> {
        sqlx::query("delete from agents where agent_id = ?1")
            .bind(id.to_string())
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    async fn move_agent(&self, id: AgentId, group: &str) -> anyhow::Result<()> {
        sqlx::query(
            "update agents set group_id = (select group_id from groups where name = ?2) \
             where agent_id = ?1",
        )
        .bind(id.to_string())
        .bind(group)
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    async fn add_group_for_agents(&self, name: &str) -> anyhow::Result<()> {
        sqlx::query("insert into groups (group_id, name, created_at) values (?1, ?2, 0)")
            .bind(Uuid::new_v4().to_string())
            .bind(name)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    async fn delete_session(&self, id: SessionId) -> anyhow::Result<()> {
        sqlx::query("delete from tech_sessions where session_id = ?1")
            .bind(id.to_string())
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    async fn output_rows(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("select count(*) from command_output")
            .fetch_one(self.store.pool())
            .await?)
    }

    async fn audit_actions(&self) -> anyhow::Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "select action from audit_events where action <> 'user_created' order by audit_id",
        )
        .fetch_all(self.store.pool())
        .await?)
    }

    async fn update_audit(&self) -> Result<u64, sqlx::Error> {
        sqlx::query("update audit_events set detail = 'rewritten', result = 'ok'")
            .execute(self.store.pool())
            .await
            .map(|r| r.rows_affected())
    }

    async fn delete_audit(&self) -> Result<u64, sqlx::Error> {
        sqlx::query("delete from audit_events")
            .execute(self.store.pool())
            .await
            .map(|r| r.rows_affected())
    }

    async fn fail_audit_inserts(&self) -> anyhow::Result<()> {
        sqlx::query(
            "create trigger inject_audit_failure before insert on audit_events \
             begin select raise(abort, 'injected audit failure'); end",
        )
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    async fn restore_audit_inserts(&self) -> anyhow::Result<()> {
        sqlx::query("drop trigger inject_audit_failure")
            .execute(self.store.pool())
            .await?;
        Ok(())
    }
}

/// Instantiates each behaviour for both backends: `pg::<behaviour>` and `sqlite::<behaviour>`.
macro_rules! contract {
    ($($behaviour:ident),+ $(,)?) => {
        mod pg {
            $(
                #[tokio::test]
                async fn $behaviour() -> anyhow::Result<()> {
                    use super::Backend as _;
                    super::$behaviour(super::Pg::fresh().await?).await
                }
            )+
        }

        mod sqlite {
            $(
                #[tokio::test]
                async fn $behaviour() -> anyhow::Result<()> {
                    use super::Backend as _;
                    super::$behaviour(super::Sqlite::fresh().await?).await
                }
            )+
        }
    };
}

contract!(
    users_are_stored_found_and_counted_and_usernames_are_unique,
    agents_are_listed_by_name_found_by_key_and_names_and_keys_are_unique,
    record_seen_moves_last_seen_forward_only_and_keeps_the_newest_facts,
    a_session_round_trips_every_field,
    an_agent_has_at_most_one_open_session_until_it_closes,
    only_a_pending_session_activates,
    close_returns_the_closed_session_once,
    close_all_open_closes_and_returns_every_open_session,
    list_open_lists_pending_and_active_sessions_only,
    close_idle_closes_only_active_sessions_idle_before_the_cutoff,
    touch_moves_active_sessions_forward_only,
    audit_entries_outlive_what_they_name_and_cannot_be_changed,
    audit_entries_round_trip_command_and_file_details,
    audit_entries_filter_by_user_agent_session_and_time,
    audit_entries_list_newest_first_and_page_with_before,
    audit_page_size_is_clamped_to_1_through_1000,
    a_command_round_trips_every_field,
    output_reads_back_in_order_per_stream_with_paging_and_bytes_intact,
    a_command_finishes_only_once,
    fail_running_commands_ends_only_running_ones,
    deleting_a_session_takes_its_commands_and_output_but_not_the_audit,
    data_survives_reopening_the_store,
    an_activation_commits_with_its_entry_or_not_at_all,
    a_close_commits_with_its_entry_or_not_at_all,
    close_all_open_commits_with_an_entry_per_session_or_not_at_all,
    close_idle_commits_with_an_entry_per_session_or_not_at_all,
    a_command_start_commits_with_its_entry_or_not_at_all,
    a_command_end_commits_with_its_entry_or_not_at_all,
    fail_running_commands_commits_with_an_entry_per_command_or_not_at_all,
    users_are_listed_found_by_id_and_changed_with_their_entry,
    the_last_enabled_admin_cannot_be_disabled_demoted_or_deleted,
    a_deleted_user_is_gone_from_lookups_and_frees_the_username,
    tokens_are_live_until_revoked_or_their_user_disabled,
    a_password_change_revokes_every_token_but_the_kept_one,
    expired_tokens_are_pruned,
    user_changes_commit_with_their_entry_or_not_at_all,
    sessions_opened_with_a_token_are_listed_while_open,
    grants_commit_with_the_user_change_or_not_at_all,
    groups_are_listed_with_agent_counts_and_deleted_only_when_empty,
    user_groups_are_replaced_whole_and_scope_the_agents_seen,
    open_sessions_of_counts_a_users_pending_and_active_sessions,
    group_changes_commit_with_their_entry_or_not_at_all,
    enrollment_tokens_are_created_in_existing_groups_listed_and_revoked,
    enrollment_counts_uses_and_refuses_expired_used_up_revoked_and_unknown_tokens,
    two_enrollments_racing_for_the_last_use_cannot_both_win,
    an_enrollment_commits_with_its_entry_or_not_at_all,
    revoking_an_agent_is_audited_once_and_keeps_it_listed,
    a_new_key_replaces_the_old_digest_except_for_a_revoked_agent,
    agents_are_renamed_and_moved_by_group_name,
    agent_changes_commit_with_their_entry_or_not_at_all,
    a_recording_round_trips_with_binary_chunks_and_its_size,
    a_retried_chunk_changes_neither_data_nor_size,
    recordings_list_newest_first_by_agent_user_and_time_with_a_limit,
    finish_ends_one_recording_and_finish_abandoned_the_unfinished,
    a_five_mib_recording_reads_back_byte_exact_after_reopening,
    recordings_outlive_their_user_agent_and_session,
    a_capped_insert_counts_the_owners_open_sessions_and_writes_nothing_at_the_cap,
    an_open_that_loses_the_race_for_an_agent_leaves_no_session_and_no_entry,
    retention_prunes_only_ended_output_once_and_marks_it,
    retention_prunes_only_ended_recordings_once_and_marks_them,
);

// Users, roles and tokens (identity).
#[path = "store_contract/identity.rs"]
mod identity;
use identity::*;

// Groups and the groups granted to users.
#[path = "store_contract/groups.rs"]
mod groups;
use groups::*;
// Enrollment tokens and enrollments.
#[path = "store_contract/enrollment.rs"]
mod enrollment;
use enrollment::*;
// Admins' changes to agents: revoke, a new key, rename and move.
#[path = "store_contract/agents_admin.rs"]
mod agents_admin;
use agents_admin::*;
// Terminal recordings and their chunks.
#[path = "store_contract/recordings.rs"]
mod recordings;
use recordings::*;

// The retention sweep's listing and pruning.
#[path = "store_contract/retention.rs"]
mod retention;
use retention::*;

// The writes of a tunnel open.
#[path = "store_contract/opens.rs"]
mod opens;
use opens::*;

// The injected-failure suite: every audited change, with the audit insert made to fail.
#[path = "store_contract/audited.rs"]
mod audited;
use audited::*;

// ---- fixtures ----------------------------------------------------------------------------

/// Microseconds after a fixed, realistic instant (Nov 2023), so values exercise the
/// timestamptz conversion rather than the epoch.
fn t(micros: i64) -> Timestamp {
    Timestamp::from_unix_micros(1_700_000_000_123_456 + micros)
}

fn user(name: &str, role: Role) -> anyhow::Result<UserRecord> {
    Ok(UserRecord {
        id: UserId::from_uuid(Uuid::new_v4()),
        username: Username::parse(name)?,
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$salt-of-{name}$hash"),
        role,
        created_at: t(-1_000),
        disabled: false,
        last_login_at: None,
    })
}

/// The `user_created` entry that goes with storing `user`.
fn created(user: &UserRecord) -> AuditEvent {
    let mut entry = AuditEvent::new(user.created_at, AuditAction::UserCreated);
    entry.detail = Some(format!("user_id={}", user.id));
    entry
}

fn agent(name: &str, key_byte: u8) -> anyhow::Result<AgentRecord> {
    Ok(AgentRecord {
        id: AgentId::from_uuid(Uuid::new_v4()),
        name: AgentName::parse(name)?,
        group: rmm_domain::GroupName::default_group(),
        revoked: false,
        key_digest: KeyDigest([key_byte; 32]),
        created_at: t(-2_000),
        last_seen: None,
        facts: HostFacts::default(),
    })
}

fn new_session(agent: &AgentRecord, tech: &UserRecord, at: Timestamp) -> Session {
    Session::open(SessionId::from_uuid(Uuid::new_v4()), agent.id, tech.id, at)
}

/// Two technicians and two agents, stored.
struct World {
    alice: UserRecord,
    bob: UserRecord,
    web: AgentRecord,
    db: AgentRecord,
}

async fn world(store: &impl Store) -> anyhow::Result<World> {
    let w = World {
        alice: user("alice", Role::Tech)?,
        bob: user("bob", Role::Tech)?,
        web: agent("web-01", 1)?,
        db: agent("db-01", 2)?,
    };
    store.insert_user(&w.alice, &[], &created(&w.alice)).await?;
    store.insert_user(&w.bob, &[], &created(&w.bob)).await?;
    store.insert_agent(&w.web).await?;
    store.insert_agent(&w.db).await?;
    Ok(w)
}

/// Stores a session and makes it active, returning the domain's view of it.
async fn active_session(
    store: &impl Store,
    agent: &AgentRecord,
    tech: &UserRecord,
    opened: Timestamp,
    activated: Timestamp,
) -> anyhow::Result<Session> {
    let mut s = new_session(agent, tech, opened);
    store.insert_pending(&s, None).await?;
    ensure!(
        store.activate(s.id(), activated, &open_note()).await?,
        "activate failed"
    );
    s.activate(activated)?;
    Ok(s)
}

fn closed(mut s: Session, reason: CloseReason, at: Timestamp) -> anyhow::Result<Session> {
    s.close(reason, at)?;
    Ok(s)
}

fn by_id(mut sessions: Vec<Session>) -> Vec<Session> {
    sessions.sort_by_key(Session::id);
    sessions
}

fn is_conflict<T>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict))
}

fn is_backend<T>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Backend(_)))
}

/// All entries matching `query` with a page as large as allowed.
fn audit_query() -> AuditQuery {
    AuditQuery {
        limit: 1000,
        ..AuditQuery::default()
    }
}

/// The events of `entries`, without the fixtures' `user_created` ones (see [`created`]).
fn events(entries: &[AuditEntry]) -> Vec<AuditEvent> {
    entries
        .iter()
        .map(|e| e.event.clone())
        .filter(|e| e.action != AuditAction::UserCreated)
        .collect()
}

/// A running command in `session`, as the use case would insert it.
fn running_command(session: &Session, text: &str, started: Timestamp) -> CommandRecord {
    let id = CommandId::from_uuid(Uuid::new_v4());
    CommandRecord {
        id,
        session: session.id(),
        agent: session.agent(),
        owner: session.owner(),
        channel: ChannelId::for_command(id),
        text: text.into(),
        timeout_secs: 30,
        status: CommandStatus::Running,
        exit_code: None,
        signal: None,
        end_reason: None,
        started_at: started,
        finished_at: None,
        stdout_bytes: 0,
        stderr_bytes: 0,
        stdout_truncated: false,
        stderr_truncated: false,
        output_pruned: false,
    }
}

/// `command` as the store should hold it after `outcome`.
fn finished(command: &CommandRecord, outcome: &CommandOutcome) -> CommandRecord {
    CommandRecord {
        status: outcome.status,
        exit_code: outcome.exit_code,
        signal: outcome.signal.clone(),
        end_reason: outcome.end_reason,
        finished_at: Some(outcome.finished_at),
        stdout_bytes: outcome.stdout_bytes,
        stderr_bytes: outcome.stderr_bytes,
        stdout_truncated: outcome.stdout_truncated,
        stderr_truncated: outcome.stderr_truncated,
        ..command.clone()
    }
}

fn count_of(actions: &[String], action: &str) -> usize {
    actions.iter().filter(|a| *a == action).count()
}

/// The entry an activation commits with.
fn open_note() -> AuditNote {
    AuditNote::new(AuditAction::TunnelOpen, None)
}

/// The reason restart reconciliation ends running commands for.
fn restart() -> CommandEndReason {
    CommandEndReason::SessionClosed(CloseReason::ServerRestart)
}

/// The entry restart reconciliation ends running commands with.
fn restart_note() -> AuditNote {
    AuditNote::new(AuditAction::CommandEnd, Some("server_restart".into()))
}

/// The `command` entry a command is stored with.
fn started(command: &CommandRecord) -> AuditEvent {
    let mut event = AuditEvent::new(command.started_at, AuditAction::Command);
    event.user = Some(command.owner);
    event.agent = Some(command.agent);
    event.session = Some(command.session);
    event.command = Some(CommandAudit {
        command_id: Some(command.id),
        text: Some(command.text.clone()),
        status: Some("running".into()),
        ..CommandAudit::default()
    });
    event
}

/// A `command_end` entry for command `id`.
fn end_entry(id: CommandId) -> AuditEvent {
    let mut event = AuditEvent::new(t(0), AuditAction::CommandEnd);
    event.command = Some(CommandAudit {
        command_id: Some(id),
        ..CommandAudit::default()
    });
    event
}

fn completed(exit_code: i32, at: Timestamp) -> CommandOutcome {
    CommandOutcome {
        status: CommandStatus::Completed,
        exit_code: Some(exit_code),
        signal: None,
        end_reason: None,
        finished_at: at,
        stdout_bytes: 12,
        stderr_bytes: 3,
        stdout_truncated: false,
        stderr_truncated: false,
    }
}

// ---- users -------------------------------------------------------------------------------

async fn users_are_stored_found_and_counted_and_usernames_are_unique(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    assert_eq!(s.count_users().await?, 0);

    let admin = user("root.admin@msp-1", Role::Admin)?;
    let tech = user("tech_1", Role::Tech)?;
    s.insert_user(&admin, &[], &created(&admin)).await?;
    s.insert_user(&tech, &[], &created(&tech)).await?;
    assert_eq!(s.count_users().await?, 2);

    assert_eq!(s.find_user(&admin.username).await?, Some(admin.clone()));
    let found = s
        .find_user(&tech.username)
        .await?
        .context("tech not found")?;
    assert_eq!(found.password_hash, tech.password_hash);
    assert_eq!(found.role, Role::Tech);
    assert_eq!(found.created_at, tech.created_at);
    assert_eq!(s.find_user(&Username::parse("nobody")?).await?, None);

    let mut twin = user("tech_1", Role::Admin)?;
    twin.password_hash = "other".into();
    assert!(is_conflict(
        &s.insert_user(&twin, &[], &created(&twin)).await
    ));
    let mut same_id = user("someone-else", Role::Tech)?;
    same_id.id = admin.id;
    assert!(is_conflict(
        &s.insert_user(&same_id, &[], &created(&same_id)).await
    ));
    assert_eq!(s.count_users().await?, 2);
    assert_eq!(s.find_user(&tech.username).await?, Some(tech));
    Ok(())
}

// ---- agents ------------------------------------------------------------------------------

async fn agents_are_listed_by_name_found_by_key_and_names_and_keys_are_unique(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    assert_eq!(s.list_agents().await?, vec![]);

    let zeta = agent("zeta", 1)?;
    let mut alpha = agent("alpha", 2)?;
    alpha.last_seen = Some(t(500));
    alpha.facts = HostFacts {
        version: Some("0.1.0".into()),
        hostname: Some("alpha.example".into()),
        os: Some("linux".into()),
        uptime_secs: Some(86_400),
    };
    let upper = agent("Mail server", 3)?;
    for a in [&zeta, &alpha, &upper] {
        s.insert_agent(a).await?;
    }

    // Byte order on both backends: upper case sorts before lower case.
    assert_eq!(
        s.list_agents().await?,
        vec![upper.clone(), alpha.clone(), zeta.clone()]
    );
    assert_eq!(s.find_agent_by_key(KeyDigest([2; 32])).await?, Some(alpha));
    assert_eq!(s.find_agent_by_key(KeyDigest([1; 32])).await?, Some(zeta));
    assert_eq!(s.find_agent_by_key(KeyDigest([9; 32])).await?, None);

    assert!(is_conflict(&s.insert_agent(&agent("zeta", 7)?).await));
    assert!(is_conflict(&s.insert_agent(&agent("other", 3)?).await));
    assert_eq!(s.list_agents().await?.len(), 3);
    Ok(())
}

async fn record_seen_moves_last_seen_forward_only_and_keeps_the_newest_facts(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let facts = |version: &str, uptime: u64| HostFacts {
        version: Some(version.into()),
        hostname: Some("web-01.example".into()),
        os: Some("linux".into()),
        uptime_secs: Some(uptime),
    };
    let find = |id: AgentId| async move {
        s.list_agents()
            .await?
            .into_iter()
            .find(|a| a.id == id)
            .context("agent missing")
    };

    s.record_seen(&[]).await?;
    s.record_seen(&[
        (w.web.id, t(100), Some(facts("1.0", 5))),
        (w.db.id, t(50), None),
        // Unknown agents (deleted meanwhile) are ignored.
        (AgentId::from_uuid(Uuid::new_v4()), t(60), None),
    ])
    .await?;
    let web = find(w.web.id).await?;
    assert_eq!(web.last_seen, Some(t(100)));
    assert_eq!(web.facts, facts("1.0", 5));
    let db = find(w.db.id).await?;
    assert_eq!(db.last_seen, Some(t(50)));
    assert_eq!(db.facts, HostFacts::default());

    // A late batch moves nothing back and does not overwrite newer facts.
    s.record_seen(&[(w.web.id, t(90), Some(facts("0.9", 1)))])
        .await?;
    assert_eq!(find(w.web.id).await?, web);

    // Facts a heartbeat leaves out are kept.
    s.record_seen(&[(
        w.web.id,
        t(200),
        Some(HostFacts {
            version: Some("1.1".into()),
            uptime_secs: Some(u64::MAX),
            ..HostFacts::default()
        }),
    )])
    .await?;
    let web = find(w.web.id).await?;
    assert_eq!(web.last_seen, Some(t(200)));
    assert_eq!(
        web.facts,
        HostFacts {
            version: Some("1.1".into()),
            hostname: Some("web-01.example".into()),
            os: Some("linux".into()),
            // Saturated to what a bigint holds.
            uptime_secs: Some(i64::MAX.unsigned_abs()),
        }
    );

    // Several heartbeats of one agent in a batch, in any order: latest time, newest facts.
    s.record_seen(&[
        (w.db.id, t(300), None),
        (w.db.id, t(250), Some(facts("2.0", 9))),
        (w.db.id, t(120), Some(facts("1.9", 8))),
    ])
    .await?;
    let db = find(w.db.id).await?;
    assert_eq!(db.last_seen, Some(t(300)));
    assert_eq!(db.facts, facts("2.0", 9));
    Ok(())
}

// ---- sessions ----------------------------------------------------------------------------

async fn a_session_round_trips_every_field(b: impl Backend) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;

    let pending = new_session(&w.web, &w.alice, t(1_000));
    s.insert_pending(&pending, None).await?;
    let got = s.get(pending.id()).await?.context("session missing")?;
    assert_eq!(got, pending);
    assert_eq!(got.owner(), w.alice.id);
    assert_eq!(got.agent(), w.web.id);
    assert_eq!(got.status(), SessionStatus::Pending);
    assert_eq!(got.opened_at(), t(1_000));
    assert_eq!(got.last_activity(), t(1_000));
    assert_eq!((got.closed_at(), got.close_reason()), (None, None));

    // Every close reason survives the trip.
    for (i, reason) in CloseReason::ALL.into_iter().enumerate() {
        let offset = i64::try_from(i)? * 10;
        let mut s2 = new_session(&w.db, &w.bob, t(offset));
        s.insert_pending(&s2, None).await?;
        let closed_row = s
            .close(s2.id(), reason, t(offset + 5), &AuditNote::close(reason))
            .await?;
        s2.close(reason, t(offset + 5))?;
        assert_eq!(closed_row.as_ref(), Some(&s2));
        assert_eq!(s.get(s2.id()).await?, Some(s2));
    }

    assert_eq!(s.get(SessionId::from_uuid(Uuid::new_v4())).await?, None);

    // A session for an agent or user that does not exist is refused, and not as a conflict.
    let orphan = Session::open(
        SessionId::from_uuid(Uuid::new_v4()),
        AgentId::from_uuid(Uuid::new_v4()),
        w.alice.id,
        t(0),
    );
    let err = s.insert_pending(&orphan, None).await;
    assert!(matches!(err, Err(StoreError::Backend(_))), "{err:?}");
    Ok(())
}

async fn an_agent_has_at_most_one_open_session_until_it_closes(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;

    let first = new_session(&w.web, &w.alice, t(0));
    s.insert_pending(&first, None).await?;
    // Pending blocks a second session, by the same tech or another.
    assert!(is_conflict(
        &s.insert_pending(&new_session(&w.web, &w.alice, t(1)), None)
            .await
    ));
    assert!(is_conflict(
        &s.insert_pending(&new_session(&w.web, &w.bob, t(1)), None)
            .await
    ));
    // So does active.
    assert!(s.activate(first.id(), t(2), &open_note()).await?);
    assert!(is_conflict(
        &s.insert_pending(&new_session(&w.web, &w.bob, t(3)), None)
            .await
    ));
    // Another agent is unaffected.
    s.insert_pending(&new_session(&w.db, &w.bob, t(3)), None)
        .await?;
    // The same session id twice is a conflict too.
    assert!(is_conflict(&s.insert_pending(&first, None).await));

    // Once closed, the agent is free again.
    s.close(
        first.id(),
        CloseReason::ClosedByOwner,
        t(4),
        &AuditNote::close(CloseReason::ClosedByOwner),
    )
    .await?
    .context("first session was open")?;
    let second = new_session(&w.web, &w.bob, t(5));
    s.insert_pending(&second, None).await?;
    assert_eq!(s.get(second.id()).await?, Some(second.clone()));
    s.close(
        second.id(),
        CloseReason::Refused,
        t(6),
        &AuditNote::close(CloseReason::Refused),
    )
    .await?;

    // Racing opens: exactly one wins, in the database.
    let (a, b2) = (
        new_session(&w.web, &w.alice, t(7)),
        new_session(&w.web, &w.bob, t(7)),
    );
    let (ra, rb) = tokio::join!(s.insert_pending(&a, None), s.insert_pending(&b2, None));
    assert_eq!(
        [ra.is_ok(), rb.is_ok()].iter().filter(|ok| **ok).count(),
        1,
        "{ra:?} / {rb:?}"
    );
    assert!(is_conflict(&ra) || is_conflict(&rb));
    Ok(())
}

async fn only_a_pending_session_activates(b: impl Backend) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;

    let mut web = new_session(&w.web, &w.alice, t(1_000));
    s.insert_pending(&web, None).await?;
    assert!(s.activate(web.id(), t(2_000), &open_note()).await?);
    web.activate(t(2_000))?;
    assert_eq!(s.get(web.id()).await?, Some(web.clone()));
    assert_eq!(web.status(), SessionStatus::Active);
    assert_eq!(web.last_activity(), t(2_000));
    // Active: not again.
    assert!(!s.activate(web.id(), t(3_000), &open_note()).await?);
    assert_eq!(s.get(web.id()).await?, Some(web.clone()));

    // An activation stamped before the open (clock skew) does not move activity back.
    let mut db = new_session(&w.db, &w.bob, t(5_000));
    s.insert_pending(&db, None).await?;
    assert!(s.activate(db.id(), t(4_000), &open_note()).await?);
    db.activate(t(4_000))?;
    assert_eq!(db.last_activity(), t(5_000));
    assert_eq!(s.get(db.id()).await?, Some(db));

    // Closed, or unknown: no.
    s.close(
        web.id(),
        CloseReason::AgentDisconnected,
        t(6_000),
        &AuditNote::close(CloseReason::AgentDisconnected),
    )
    .await?;
    let refused = new_session(&w.web, &w.bob, t(7_000));
    s.insert_pending(&refused, None).await?;
    s.close(
        refused.id(),
        CloseReason::Refused,
        t(7_001),
        &AuditNote::close(CloseReason::Refused),
    )
    .await?;
    assert!(!s.activate(refused.id(), t(7_002), &open_note()).await?);
    assert_eq!(
        s.get(refused.id()).await?,
        Some(closed(refused, CloseReason::Refused, t(7_001))?)
    );
    assert!(
        !s.activate(SessionId::from_uuid(Uuid::new_v4()), t(0), &open_note())
            .await?
    );
    Ok(())
}

async fn close_returns_the_closed_session_once(b: impl Backend) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;

    let active = active_session(s, &w.web, &w.alice, t(0), t(10)).await?;
    let expected = closed(active.clone(), CloseReason::ClosedByAdmin, t(20))?;
    let got = s
        .close(
            active.id(),
            CloseReason::ClosedByAdmin,
            t(20),
            &AuditNote::close(CloseReason::ClosedByAdmin),
        )
        .await?;
    assert_eq!(got, Some(expected.clone()));
    assert_eq!(got.map(|g| g.owner()), Some(w.alice.id));
    assert_eq!(s.get(active.id()).await?, Some(expected.clone()));

    // Closed already: nothing, and the first reason and time stay.
    assert_eq!(
        s.close(
            active.id(),
            CloseReason::ClosedByOwner,
            t(30),
            &AuditNote::close(CloseReason::ClosedByOwner)
        )
        .await?,
        None
    );
    assert_eq!(s.get(active.id()).await?, Some(expected));
    assert_eq!(
        s.close(
            SessionId::from_uuid(Uuid::new_v4()),
            CloseReason::Idle,
            t(30),
            &AuditNote::close(CloseReason::Idle)
        )
        .await?,
        None
    );

    // A pending session closes too (a refused open).
    let pending = new_session(&w.db, &w.bob, t(40));
    s.insert_pending(&pending, None).await?;
    assert_eq!(
        s.close(
            pending.id(),
            CloseReason::OpenTimeout,
            t(50),
            &AuditNote::close(CloseReason::OpenTimeout)
        )
        .await?,
        Some(closed(pending, CloseReason::OpenTimeout, t(50))?)
    );
    Ok(())
}

async fn close_all_open_closes_and_returns_every_open_session(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let mail = agent("mail-01", 3)?;
    s.insert_agent(&mail).await?;

    let active = active_session(s, &w.web, &w.alice, t(0), t(5)).await?;
    let pending = new_session(&w.db, &w.bob, t(6));
    s.insert_pending(&pending, None).await?;
    let earlier = new_session(&mail, &w.bob, t(1));
    s.insert_pending(&earlier, None).await?;
    s.close(
        earlier.id(),
        CloseReason::Refused,
        t(3),
        &AuditNote::close(CloseReason::Refused),
    )
    .await?;
    let earlier = closed(earlier, CloseReason::Refused, t(3))?;

    let got = by_id(
        s.close_all_open(
            CloseReason::ServerRestart,
            t(100),
            &AuditNote::close(CloseReason::ServerRestart),
        )
        .await?,
    );
    let expected = by_id(vec![
        closed(active, CloseReason::ServerRestart, t(100))?,
        closed(pending, CloseReason::ServerRestart, t(100))?,
    ]);
    assert_eq!(got, expected);
    for session in &expected {
        assert_eq!(s.get(session.id()).await?.as_ref(), Some(session));
    }
    assert_eq!(s.get(earlier.id()).await?, Some(earlier));
    assert_eq!(
        s.close_all_open(
            CloseReason::ServerShutdown,
            t(200),
            &AuditNote::close(CloseReason::ServerShutdown)
        )
        .await?,
        vec![]
    );
    Ok(())
}

async fn list_open_lists_pending_and_active_sessions_only(b: impl Backend) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let mail = agent("mail-01", 3)?;
    s.insert_agent(&mail).await?;
    assert_eq!(s.list_open().await?, vec![]);

    let active = active_session(s, &w.web, &w.alice, t(0), t(5)).await?;
    let pending = new_session(&w.db, &w.bob, t(6));
    s.insert_pending(&pending, None).await?;
    let gone = new_session(&mail, &w.bob, t(1));
    s.insert_pending(&gone, None).await?;
    let reason = CloseReason::Refused;
    s.close(gone.id(), reason, t(2), &AuditNote::close(reason))
        .await?;

    assert_eq!(by_id(s.list_open().await?), by_id(vec![active, pending]));
    Ok(())
}

async fn close_idle_closes_only_active_sessions_idle_before_the_cutoff(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let mail = agent("mail-01", 3)?;
    let dns = agent("dns-01", 4)?;
    s.insert_agent(&mail).await?;
    s.insert_agent(&dns).await?;

    let stale = active_session(s, &w.web, &w.alice, t(0), t(1_000)).await?;
    let fresh = active_session(s, &w.db, &w.bob, t(0), t(5_000)).await?;
    let boundary = active_session(s, &dns, &w.bob, t(0), t(2_000)).await?;
    // Pending sessions are the open timeout's business, not idleness.
    let pending = new_session(&mail, &w.alice, t(100));
    s.insert_pending(&pending, None).await?;

    let got = s
        .close_idle(t(2_000), t(6_000), &AuditNote::close(CloseReason::Idle))
        .await?;
    assert_eq!(got, vec![closed(stale, CloseReason::Idle, t(6_000))?]);
    assert_eq!(s.get(fresh.id()).await?, Some(fresh));
    assert_eq!(s.get(boundary.id()).await?, Some(boundary));
    assert_eq!(s.get(pending.id()).await?, Some(pending));
    assert_eq!(
        s.close_idle(t(2_000), t(7_000), &AuditNote::close(CloseReason::Idle))
            .await?,
        vec![]
    );
    Ok(())
}

async fn touch_moves_active_sessions_forward_only(b: impl Backend) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let mail = agent("mail-01", 3)?;
    s.insert_agent(&mail).await?;

    let mut active = active_session(s, &w.web, &w.alice, t(0), t(2_000)).await?;
    let pending = new_session(&w.db, &w.bob, t(100));
    s.insert_pending(&pending, None).await?;
    let gone = active_session(s, &mail, &w.bob, t(0), t(10)).await?;
    s.close(
        gone.id(),
        CloseReason::Idle,
        t(20),
        &AuditNote::close(CloseReason::Idle),
    )
    .await?;
    let gone = closed(gone, CloseReason::Idle, t(20))?;

    s.touch(&[], t(9_999)).await?;
    s.touch(
        &[
            active.id(),
            pending.id(),
            gone.id(),
            SessionId::from_uuid(Uuid::new_v4()),
        ],
        t(3_000),
    )
    .await?;
    active.touch(t(3_000))?;
    assert_eq!(s.get(active.id()).await?, Some(active.clone()));
    assert_eq!(active.last_activity(), t(3_000));
    assert_eq!(s.get(pending.id()).await?, Some(pending));
    assert_eq!(s.get(gone.id()).await?, Some(gone));

    // Never backwards.
    s.touch(&[active.id()], t(2_500)).await?;
    assert_eq!(
        s.get(active.id()).await?.map(|a| a.last_activity()),
        Some(t(3_000))
    );

    // A large batch is still one call.
    let many: Vec<SessionId> = std::iter::once(active.id())
        .chain((0..2_000).map(|_| SessionId::from_uuid(Uuid::new_v4())))
        .collect();
    s.touch(&many, t(4_000)).await?;
    assert_eq!(
        s.get(active.id()).await?.map(|a| a.last_activity()),
        Some(t(4_000))
    );
    Ok(())
}

// ---- audit -------------------------------------------------------------------------------

async fn audit_entries_outlive_what_they_name_and_cannot_be_changed(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    // The activation writes the `tunnel_open` entry.
    let session = active_session(s, &w.web, &w.alice, t(0), t(1)).await?;
    s.append(&AuditEvent {
        at: t(2),
        action: AuditAction::TunnelClose,
        user: Some(w.alice.id),
        agent: Some(w.web.id),
        session: Some(session.id()),
        detail: Some("closed_by_owner".into()),
        command: None,
        file: None,
    })
    .await?;
    // Entries may name nothing, or things that never existed.
    s.append(&AuditEvent {
        at: t(3),
        action: AuditAction::TunnelTimeout,
        user: None,
        agent: Some(AgentId::from_uuid(Uuid::new_v4())),
        session: None,
        detail: Some("ünïcode ✓".into()),
        command: None,
        file: None,
    })
    .await?;
    let actions = vec!["tunnel_open", "tunnel_close", "tunnel_timeout"];
    assert_eq!(b.audit_actions().await?, actions);

    // Deleting the agent takes its sessions with it; deleting the user too. The audit stays.
    b.delete_agent(w.web.id).await?;
    assert_eq!(s.get(session.id()).await?, None);
    b.delete_user(w.alice.id).await?;
    assert_eq!(s.find_user(&w.alice.username).await?, None);
    assert_eq!(b.audit_actions().await?, actions);

    // Append-only, enforced by the database itself.
    let update = b.update_audit().await;
    assert!(update.is_err(), "update succeeded: {update:?}");
    let delete = b.delete_audit().await;
    assert!(delete.is_err(), "delete succeeded: {delete:?}");
    let message = format!("{:?}", delete.err());
    assert!(message.contains("append-only"), "{message}");
    assert_eq!(b.audit_actions().await?, actions);
    Ok(())
}

async fn audit_entries_round_trip_command_and_file_details(b: impl Backend) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    // Pending: a change that writes no entry of its own.
    let session = new_session(&w.web, &w.alice, t(0));
    s.insert_pending(&session, None).await?;
    let command_id = CommandId::from_uuid(Uuid::new_v4());
    let common = |at: Timestamp, action: AuditAction| AuditEvent {
        user: Some(w.alice.id),
        agent: Some(w.web.id),
        session: Some(session.id()),
        ..AuditEvent::new(at, action)
    };

    let sent = AuditEvent {
        command: Some(CommandAudit {
            command_id: Some(command_id),
            text: Some("printf 'ü\\n' && exit 3".into()),
            status: Some("running".into()),
            ..CommandAudit::default()
        }),
        ..common(t(10), AuditAction::Command)
    };
    let ended = AuditEvent {
        detail: Some("signal SIGKILL".into()),
        command: Some(CommandAudit {
            command_id: Some(command_id),
            text: Some("printf 'ü\\n' && exit 3".into()),
            status: Some("timed_out".into()),
            exit_code: Some(-9),
            stdout_bytes: Some(5_000_000_000),
            stderr_bytes: Some(0),
            duration_ms: Some(30_001),
        }),
        ..common(t(20), AuditAction::CommandEnd)
    };
    let upload = AuditEvent {
        file: Some(FileAudit {
            path: "/etc/ssl/certs/ca ü.pem".into(),
            direction: "upload".into(),
            size: Some(1_048_576),
            sha256: Some("ab".repeat(32)),
            result: "ok".into(),
        }),
        ..common(t(30), AuditAction::FileUpload)
    };
    let refused_download = AuditEvent {
        file: Some(FileAudit {
            path: "/root/.ssh/id_ed25519".into(),
            direction: "download".into(),
            size: None,
            sha256: None,
            result: "denied: permission".into(),
        }),
        ..common(t(40), AuditAction::FileDownload)
    };
    // Only the common fields, naming nothing at all.
    let bare = AuditEvent::new(t(50), AuditAction::TunnelRefused);
    let written = vec![sent, ended, upload, refused_download, bare];
    for event in &written {
        s.append(event).await?;
    }

    let listed = s.list_audit(&audit_query()).await?;
    let mut expected = written.clone();
    expected.reverse();
    assert_eq!(events(&listed), expected);
    assert!(listed.windows(2).all(|p| p[0].id > p[1].id), "{listed:?}");

    // Every action survives the trip; counts above what a bigint holds are saturated.
    for action in AuditAction::ALL {
        s.append(&AuditEvent {
            command: Some(CommandAudit {
                stdout_bytes: Some(u64::MAX),
                ..CommandAudit::default()
            }),
            ..AuditEvent::new(t(60), action)
        })
        .await?;
    }
    let latest = s
        .list_audit(&AuditQuery {
            limit: u32::try_from(AuditAction::ALL.len())?,
            ..AuditQuery::default()
        })
        .await?;
    let actions: Vec<AuditAction> = latest.iter().rev().map(|e| e.event.action).collect();
    assert_eq!(actions, AuditAction::ALL);
    for entry in &latest {
        assert_eq!(
            entry.event.command,
            Some(CommandAudit {
                stdout_bytes: Some(i64::MAX.unsigned_abs()),
                ..CommandAudit::default()
            })
        );
    }
    // `audit_actions` leaves out `user_created`, one of the actions appended above.
    assert_eq!(
        b.audit_actions().await?.len(),
        written.len() + AuditAction::ALL.len() - 1
    );
    Ok(())
}

async fn audit_entries_filter_by_user_agent_session_and_time(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    // Pending: changes that write no entry of their own.
    let (alice_web, bob_db) = (
        new_session(&w.web, &w.alice, t(0)),
        new_session(&w.db, &w.bob, t(0)),
    );
    s.insert_pending(&alice_web, None).await?;
    s.insert_pending(&bob_db, None).await?;
    let event =
        |at: i64, user: &UserRecord, agent: &AgentRecord, session: Option<&Session>| AuditEvent {
            user: Some(user.id),
            agent: Some(agent.id),
            session: session.map(Session::id),
            ..AuditEvent::new(t(at), AuditAction::Command)
        };
    let written = vec![
        event(100, &w.alice, &w.web, Some(&alice_web)),
        event(200, &w.bob, &w.db, Some(&bob_db)),
        event(300, &w.alice, &w.db, None),
        event(400, &w.bob, &w.web, None),
        event(500, &w.alice, &w.web, Some(&alice_web)),
        AuditEvent::new(t(600), AuditAction::TunnelTimeout),
    ];
    for e in &written {
        s.append(e).await?;
    }
    // What the store must return: the matching events, newest first.
    let expect = |keep: &dyn Fn(&AuditEvent) -> bool| -> Vec<AuditEvent> {
        written.iter().rev().filter(|e| keep(e)).cloned().collect()
    };
    let list = |query: AuditQuery| async move { s.list_audit(&query).await.map(|l| events(&l)) };

    assert_eq!(list(audit_query()).await?, expect(&|_| true));
    assert_eq!(
        list(AuditQuery {
            user: Some(w.alice.id),
            ..audit_query()
        })
        .await?,
        expect(&|e| e.user == Some(w.alice.id))
    );
    assert_eq!(
        list(AuditQuery {
            agent: Some(w.web.id),
            ..audit_query()
        })
        .await?,
        expect(&|e| e.agent == Some(w.web.id))
    );
    assert_eq!(
        list(AuditQuery {
            session: Some(bob_db.id()),
            ..audit_query()
        })
        .await?,
        vec![written[1].clone()]
    );
    // since is inclusive, until exclusive.
    assert_eq!(
        list(AuditQuery {
            since: Some(t(200)),
            until: Some(t(500)),
            ..audit_query()
        })
        .await?,
        expect(&|e| e.at >= t(200) && e.at < t(500))
    );
    assert_eq!(
        expect(&|e| e.at >= t(200) && e.at < t(500)).len(),
        3,
        "fixture"
    );
    assert_eq!(
        list(AuditQuery {
            since: Some(t(500)),
            ..audit_query()
        })
        .await?,
        vec![written[5].clone(), written[4].clone()]
    );
    assert_eq!(
        list(AuditQuery {
            until: Some(t(100)),
            ..audit_query()
        })
        .await?,
        vec![]
    );
    // Filters combine.
    assert_eq!(
        list(AuditQuery {
            user: Some(w.alice.id),
            agent: Some(w.web.id),
            since: Some(t(101)),
            ..audit_query()
        })
        .await?,
        vec![written[4].clone()]
    );
    assert_eq!(
        list(AuditQuery {
            user: Some(UserId::from_uuid(Uuid::new_v4())),
            ..audit_query()
        })
        .await?,
        vec![]
    );
    Ok(())
}

async fn audit_entries_list_newest_first_and_page_with_before(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    // Newest means last appended, whatever the event's own time says (clocks skew).
    let times = [50, 10, 40, 20, 30];
    let mut written = Vec::new();
    for (i, at) in times.into_iter().enumerate() {
        let event = AuditEvent {
            detail: Some(format!("entry {i}")),
            ..AuditEvent::new(t(at), AuditAction::TunnelOpen)
        };
        s.append(&event).await?;
        written.push(event);
    }

    let all = s.list_audit(&audit_query()).await?;
    let mut newest_first = written.clone();
    newest_first.reverse();
    assert_eq!(events(&all), newest_first);

    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = s
            .list_audit(&AuditQuery {
                before,
                limit: 2,
                ..AuditQuery::default()
            })
            .await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        pages.push(page);
        ensure!(pages.len() <= 5, "paging does not end");
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 2, 1]
    );
    // No duplicates, none missing, same order as one big page.
    assert_eq!(pages.concat(), all);

    // A cursor combines with filters.
    let third = all[2].id;
    assert_eq!(
        s.list_audit(&AuditQuery {
            before: Some(third),
            since: Some(t(20)),
            ..audit_query()
        })
        .await?,
        vec![all[4].clone()]
    );
    Ok(())
}

async fn audit_page_size_is_clamped_to_1_through_1000(b: impl Backend) -> anyhow::Result<()> {
    let s = b.store();
    for i in 0..1_001 {
        s.append(&AuditEvent::new(t(i), AuditAction::TunnelClose))
            .await?;
    }
    let page = |limit: u32| async move {
        s.list_audit(&AuditQuery {
            limit,
            ..AuditQuery::default()
        })
        .await
    };
    let one = page(0).await?;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].event.at, t(1_000));
    assert_eq!(page(1).await?, one);
    assert_eq!(page(7).await?.len(), 7);
    let most = page(1_000).await?;
    assert_eq!(most.len(), 1_000);
    assert_eq!(most.last().map(|e| e.event.at), Some(t(1)));
    assert_eq!(page(1_001).await?, most);
    assert_eq!(page(u32::MAX).await?, most);
    Ok(())
}

// ---- commands ----------------------------------------------------------------------------

async fn a_command_round_trips_every_field(b: impl Backend) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let session = active_session(s, &w.web, &w.alice, t(0), t(1)).await?;

    let running = running_command(&session, "journalctl -u 'ü' | tail -n 50", t(10));
    s.insert_command(&running, &started(&running)).await?;
    assert_eq!(s.get_command(running.id).await?, Some(running.clone()));

    // Every status, with every optional field set.
    for (i, status) in CommandStatus::ALL.into_iter().enumerate() {
        let offset = i64::try_from(i)? * 100;
        let mut ended = running_command(&session, &format!("sleep {i}"), t(offset));
        ended.timeout_secs = 3_600;
        ended.status = status;
        if status != CommandStatus::Running {
            ended.exit_code = Some(-1 - i32::try_from(i)?);
            ended.signal = Some("SIGKILL".into());
            ended.finished_at = Some(t(offset + 50));
            ended.stdout_bytes = 5_000_000_000;
            ended.stderr_bytes = 7;
            ended.stdout_truncated = true;
            ended.stderr_truncated = i % 2 == 0;
        }
        s.insert_command(&ended, &started(&ended)).await?;
        assert_eq!(s.get_command(ended.id).await?, Some(ended));
    }

    // A timeout no one will wait for is saturated, not refused.
    let mut forever = running_command(&session, "yes", t(2));
    forever.timeout_secs = u64::MAX;
    s.insert_command(&forever, &started(&forever)).await?;
    assert_eq!(
        s.get_command(forever.id).await?.map(|c| c.timeout_secs),
        Some(i64::MAX.unsigned_abs())
    );

    assert_eq!(
        s.get_command(CommandId::from_uuid(Uuid::new_v4())).await?,
        None
    );
    // The same id twice is a conflict; a command of an unknown session is refused otherwise.
    let mut twin = running_command(&session, "id", t(3));
    twin.id = running.id;
    assert!(is_conflict(&s.insert_command(&twin, &started(&twin)).await));
    assert_eq!(s.get_command(running.id).await?, Some(running));
    let mut orphan = running_command(&session, "id", t(3));
    orphan.session = SessionId::from_uuid(Uuid::new_v4());
    assert!(is_backend(
        &s.insert_command(&orphan, &started(&orphan)).await
    ));
    Ok(())
}

async fn output_reads_back_in_order_per_stream_with_paging_and_bytes_intact(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let session = active_session(s, &w.web, &w.alice, t(0), t(1)).await?;
    let cmd = running_command(&session, "cat /dev/urandom | head -c 1M", t(2));
    s.insert_command(&cmd, &started(&cmd)).await?;
    let other = running_command(&session, "true", t(3));
    s.insert_command(&other, &started(&other)).await?;

    let chunk = |seq: u64| -> Vec<u8> {
        // NUL, 0xff and a truncated UTF-8 sequence: not text, and must not be treated as such.
        vec![
            0x00,
            0xff,
            0xc3,
            0x28,
            0xe2,
            0x82,
            u8::try_from(seq).unwrap_or(0xfe),
            0x00,
        ]
    };
    // Stored out of order, as concurrent writers might.
    for seq in [3, 0, 4, 1, 2] {
        s.append_output(cmd.id, OutputStream::Stdout, seq, &chunk(seq))
            .await?;
    }
    s.append_output(cmd.id, OutputStream::Stderr, 0, b"warning: \xff\n")
        .await?;
    s.append_output(cmd.id, OutputStream::Stderr, 1, b"")
        .await?;
    s.append_output(other.id, OutputStream::Stdout, 0, b"other")
        .await?;

    let stdout: Vec<(u64, Vec<u8>)> = (0..5).map(|seq| (seq, chunk(seq))).collect();
    assert_eq!(
        s.read_output(cmd.id, OutputStream::Stdout, 0, 100).await?,
        stdout
    );
    assert_eq!(
        s.read_output(cmd.id, OutputStream::Stdout, 2, 2).await?,
        stdout[2..4].to_vec()
    );
    assert_eq!(
        s.read_output(cmd.id, OutputStream::Stdout, 4, 10).await?,
        stdout[4..].to_vec()
    );
    assert_eq!(
        s.read_output(cmd.id, OutputStream::Stdout, 5, 10).await?,
        vec![]
    );
    assert_eq!(
        s.read_output(cmd.id, OutputStream::Stdout, u64::MAX, 10)
            .await?,
        vec![]
    );
    assert_eq!(
        s.read_output(cmd.id, OutputStream::Stdout, 0, 0).await?,
        vec![]
    );
    // Paging from the last seq seen + 1 reads everything once.
    let mut paged = Vec::new();
    let mut from = 0;
    loop {
        let page = s.read_output(cmd.id, OutputStream::Stdout, from, 2).await?;
        let Some((last, _)) = page.last() else { break };
        from = last + 1;
        paged.extend(page);
    }
    assert_eq!(paged, stdout);

    assert_eq!(
        s.read_output(cmd.id, OutputStream::Stderr, 0, 100).await?,
        vec![(0, b"warning: \xff\n".to_vec()), (1, vec![])]
    );
    assert_eq!(
        s.read_output(other.id, OutputStream::Stdout, 0, 100)
            .await?,
        vec![(0, b"other".to_vec())]
    );
    assert_eq!(
        s.read_output(other.id, OutputStream::Stderr, 0, 100)
            .await?,
        vec![]
    );

    // A chunk number is written once.
    assert!(is_conflict(
        &s.append_output(cmd.id, OutputStream::Stdout, 2, b"again")
            .await
    ));
    assert_eq!(
        s.read_output(cmd.id, OutputStream::Stdout, 2, 1).await?,
        vec![(2, chunk(2))]
    );
    // Output of no command is refused; so is a chunk number the database cannot hold.
    assert!(is_backend(
        &s.append_output(
            CommandId::from_uuid(Uuid::new_v4()),
            OutputStream::Stdout,
            0,
            b"x"
        )
        .await
    ));
    assert!(is_backend(
        &s.append_output(cmd.id, OutputStream::Stdout, u64::MAX, b"x")
            .await
    ));

    // A 1 MiB chunk of every byte value.
    let big: Vec<u8> = (0..1_048_576_u32)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect();
    s.append_output(cmd.id, OutputStream::Stderr, 2, &big)
        .await?;
    let read = s.read_output(cmd.id, OutputStream::Stderr, 2, 1).await?;
    ensure!(read.len() == 1, "{} chunks", read.len());
    assert_eq!(read[0].0, 2);
    assert!(read[0].1 == big, "the 1 MiB chunk changed on the way");
    Ok(())
}

async fn a_command_finishes_only_once(b: impl Backend) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let session = active_session(s, &w.web, &w.alice, t(0), t(1)).await?;
    let cmd = running_command(&session, "make test", t(2));
    s.insert_command(&cmd, &started(&cmd)).await?;

    let first = CommandOutcome {
        status: CommandStatus::TimedOut,
        exit_code: Some(137),
        signal: Some("SIGKILL".into()),
        end_reason: Some(CommandEndReason::Timeout),
        finished_at: t(30_000_002),
        stdout_bytes: 9_000_000,
        stderr_bytes: 42,
        stdout_truncated: true,
        stderr_truncated: false,
    };
    assert!(s.finish_command(cmd.id, &first, &end_entry(cmd.id)).await?);
    let expected = finished(&cmd, &first);
    assert_eq!(s.get_command(cmd.id).await?, Some(expected.clone()));

    // A late report (the agent's own end after the timeout) changes nothing.
    assert!(
        !s.finish_command(cmd.id, &completed(0, t(30_000_100)), &end_entry(cmd.id))
            .await?
    );
    assert_eq!(s.get_command(cmd.id).await?, Some(expected));
    assert!(
        !s.finish_command(
            CommandId::from_uuid(Uuid::new_v4()),
            &first,
            &end_entry(CommandId::from_uuid(Uuid::new_v4()))
        )
        .await?
    );

    // Racing ends: exactly one wins.
    let raced = running_command(&session, "sleep 1", t(3));
    s.insert_command(&raced, &started(&raced)).await?;
    let (a, b2) = (completed(0, t(4)), completed(1, t(5)));
    let entry = end_entry(raced.id);
    let ends_before = count_of(&b.audit_actions().await?, "command_end");
    let (ra, rb) = tokio::join!(
        s.finish_command(raced.id, &a, &entry),
        s.finish_command(raced.id, &b2, &entry)
    );
    let (ra, rb) = (ra?, rb?);
    assert!(ra != rb, "{ra} / {rb}");
    // Only the winner's entry is written.
    assert_eq!(
        count_of(&b.audit_actions().await?, "command_end"),
        ends_before + 1
    );
    let winner = if ra { &a } else { &b2 };
    assert_eq!(
        s.get_command(raced.id).await?,
        Some(finished(&raced, winner))
    );

    // "Running" is not an end: the schema refuses it and the command stays as it was.
    let still = running_command(&session, "top -b", t(6));
    s.insert_command(&still, &started(&still)).await?;
    let not_an_end = CommandOutcome {
        status: CommandStatus::Running,
        ..completed(0, t(7))
    };
    assert!(is_backend(
        &s.finish_command(still.id, &not_an_end, &end_entry(still.id))
            .await
    ));
    assert_eq!(s.get_command(still.id).await?, Some(still));
    Ok(())
}

async fn fail_running_commands_ends_only_running_ones(b: impl Backend) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let web = active_session(s, &w.web, &w.alice, t(0), t(1)).await?;
    let db = active_session(s, &w.db, &w.bob, t(0), t(1)).await?;

    let mut a = running_command(&web, "tail -f /var/log/syslog", t(10));
    a.stdout_bytes = 100;
    a.stdout_truncated = true;
    let b_cmd = running_command(&db, "vacuumdb --all", t(11));
    let done = running_command(&web, "uptime", t(12));
    for c in [&a, &b_cmd, &done] {
        s.insert_command(c, &started(c)).await?;
    }
    let outcome = completed(0, t(13));
    assert!(
        s.finish_command(done.id, &outcome, &end_entry(done.id))
            .await?
    );
    let done = finished(&done, &outcome);

    let mut got = s
        .fail_running_commands(restart(), t(99), &restart_note())
        .await?;
    got.sort_by_key(|c| c.id);
    let mut expected: Vec<CommandRecord> = [a, b_cmd]
        .into_iter()
        .map(|c| CommandRecord {
            status: CommandStatus::Failed,
            end_reason: Some(restart()),
            finished_at: Some(t(99)),
            ..c
        })
        .collect();
    expected.sort_by_key(|c| c.id);
    assert_eq!(got, expected);
    for c in &expected {
        assert_eq!(s.get_command(c.id).await?.as_ref(), Some(c));
    }
    assert_eq!(s.get_command(done.id).await?, Some(done));
    assert_eq!(
        s.fail_running_commands(
            CommandEndReason::SessionClosed(CloseReason::ServerShutdown),
            t(100),
            &restart_note()
        )
        .await?,
        vec![]
    );
    Ok(())
}

async fn deleting_a_session_takes_its_commands_and_output_but_not_the_audit(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let gone = active_session(s, &w.web, &w.alice, t(0), t(1)).await?;
    let kept = active_session(s, &w.db, &w.bob, t(0), t(1)).await?;
    let doomed = running_command(&gone, "rm -rf /tmp/build", t(2));
    let survivor = running_command(&kept, "df -h", t(2));
    for c in [&doomed, &survivor] {
        s.insert_command(c, &started(c)).await?;
        s.append_output(c.id, OutputStream::Stdout, 0, b"out")
            .await?;
        s.append_output(c.id, OutputStream::Stderr, 0, b"err")
            .await?;
    }
    assert_eq!(b.output_rows().await?, 4);

    b.delete_session(gone.id()).await?;
    assert_eq!(s.get(gone.id()).await?, None);
    assert_eq!(s.get_command(doomed.id).await?, None);
    assert_eq!(
        s.read_output(doomed.id, OutputStream::Stdout, 0, 10)
            .await?,
        vec![]
    );
    assert_eq!(b.output_rows().await?, 2);
    assert_eq!(s.get_command(survivor.id).await?, Some(survivor.clone()));
    assert_eq!(
        s.read_output(survivor.id, OutputStream::Stderr, 0, 10)
            .await?,
        vec![(0, b"err".to_vec())]
    );
    // The deleted session's entries (its open, its command's start) stay.
    let of_gone = AuditQuery {
        session: Some(gone.id()),
        ..audit_query()
    };
    assert_eq!(
        events(&s.list_audit(&of_gone).await?),
        vec![started(&doomed), open_note().for_session(&gone, t(1))]
    );

    // Deleting an agent reaches its commands through its sessions.
    b.delete_agent(w.db.id).await?;
    assert_eq!(s.get_command(survivor.id).await?, None);
    assert_eq!(b.output_rows().await?, 0);

    // The new columns did not loosen the append-only rule.
    assert!(b.update_audit().await.is_err());
    assert!(b.delete_audit().await.is_err());
    assert_eq!(
        b.audit_actions().await?,
        vec!["tunnel_open", "tunnel_open", "command", "command"]
    );
    Ok(())
}

// ---- durability --------------------------------------------------------------------------

async fn data_survives_reopening_the_store(b: impl Backend) -> anyhow::Result<()> {
    let (w, session, ended) = {
        let s = b.store();
        let w = world(s).await?;
        let session = active_session(s, &w.web, &w.alice, t(0), t(5)).await?;
        let ended = new_session(&w.db, &w.bob, t(1));
        s.insert_pending(&ended, None).await?;
        s.close(
            ended.id(),
            CloseReason::Refused,
            t(2),
            &AuditNote::close(CloseReason::Refused),
        )
        .await?;
        s.record_seen(&[(w.db.id, t(50), None)]).await?;
        (w, session, closed(ended, CloseReason::Refused, t(2))?)
    };

    let b = b.reopen().await?;
    let s = b.store();
    assert_eq!(s.count_users().await?, 2);
    assert_eq!(s.find_user(&w.bob.username).await?, Some(w.bob.clone()));
    let mut db = w.db.clone();
    db.last_seen = Some(t(50));
    assert_eq!(s.list_agents().await?, vec![db, w.web.clone()]);
    assert_eq!(s.get(session.id()).await?, Some(session.clone()));
    assert_eq!(s.get(ended.id()).await?, Some(ended));
    assert_eq!(
        b.audit_actions().await?,
        vec!["tunnel_open", "tunnel_close"]
    );
    // The open-session rule still holds after the restart.
    assert!(is_conflict(
        &s.insert_pending(&new_session(&w.web, &w.bob, t(9)), None)
            .await
    ));
    let reconciled = s
        .close_all_open(
            CloseReason::ServerRestart,
            t(60),
            &AuditNote::close(CloseReason::ServerRestart),
        )
        .await?;
    assert_eq!(
        reconciled,
        vec![closed(session, CloseReason::ServerRestart, t(60))?]
    );
    Ok(())
}

// ---- start-up errors ---------------------------------------------------------------------

#[tokio::test]
async fn a_failed_postgres_connect_names_the_url_but_not_the_password() {
    // Port 1 on localhost: refused at once, no container needed.
    let err = PgStore::connect("postgres://rmm:hunter2@127.0.0.1:1/rmm")
        .await
        .expect_err("nothing listens on port 1");
    let message = format!("{err:#}");
    assert!(
        message.contains("postgres://rmm:***@127.0.0.1:1/rmm"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
    // The cause, not just the pool's timeout.
    assert!(message.contains("refused"), "{message}");
}

#[tokio::test]
async fn a_failed_sqlite_open_names_the_url_and_the_cause() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A regular file where the database's folder should be.
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"").expect("write blocker");
    let url = format!("sqlite://{}/rmm.sqlite3", blocker.display());
    let err = SqliteStore::connect(&url)
        .await
        .expect_err("the folder is a file");
    let message = format!("{err:#}");
    assert!(message.contains(&url), "{message}");
}
