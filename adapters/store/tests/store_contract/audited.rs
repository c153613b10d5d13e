//! Every audited change commits with its audit entry or not at all: with inserts into the
//! audit table made to fail in the database (a trigger), the change returns an error and
//! leaves the state as it was; without the trigger the same change succeeds, with exactly
//! its entries.

use anyhow::ensure;
use rmm_application::{
    AuditAction, AuditEvent, AuditNote, CommandRecord, CommandRepository, SessionRepository,
    StoreError,
};
use rmm_domain::{CloseReason, CommandEndReason, CommandStatus};

use super::{
    Backend, Store, active_session, audit_query, by_id, closed, completed, end_entry, events,
    finished, is_backend, new_session, open_note, restart_note, running_command, started, t, world,
};

/// Every stored entry but the fixtures' `user_created` ones, oldest first.
pub(crate) async fn entries(s: &impl Store) -> anyhow::Result<Vec<AuditEvent>> {
    let mut listed = events(&s.list_audit(&audit_query()).await?);
    listed.retain(|e| e.action != AuditAction::UserCreated);
    listed.reverse();
    Ok(listed)
}

/// Runs `change` with audit inserts failing: it must fail as the backend's error and write
/// nothing.
pub(crate) async fn refused<T: std::fmt::Debug>(
    b: &impl Backend,
    change: impl std::future::Future<Output = Result<T, StoreError>>,
) -> anyhow::Result<()> {
    let before = b.audit_actions().await?;
    b.fail_audit_inserts().await?;
    let result = change.await;
    b.restore_audit_inserts().await?;
    ensure!(is_backend(&result), "the change did not fail: {result:?}");
    ensure!(b.audit_actions().await? == before, "an entry was written");
    Ok(())
}

pub(crate) async fn an_activation_commits_with_its_entry_or_not_at_all(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let pending = new_session(&w.web, &w.alice, t(0));
    s.insert_pending(&pending, None).await?;

    refused(&b, s.activate(pending.id(), t(1), &open_note())).await?;
    assert_eq!(s.get(pending.id()).await?, Some(pending.clone()));

    assert!(s.activate(pending.id(), t(1), &open_note()).await?);
    let mut active = pending;
    active.activate(t(1))?;
    assert_eq!(s.get(active.id()).await?, Some(active.clone()));
    assert_eq!(
        entries(s).await?,
        vec![open_note().for_session(&active, t(1))]
    );
    Ok(())
}

pub(crate) async fn a_close_commits_with_its_entry_or_not_at_all(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let active = active_session(s, &w.web, &w.alice, t(0), t(1)).await?;
    let note = AuditNote::close(CloseReason::AgentDisconnected);
    let reason = CloseReason::AgentDisconnected;

    refused(&b, s.close(active.id(), reason, t(2), &note)).await?;
    assert_eq!(s.get(active.id()).await?, Some(active.clone()));

    let expected = closed(active.clone(), reason, t(2))?;
    assert_eq!(
        s.close(active.id(), reason, t(2), &note).await?,
        Some(expected.clone())
    );
    assert_eq!(s.get(active.id()).await?, Some(expected.clone()));
    assert_eq!(
        entries(s).await?,
        vec![
            open_note().for_session(&active, t(1)),
            note.for_session(&expected, t(2)),
        ]
    );
    // Closed already: nothing changes, nothing is written.
    assert_eq!(s.close(active.id(), reason, t(3), &note).await?, None);
    assert_eq!(entries(s).await?.len(), 2);
    Ok(())
}

pub(crate) async fn close_all_open_commits_with_an_entry_per_session_or_not_at_all(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let active = active_session(s, &w.web, &w.alice, t(0), t(1)).await?;
    let pending = new_session(&w.db, &w.bob, t(2));
    s.insert_pending(&pending, None).await?;
    let reason = CloseReason::ServerShutdown;
    let note = AuditNote::close(reason);

    refused(&b, s.close_all_open(reason, t(3), &note)).await?;
    assert_eq!(s.get(active.id()).await?, Some(active.clone()));
    assert_eq!(s.get(pending.id()).await?, Some(pending.clone()));

    let expected = by_id(vec![
        closed(active.clone(), reason, t(3))?,
        closed(pending, reason, t(3))?,
    ]);
    assert_eq!(
        by_id(s.close_all_open(reason, t(3), &note).await?),
        expected
    );
    let mut written = entries(s).await?;
    assert_eq!(written.remove(0), open_note().for_session(&active, t(1)));
    written.sort_by_key(|e| e.session);
    let per_session: Vec<AuditEvent> = expected.iter().map(|s| note.for_session(s, t(3))).collect();
    assert_eq!(written, per_session);
    Ok(())
}

