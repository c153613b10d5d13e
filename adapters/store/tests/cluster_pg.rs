//! Cluster mode on a real PostgreSQL: several [`PgStore::for_node`] on one database, each
//! seeing and closing only its own sessions, commands and recordings while the rules that span
//! the cluster stay global; and the nodes' leases, with the sweep that closes what a node whose
//! lease ran out held.
//!
//! The PostgreSQL image comes from `RMM_TEST_PG_IMAGE` (see `rmm_e2e::pg`).

use std::time::Duration;

use anyhow::{Context as _, ensure};
use rmm_application::{
    AgentRecord, AgentRepository, AuditAction, AuditEvent, AuditLog, AuditNote, AuditQuery,
    CommandRecord, CommandRepository, HostFacts, KeyDigest, LostNode, NodeLeases, RecordingRecord,
    RecordingRepository, SessionRepository, StoreError, UserRecord, UserRepository,
    sweep_lost_nodes,
};
use rmm_domain::{
    AgentId, AgentName, ChannelId, CloseReason, CommandEndReason, CommandId, CommandStatus, Role,
    Session, SessionId, TerminalId, Timestamp, UserId, Username,
};
use rmm_store::PgStore;
use uuid::Uuid;

// ---- fixtures ----------------------------------------------------------------------------

fn t(micros: i64) -> Timestamp {
    Timestamp::from_unix_micros(1_700_000_000_123_456 + micros)
}

/// A store on a brand-new database, as the single node (`""`).
async fn fresh_store() -> anyhow::Result<PgStore> {
    let url = rmm_e2e::pg::fresh_database().await?;
    PgStore::connect(&url).await
}

async fn user(store: &PgStore, name: &str) -> anyhow::Result<UserRecord> {
    let user = UserRecord {
        id: UserId::from_uuid(Uuid::new_v4()),
        username: Username::parse(name)?,
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$salt-of-{name}$hash"),
        role: Role::Tech,
        created_at: t(-1_000),
        disabled: false,
        last_login_at: None,
    };
    let mut entry = AuditEvent::new(user.created_at, AuditAction::UserCreated);
    entry.detail = Some(format!("user_id={}", user.id));
    store.insert_user(&user, &[], &entry).await?;
    Ok(user)
}

async fn agent(store: &PgStore, name: &str, key_byte: u8) -> anyhow::Result<AgentRecord> {
    let agent = AgentRecord {
        id: AgentId::from_uuid(Uuid::new_v4()),
        name: AgentName::parse(name)?,
        group: rmm_domain::GroupName::default_group(),
        revoked: false,
        key_digest: KeyDigest([key_byte; 32]),
        created_at: t(-2_000),
        last_seen: None,
        facts: HostFacts::default(),
    };
    store.insert_agent(&agent).await?;
    Ok(agent)
}

fn pending(agent: &AgentRecord, tech: &UserRecord, at: Timestamp) -> Session {
    Session::open(SessionId::from_uuid(Uuid::new_v4()), agent.id, tech.id, at)
}

/// Opens and activates a session through `store` (so on its node).
async fn active(
    store: &PgStore,
    agent: &AgentRecord,
    tech: &UserRecord,
    at: Timestamp,
) -> anyhow::Result<Session> {
    let mut s = pending(agent, tech, at);
    store.insert_pending(&s, None).await?;
    let note = AuditNote::new(AuditAction::TunnelOpen, None);
    ensure!(store.activate(s.id(), at, &note).await?, "activate failed");
    s.activate(at)?;
    Ok(s)
}

/// A running command in `session`, stored.
async fn running(store: &PgStore, session: &Session, text: &str) -> anyhow::Result<CommandRecord> {
    let id = CommandId::from_uuid(Uuid::new_v4());
    let command = CommandRecord {
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
        started_at: t(10),
        finished_at: None,
        stdout_bytes: 0,
        stderr_bytes: 0,
        stdout_truncated: false,
        stderr_truncated: false,
        output_pruned: false,
    };
    let mut entry = AuditEvent::new(command.started_at, AuditAction::Command);
    entry.session = Some(command.session);
    store.insert_command(&command, &entry).await?;
    Ok(command)
}

