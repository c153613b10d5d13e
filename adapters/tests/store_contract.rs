//! The storage contract, written once and run against every SQL store: each behaviour below is
//! a function generic over a [`Backend`], and `contract!` instantiates it as `pg::<name>`
//! (a brand-new database on the test PostgreSQL container) and `sqlite::<name>` (a file in a
//! temporary folder). Expected sessions are computed with the domain's own transitions, so the
//! stores are held to the same rules as the model.
//!
//! Run one half with `cargo test -p rmm-adapters --test store_contract sqlite` (or `pg`); the
//! PostgreSQL image comes from `RMM_TEST_PG_IMAGE`.

use anyhow::{Context as _, ensure};
use rmm_adapters::store::{PgStore, SqliteStore};
use rmm_application::{
    AgentRecord, AgentRepository, AuditAction, AuditEvent, AuditLog, HostFacts, KeyDigest,
    SessionRepository, StoreError, UserRecord, UserRepository,
};
use rmm_domain::{
    AgentId, AgentName, CloseReason, Role, Session, SessionId, SessionStatus, Timestamp, UserId,
    Username,
};
use tempfile::TempDir;
use uuid::Uuid;

/// Everything a SQL store implements.
trait Store: SessionRepository + AgentRepository + UserRepository + AuditLog {}
impl<T> Store for T where T: SessionRepository + AgentRepository + UserRepository + AuditLog {}

/// A store on a fresh database, plus the raw SQL access the ports deliberately lack (deleting
/// users and agents, reading and tampering with the audit table).
trait Backend: Sized {
    type Store: Store;

    async fn fresh() -> anyhow::Result<Self>;
    fn store(&self) -> &Self::Store;
    /// Closes and drops the store, then opens the same database again.
    async fn reopen(self) -> anyhow::Result<Self>;
    async fn delete_user(&self, id: UserId) -> anyhow::Result<()>;
    async fn delete_agent(&self, id: AgentId) -> anyhow::Result<()>;
    /// The audit table's actions, oldest first.
    async fn audit_actions(&self) -> anyhow::Result<Vec<String>>;
    async fn update_audit(&self) -> Result<u64, sqlx::Error>;
    async fn delete_audit(&self) -> Result<u64, sqlx::Error>;
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

    async fn audit_actions(&self) -> anyhow::Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("select action from audit_events order by audit_id")
                .fetch_all(self.store.pool())
                .await?,
        )
    }

    async fn update_audit(&self) -> Result<u64, sqlx::Error> {
        sqlx::query("update audit_events set detail = 'rewritten'")
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

    async fn audit_actions(&self) -> anyhow::Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("select action from audit_events order by audit_id")
                .fetch_all(self.store.pool())
                .await?,
        )
    }

    async fn update_audit(&self) -> Result<u64, sqlx::Error> {
        sqlx::query("update audit_events set detail = 'rewritten'")
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
    close_for_agent_closes_only_that_agents_open_sessions,
    close_all_open_closes_and_returns_every_open_session,
    close_idle_closes_only_active_sessions_idle_before_the_cutoff,
    touch_moves_active_sessions_forward_only,
    audit_entries_outlive_what_they_name_and_cannot_be_changed,
    data_survives_reopening_the_store,
);

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
    })
}