pub(crate) async fn close_idle_commits_with_an_entry_per_session_or_not_at_all(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let stale = active_session(s, &w.web, &w.alice, t(0), t(10)).await?;
    let fresh = active_session(s, &w.db, &w.bob, t(0), t(500)).await?;
    let note = AuditNote::close(CloseReason::Idle);

    refused(&b, s.close_idle(t(100), t(1_000), &note)).await?;
    assert_eq!(s.get(stale.id()).await?, Some(stale.clone()));

    let expected = closed(stale.clone(), CloseReason::Idle, t(1_000))?;
    assert_eq!(
        s.close_idle(t(100), t(1_000), &note).await?,
        vec![expected.clone()]
    );
    assert_eq!(s.get(fresh.id()).await?, Some(fresh.clone()));
    assert_eq!(
        entries(s).await?,
        vec![
            open_note().for_session(&stale, t(10)),
            open_note().for_session(&fresh, t(500)),
            note.for_session(&expected, t(1_000)),
        ]
    );
    Ok(())
}

pub(crate) async fn a_command_start_commits_with_its_entry_or_not_at_all(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let session = active_session(s, &w.web, &w.alice, t(0), t(1)).await?;
    let cmd = running_command(&session, "uptime", t(2));

    refused(&b, s.insert_command(&cmd, &started(&cmd))).await?;
    assert_eq!(s.get_command(cmd.id).await?, None);

    s.insert_command(&cmd, &started(&cmd)).await?;
    assert_eq!(s.get_command(cmd.id).await?, Some(cmd.clone()));
    assert_eq!(entries(s).await?.last(), Some(&started(&cmd)));
    Ok(())
}

pub(crate) async fn a_command_end_commits_with_its_entry_or_not_at_all(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let session = active_session(s, &w.web, &w.alice, t(0), t(1)).await?;
    let cmd = running_command(&session, "make", t(2));
    s.insert_command(&cmd, &started(&cmd)).await?;
    let outcome = completed(0, t(3));
    let entry = end_entry(cmd.id);

    refused(&b, s.finish_command(cmd.id, &outcome, &entry)).await?;
    assert_eq!(s.get_command(cmd.id).await?, Some(cmd.clone()));

    assert!(s.finish_command(cmd.id, &outcome, &entry).await?);
    assert_eq!(s.get_command(cmd.id).await?, Some(finished(&cmd, &outcome)));
    assert_eq!(entries(s).await?.last(), Some(&entry));
    Ok(())
}

pub(crate) async fn fail_running_commands_commits_with_an_entry_per_command_or_not_at_all(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let session = active_session(s, &w.web, &w.alice, t(0), t(1)).await?;
    let (a, c) = (
        running_command(&session, "sleep 100", t(2)),
        running_command(&session, "tail -f log", t(3)),
    );
    for cmd in [&a, &c] {
        s.insert_command(cmd, &started(cmd)).await?;
    }
    let before = entries(s).await?;
    let note = restart_note();
    let reason = CommandEndReason::SessionClosed(CloseReason::ServerRestart);
    let fail = || s.fail_running_commands(reason, t(10), &note);

    refused(&b, fail()).await?;
    assert_eq!(s.get_command(a.id).await?, Some(a.clone()));
    assert_eq!(s.get_command(c.id).await?, Some(c.clone()));

    let ended = |cmd: &CommandRecord| CommandRecord {
        status: CommandStatus::Failed,
        end_reason: Some(reason),
        finished_at: Some(t(10)),
        ..cmd.clone()
    };
    let mut got = fail().await?;
    got.sort_by_key(|c| c.id);
    let mut expected = vec![ended(&a), ended(&c)];
    expected.sort_by_key(|c| c.id);
    assert_eq!(got, expected);
    let mut written = entries(s).await?.split_off(before.len());
    written.sort_by_key(|e| e.command.as_ref().and_then(|c| c.command_id));
    let per_command: Vec<AuditEvent> = expected
        .iter()
        .map(|c| restart_note().for_ended_command(c))
        .collect();
    assert_eq!(written, per_command);
    // Each says why and how its command ended.
    assert_eq!(
        written[0].detail.as_deref(),
        Some(CloseReason::ServerRestart.as_str())
    );
    assert!(
        written
            .iter()
            .all(|e| e.command.as_ref().and_then(|c| c.status.as_deref()) == Some("failed"))
    );
    Ok(())
}