/// `command` as ended for `reason` at `at`.
fn ended(command: &CommandRecord, reason: CommandEndReason, at: Timestamp) -> CommandRecord {
    CommandRecord {
        status: reason.status(),
        end_reason: Some(reason),
        finished_at: Some(at),
        ..command.clone()
    }
}

/// An open recording of a terminal in `session` (any session id: recordings have no foreign
/// key), stored.
async fn recording(store: &PgStore, session: SessionId) -> anyhow::Result<RecordingRecord> {
    let recording = RecordingRecord {
        id: TerminalId::from_uuid(Uuid::new_v4()),
        session,
        agent: AgentId::from_uuid(Uuid::new_v4()),
        user: UserId::from_uuid(Uuid::new_v4()),
        started_at: t(20),
        ended_at: None,
        cols: 80,
        rows: 24,
        term: "xterm-256color".to_owned(),
        command: None,
        size: 0,
        truncated: false,
        pruned: false,
    };
    RecordingRepository::create(store, &recording).await?;
    Ok(recording)
}

async fn ended_at(store: &PgStore, id: TerminalId) -> anyhow::Result<Option<Timestamp>> {
    Ok(store
        .get_recording(id)
        .await?
        .context("recording gone")?
        .ended_at)
}

fn closed(mut s: Session, reason: CloseReason, at: Timestamp) -> anyhow::Result<Session> {
    s.close(reason, at)?;
    Ok(s)
}

/// `(action, detail)` of the entries about `session`, oldest first.
async fn entries_of(store: &PgStore, session: SessionId) -> anyhow::Result<Vec<AuditEvent>> {
    let query = AuditQuery {
        session: Some(session),
        limit: 1000,
        ..AuditQuery::default()
    };
    let mut events: Vec<AuditEvent> = store
        .list_audit(&query)
        .await?
        .into_iter()
        .map(|e| e.event)
        .collect();
    events.reverse();
    Ok(events)
}

fn restart() -> CommandEndReason {
    CommandEndReason::SessionClosed(CloseReason::ServerRestart)
}

fn restart_note() -> AuditNote {
    AuditNote::new(AuditAction::CommandEnd, Some("server_restart".into()))
}

// ---- node scope --------------------------------------------------------------------------

#[tokio::test]
async fn each_node_lists_and_closes_only_its_own_sessions_commands_and_recordings()
-> anyhow::Result<()> {
    let single = fresh_store().await?;
    let a = single.clone().for_node("a");
    let b = single.clone().for_node("b");
    assert_eq!((single.node(), a.node(), b.node()), ("", "a", "b"));
    let alice = user(&single, "alice").await?;
    let bob = user(&single, "bob").await?;
    let web = agent(&single, "web-01", 1).await?;
    let db = agent(&single, "db-01", 2).await?;
    let mail = agent(&single, "mail-01", 3).await?;

    let on_a = active(&a, &web, &alice, t(0)).await?;
    let on_b = active(&b, &db, &bob, t(0)).await?;
    assert_eq!(a.list_open().await?, vec![on_a.clone()]);
    assert_eq!(b.list_open().await?, vec![on_b.clone()]);
    // The single node owns every session, whichever node opened it.
    assert_eq!(single.list_open().await?.len(), 2);
    // By id, every node's.
    assert_eq!(a.get(on_b.id()).await?, Some(on_b.clone()));

    // One open session per agent, across the cluster.
    let twin = pending(&web, &bob, t(1));
    assert!(matches!(
        b.insert_pending(&twin, None).await,
        Err(StoreError::Conflict)
    ));
    // The per-user cap counts every node's sessions: bob has one open, on b.
    assert!(
        !a.insert_pending_capped(&pending(&mail, &bob, t(1)), None, 1)
            .await?
    );
    assert!(b.get(twin.id()).await?.is_none());

    // Idle sessions: only the node's own.
    assert_eq!(
        b.close_idle(t(5), t(6), &AuditNote::close(CloseReason::Idle))
            .await?,
        vec![closed(on_b.clone(), CloseReason::Idle, t(6))?]
    );
    let on_b = active(&b, &db, &bob, t(7)).await?;

    // Running commands: only those of the node's sessions.
    let cmd_a = running(&a, &on_a, "uptime").await?;
    let cmd_b = running(&b, &on_b, "df -h").await?;
    assert_eq!(
        a.fail_running_commands(restart(), t(30), &restart_note())
            .await?,
        vec![ended(&cmd_a, restart(), t(30))]
    );
    assert_eq!(b.get_command(cmd_b.id).await?, Some(cmd_b.clone()));

    // Open recordings: of the node's sessions, and of sessions that are gone.
    let rec_a = recording(&a, on_a.id()).await?;
    let rec_b = recording(&b, on_b.id()).await?;
    let orphan = recording(&a, SessionId::from_uuid(Uuid::new_v4())).await?;
    assert_eq!(a.finish_abandoned(t(40)).await?, 2);
    assert_eq!(ended_at(&a, rec_a.id).await?, Some(t(40)));
    assert_eq!(ended_at(&a, orphan.id).await?, Some(t(40)));
    assert_eq!(ended_at(&a, rec_b.id).await?, None);

    // Closing all: only the node's.
    let note = AuditNote::close(CloseReason::ServerShutdown);
    assert_eq!(
        a.close_all_open(CloseReason::ServerShutdown, t(50), &note)
            .await?,
        vec![closed(on_a, CloseReason::ServerShutdown, t(50))?]
    );
    assert_eq!(a.list_open().await?, vec![]);
    assert_eq!(b.list_open().await?, vec![on_b.clone()]);

    // The single node still ends everything, as before cluster mode.
    assert_eq!(single.finish_abandoned(t(60)).await?, 1);
    assert_eq!(
        single
            .fail_running_commands(restart(), t(60), &restart_note())
            .await?,
        vec![ended(&cmd_b, restart(), t(60))]
    );
    assert_eq!(
        single
            .close_all_open(CloseReason::ServerRestart, t(60), &note)
            .await?,
        vec![closed(on_b, CloseReason::ServerRestart, t(60))?]
    );
    Ok(())
}