fn agent(name: &str, key_byte: u8) -> anyhow::Result<AgentRecord> {
    Ok(AgentRecord {
        id: AgentId::from_uuid(Uuid::new_v4()),
        name: AgentName::parse(name)?,
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
    store.insert_user(&w.alice).await?;
    store.insert_user(&w.bob).await?;
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
    store.insert_pending(&s).await?;
    ensure!(store.activate(s.id(), activated).await?, "activate failed");
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

// ---- users -------------------------------------------------------------------------------

async fn users_are_stored_found_and_counted_and_usernames_are_unique(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    assert_eq!(s.count_users().await?, 0);

    let admin = user("root.admin@msp-1", Role::Admin)?;
    let tech = user("tech_1", Role::Tech)?;
    s.insert_user(&admin).await?;
    s.insert_user(&tech).await?;
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
    assert!(is_conflict(&s.insert_user(&twin).await));
    let mut same_id = user("someone-else", Role::Tech)?;
    same_id.id = admin.id;
    assert!(is_conflict(&s.insert_user(&same_id).await));
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
    s.insert_pending(&pending).await?;
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
        s.insert_pending(&s2).await?;
        let closed_row = s.close(s2.id(), reason, t(offset + 5)).await?;
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
    let err = s.insert_pending(&orphan).await;
    assert!(matches!(err, Err(StoreError::Backend(_))), "{err:?}");
    Ok(())
}

async fn an_agent_has_at_most_one_open_session_until_it_closes(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;

    let first = new_session(&w.web, &w.alice, t(0));
    s.insert_pending(&first).await?;
    // Pending blocks a second session, by the same tech or another.
    assert!(is_conflict(
        &s.insert_pending(&new_session(&w.web, &w.alice, t(1))).await
    ));
    assert!(is_conflict(
        &s.insert_pending(&new_session(&w.web, &w.bob, t(1))).await
    ));
    // So does active.
    assert!(s.activate(first.id(), t(2)).await?);
    assert!(is_conflict(
        &s.insert_pending(&new_session(&w.web, &w.bob, t(3))).await
    ));
    // Another agent is unaffected.
    s.insert_pending(&new_session(&w.db, &w.bob, t(3))).await?;
    // The same session id twice is a conflict too.
    assert!(is_conflict(&s.insert_pending(&first).await));

    // Once closed, the agent is free again.
    s.close(first.id(), CloseReason::ClosedByOwner, t(4))
        .await?
        .context("first session was open")?;
    let second = new_session(&w.web, &w.bob, t(5));
    s.insert_pending(&second).await?;
    assert_eq!(s.get(second.id()).await?, Some(second.clone()));
    s.close(second.id(), CloseReason::Refused, t(6)).await?;

    // Racing opens: exactly one wins, in the database.
    let (a, b2) = (
        new_session(&w.web, &w.alice, t(7)),
        new_session(&w.web, &w.bob, t(7)),
    );
    let (ra, rb) = tokio::join!(s.insert_pending(&a), s.insert_pending(&b2));
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
    s.insert_pending(&web).await?;
    assert!(s.activate(web.id(), t(2_000)).await?);
    web.activate(t(2_000))?;
    assert_eq!(s.get(web.id()).await?, Some(web.clone()));
    assert_eq!(web.status(), SessionStatus::Active);
    assert_eq!(web.last_activity(), t(2_000));
    // Active: not again.
    assert!(!s.activate(web.id(), t(3_000)).await?);
    assert_eq!(s.get(web.id()).await?, Some(web.clone()));

    // An activation stamped before the open (clock skew) does not move activity back.
    let mut db = new_session(&w.db, &w.bob, t(5_000));
    s.insert_pending(&db).await?;
    assert!(s.activate(db.id(), t(4_000)).await?);
    db.activate(t(4_000))?;
    assert_eq!(db.last_activity(), t(5_000));
    assert_eq!(s.get(db.id()).await?, Some(db));

    // Closed, or unknown: no.
    s.close(web.id(), CloseReason::AgentDisconnected, t(6_000))
        .await?;
    let refused = new_session(&w.web, &w.bob, t(7_000));
    s.insert_pending(&refused).await?;
    s.close(refused.id(), CloseReason::Refused, t(7_001))
        .await?;
    assert!(!s.activate(refused.id(), t(7_002)).await?);
    assert_eq!(
        s.get(refused.id()).await?,
        Some(closed(refused, CloseReason::Refused, t(7_001))?)
    );
    assert!(
        !s.activate(SessionId::from_uuid(Uuid::new_v4()), t(0))
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
        .close(active.id(), CloseReason::ClosedByAdmin, t(20))
        .await?;
    assert_eq!(got, Some(expected.clone()));
    assert_eq!(got.map(|g| g.owner()), Some(w.alice.id));
    assert_eq!(s.get(active.id()).await?, Some(expected.clone()));

    // Closed already: nothing, and the first reason and time stay.
    assert_eq!(
        s.close(active.id(), CloseReason::ClosedByOwner, t(30))
            .await?,
        None
    );
    assert_eq!(s.get(active.id()).await?, Some(expected));
    assert_eq!(
        s.close(
            SessionId::from_uuid(Uuid::new_v4()),
            CloseReason::Idle,
            t(30)
        )
        .await?,
        None
    );

    // A pending session closes too (a refused open).
    let pending = new_session(&w.db, &w.bob, t(40));
    s.insert_pending(&pending).await?;
    assert_eq!(
        s.close(pending.id(), CloseReason::OpenTimeout, t(50))
            .await?,
        Some(closed(pending, CloseReason::OpenTimeout, t(50))?)
    );
    Ok(())
}

async fn close_for_agent_closes_only_that_agents_open_sessions(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;

    // web: one session closed long ago, one active now. db: one pending.
    let old = active_session(s, &w.web, &w.bob, t(0), t(1)).await?;
    s.close(old.id(), CloseReason::ClosedByOwner, t(2)).await?;
    let old = closed(old, CloseReason::ClosedByOwner, t(2))?;
    let current = active_session(s, &w.web, &w.alice, t(10), t(11)).await?;
    let other = new_session(&w.db, &w.bob, t(12));
    s.insert_pending(&other).await?;

    let got = s
        .close_for_agent(w.web.id, CloseReason::AgentDisconnected, t(20))
        .await?;
    assert_eq!(
        got,
        vec![closed(
            current.clone(),
            CloseReason::AgentDisconnected,
            t(20)
        )?]
    );
    assert_eq!(s.get(old.id()).await?, Some(old));
    assert_eq!(s.get(other.id()).await?, Some(other));

    // Nothing left open on web.
    assert_eq!(
        s.close_for_agent(w.web.id, CloseReason::AgentReconnected, t(30))
            .await?,
        vec![]
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
    s.insert_pending(&pending).await?;
    let earlier = new_session(&mail, &w.bob, t(1));
    s.insert_pending(&earlier).await?;
    s.close(earlier.id(), CloseReason::Refused, t(3)).await?;
    let earlier = closed(earlier, CloseReason::Refused, t(3))?;

    let got = by_id(s.close_all_open(CloseReason::ServerRestart, t(100)).await?);
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
        s.close_all_open(CloseReason::ServerShutdown, t(200))
            .await?,
        vec![]
    );
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
    s.insert_pending(&pending).await?;

    let got = s.close_idle(t(2_000), t(6_000)).await?;
    assert_eq!(got, vec![closed(stale, CloseReason::Idle, t(6_000))?]);
    assert_eq!(s.get(fresh.id()).await?, Some(fresh));
    assert_eq!(s.get(boundary.id()).await?, Some(boundary));
    assert_eq!(s.get(pending.id()).await?, Some(pending));
    assert_eq!(s.close_idle(t(2_000), t(7_000)).await?, vec![]);
    Ok(())
}

async fn touch_moves_active_sessions_forward_only(b: impl Backend) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let mail = agent("mail-01", 3)?;
    s.insert_agent(&mail).await?;

    let mut active = active_session(s, &w.web, &w.alice, t(0), t(2_000)).await?;
    let pending = new_session(&w.db, &w.bob, t(100));
    s.insert_pending(&pending).await?;
    let gone = active_session(s, &mail, &w.bob, t(0), t(10)).await?;
    s.close(gone.id(), CloseReason::Idle, t(20)).await?;
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
    let session = active_session(s, &w.web, &w.alice, t(0), t(1)).await?;

    s.append(&AuditEvent {
        at: t(1),
        action: AuditAction::TunnelOpen,
        user: Some(w.alice.id),
        agent: Some(w.web.id),
        session: Some(session.id()),
        detail: None,
    })
    .await?;
    s.append(&AuditEvent {
        at: t(2),
        action: AuditAction::TunnelClose,
        user: Some(w.alice.id),
        agent: Some(w.web.id),
        session: Some(session.id()),
        detail: Some("closed_by_owner".into()),
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

// ---- durability --------------------------------------------------------------------------

async fn data_survives_reopening_the_store(b: impl Backend) -> anyhow::Result<()> {
    let (w, session, ended) = {
        let s = b.store();
        let w = world(s).await?;
        let session = active_session(s, &w.web, &w.alice, t(0), t(5)).await?;
        let ended = new_session(&w.db, &w.bob, t(1));
        s.insert_pending(&ended).await?;
        s.close(ended.id(), CloseReason::Refused, t(2)).await?;
        s.record_seen(&[(w.db.id, t(50), None)]).await?;
        s.append(&AuditEvent {
            at: t(5),
            action: AuditAction::TunnelOpen,
            user: Some(w.alice.id),
            agent: Some(w.web.id),
            session: Some(session.id()),
            detail: None,
        })
        .await?;
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
    assert_eq!(b.audit_actions().await?, vec!["tunnel_open"]);
    // The open-session rule still holds after the restart.
    assert!(is_conflict(
        &s.insert_pending(&new_session(&w.web, &w.bob, t(9))).await
    ));
    let reconciled = s.close_all_open(CloseReason::ServerRestart, t(60)).await?;
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