// ---- leases ------------------------------------------------------------------------------

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_lease_renews_only_for_its_generation_and_a_rejoin_takes_a_new_one() -> anyhow::Result<()>
{
    let store = fresh_store().await?;
    let first = store.join("a", LONG).await?;
    assert_eq!(first, 1);
    assert!(store.renew("a", first, LONG).await?);
    let second = store.join("a", LONG).await?;
    assert_eq!(second, 2);
    assert!(!store.renew("a", first, LONG).await?);
    assert!(store.renew("a", second, LONG).await?);
    assert!(!store.renew("b", second, LONG).await?);

    // Leaving with a stale generation leaves the lease alone.
    store.leave("a", first).await?;
    assert!(store.renew("a", second, LONG).await?);
    store.leave("a", second).await?;
    assert!(!store.renew("a", second, LONG).await?);
    // A generation never comes back, even once the row is gone.
    let third = store.join("a", LONG).await?;
    assert!(third > second, "{third} after {second}");
    assert!(!store.renew("a", second, LONG).await?);
    Ok(())
}

/// What node `node` holds: an active session with a running command and an open recording.
struct Held {
    session: Session,
    command: CommandRecord,
    recording: RecordingRecord,
}

async fn hold(
    store: &PgStore,
    agent: &AgentRecord,
    tech: &UserRecord,
    text: &str,
) -> anyhow::Result<Held> {
    let session = active(store, agent, tech, t(0)).await?;
    let command = running(store, &session, text).await?;
    let recording = recording(store, session.id()).await?;
    Ok(Held {
        session,
        command,
        recording,
    })
}

fn lost_one<'a>(lost: &'a [LostNode], node: &str) -> anyhow::Result<&'a LostNode> {
    let mut found = lost.iter().filter(|l| l.node == node);
    let one = found
        .next()
        .with_context(|| format!("{node} not claimed"))?;
    ensure!(found.next().is_none(), "{node} claimed twice");
    Ok(one)
}

/// Checks that `held` was closed by the sweep at `now`, as `lost` says and as stored.
async fn assert_closed_for_loss(
    store: &PgStore,
    lost: &LostNode,
    held: &Held,
    now: Timestamp,
) -> anyhow::Result<()> {
    let session = closed(held.session.clone(), CloseReason::NodeLost, now)?;
    let reason = CommandEndReason::SessionClosed(CloseReason::NodeLost);
    let command = ended(&held.command, reason, now);
    assert_eq!(lost.sessions, vec![session.clone()]);
    assert_eq!(lost.commands, vec![command.clone()]);
    assert_eq!(lost.recordings, 1);
    assert_eq!(store.get(session.id()).await?, Some(session.clone()));
    assert_eq!(command.status, CommandStatus::Failed);
    assert_eq!(store.get_command(command.id).await?, Some(command.clone()));
    assert_eq!(ended_at(store, held.recording.id).await?, Some(now));

    let entries = entries_of(store, session.id()).await?;
    let close = entries
        .iter()
        .find(|e| e.action == AuditAction::TunnelClose)
        .context("no tunnel_close entry")?;
    assert_eq!(close.detail.as_deref(), Some("node_lost"));
    assert_eq!(close.at, now);
    let end = entries
        .iter()
        .find(|e| e.action == AuditAction::CommandEnd)
        .context("no command_end entry")?;
    assert_eq!(end.detail.as_deref(), Some("node_lost"));
    let audit = end
        .command
        .as_ref()
        .context("command_end without command")?;
    assert_eq!(audit.command_id, Some(command.id));
    assert_eq!(audit.status.as_deref(), Some("failed"));
    Ok(())
}

#[tokio::test]
async fn lost_nodes_are_claimed_once_and_closed_while_live_nodes_are_never_claimed()
-> anyhow::Result<()> {
    let single = fresh_store().await?;
    let alice = user(&single, "alice").await?;
    let mut agents = Vec::new();
    for (n, name) in ["web-01", "db-01", "mail-01", "dns-01"].iter().enumerate() {
        agents.push(agent(&single, name, u8::try_from(n)?).await?);
    }
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|n| single.clone().for_node(n));

    // a and d will stop renewing; b and c live on (c only because it renewed).
    let short = Duration::from_secs(1);
    let gen_a = a.join("a", short).await?;
    let gen_d = d.join("d", short).await?;
    b.join("b", LONG).await?;
    let gen_c = c.join("c", short).await?;
    assert!(c.renew("c", gen_c, LONG).await?);
    // Nothing ran out yet.
    assert_eq!(sweep_lost_nodes(&b, t(100)).await?, vec![]);

    let held_a = hold(&a, &agents[0], &alice, "tail -f /var/log/syslog").await?;
    let held_d = hold(&d, &agents[1], &alice, "sleep 600").await?;
    let held_c = hold(&c, &agents[2], &alice, "top -b").await?;
    // A session of a's closed earlier (by id, from b) is not closed again.
    let gone = active(&a, &agents[3], &alice, t(0)).await?;
    let note = AuditNote::close(CloseReason::ClosedByAdmin);
    b.close(gone.id(), CloseReason::ClosedByAdmin, t(5), &note)
        .await?
        .context("not closed")?;
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // b and c sweep at once: each lost node is claimed by exactly one of them.
    let now = t(1_000);
    let (by_b, by_c) = tokio::join!(sweep_lost_nodes(&b, now), sweep_lost_nodes(&c, now));
    let lost: Vec<LostNode> = by_b?.into_iter().chain(by_c?).collect();
    assert_eq!(lost.len(), 2, "{lost:?}");
    let lost_a = lost_one(&lost, "a")?;
    assert_eq!(lost_a.generation, gen_a);
    assert_closed_for_loss(&b, lost_a, &held_a, now).await?;
    let lost_d = lost_one(&lost, "d")?;
    assert_eq!(lost_d.generation, gen_d);
    assert_closed_for_loss(&b, lost_d, &held_d, now).await?;

    // Claimed once: a second sweep finds nothing, and the lost node's renewal fails.
    assert_eq!(sweep_lost_nodes(&b, t(2_000)).await?, vec![]);
    assert!(!a.renew("a", gen_a, LONG).await?);
    // The live node kept everything.
    assert!(c.renew("c", gen_c, LONG).await?);
    assert_eq!(c.list_open().await?, vec![held_c.session.clone()]);
    assert_eq!(
        c.get_command(held_c.command.id).await?,
        Some(held_c.command)
    );
    assert_eq!(ended_at(&c, held_c.recording.id).await?, None);
    let nodes: Vec<String> =
        sqlx::query_scalar("select node_id from cluster_nodes order by node_id")
            .fetch_all(single.pool())
            .await?;
    assert_eq!(nodes, ["b", "c"]);
    Ok(())
}
