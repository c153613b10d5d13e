//! Audited changes fail closed: when the store refuses a change with its entry, the use case
//! reports it and nothing is taken as done; background closes the store refused are made
//! later by the maintenance sweep, and refused command ends by maintenance's retry.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use mockall::predicate::eq;
use rmm_application::*;
use rmm_domain::*;
use uuid::Uuid;

fn refused() -> StoreError {
    StoreError::backend(std::io::Error::other("injected: audit insert failed"))
}

/// Long enough ago that no open can still be in flight (open timeout 10 s + grace).
fn long_ago() -> Timestamp {
    now().minus(Duration::from_secs(60))
}

fn open_session(id: u128, agent: AgentId, opened: Timestamp, active: bool) -> Session {
    let mut s = Session::open(
        SessionId::from_uuid(Uuid::from_u128(id)),
        agent,
        TECH.id,
        opened,
    );
    if active {
        s.activate(opened).unwrap();
    }
    s
}

fn maintenance_quiet(s: &mut Setup) {
    s.sessions
        .expect_close_idle()
        .returning(|_, _, _| Box::pin(async { Ok(vec![]) }));
}

#[tokio::test]
async fn an_activation_the_store_refuses_opens_nothing_and_tells_the_agent() {
    let mut s = Setup::default().agent_connected();
    s.sessions
        .expect_insert_pending_capped()
        .returning(|_, _, _| Box::pin(async { Ok(true) }));
    s.gateway
        .expect_open_tunnel()
        .returning(|_, _, _| Box::pin(async { Ok(OpenReply::Ready) }));
    s.sessions
        .expect_activate()
        .times(1)
        .returning(|_, _, _| Box::pin(async { Err(refused()) }));
    s.gateway
        .expect_close_tunnel()
        .with(eq(AGENT), eq(SESSION))
        .times(1)
        .return_const(());
    let err = s.build().open_tunnel(TECH, AGENT).await.unwrap_err();
    assert!(matches!(err, OpenTunnelError::Store(_)), "{err:?}");
}

#[tokio::test]
async fn a_close_the_store_refuses_is_an_error_and_leaves_the_tunnel_up() {
    let mut s = Setup::default();
    active_session_store(&mut s);
    s.sessions
        .expect_close()
        .times(1)
        .returning(|_, _, _, _| Box::pin(async { Err(refused()) }));
    s.gateway.expect_close_tunnel().never();
    let err = s.build().close_tunnel(TECH, SESSION).await.unwrap_err();
    assert!(matches!(err, CloseTunnelError::Store(_)), "{err:?}");
}

#[tokio::test]
async fn a_disconnect_whose_close_is_refused_is_closed_by_the_next_sweep() {
    let mut s = Setup::default();
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&attempts);
    s.sessions
        .expect_close()
        .with(
            eq(SESSION),
            eq(CloseReason::AgentDisconnected),
            eq(now()),
            eq(AuditNote::close(CloseReason::AgentDisconnected)),
        )
        .times(2)
        .returning(move |_, reason, at, _| {
            let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
            Box::pin(async move {
                if first {
                    return Err(refused());
                }
                let mut s = open_session(0x5, AGENT, long_ago(), true);
                s.close(reason, at).unwrap();
                Ok(Some(s))
            })
        });
    s.sessions
        .expect_list_open()
        .returning(|| Box::pin(async { Ok(vec![open_session(0x5, AGENT, long_ago(), true)]) }));
    maintenance_quiet(&mut s);
    // The agent is gone: no connection holds the session.
    s.gateway.expect_mode().with(eq(AGENT)).return_const(None);
    s.gateway.expect_pending_open().return_const(None);
    let app = s.build();
    assert!(app.agent_disconnected(AGENT, Some(SESSION)).await.is_err());
    app.flush_presence_and_close_idle().await.unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_sweep_closes_only_old_sessions_no_connection_holds_each_with_its_entry() {
    let reconnected = AgentId::from_uuid(Uuid::from_u128(0xB1));
    let held = AgentId::from_uuid(Uuid::from_u128(0xB2));
    let opening = AgentId::from_uuid(Uuid::from_u128(0xB3));
    let young = AgentId::from_uuid(Uuid::from_u128(0xB4));
    let stale_pending = AgentId::from_uuid(Uuid::from_u128(0xB5));
    let sessions = vec![
        open_session(0x51, reconnected, long_ago(), true),
        open_session(0x52, held, long_ago(), true),
        open_session(0x53, opening, long_ago(), false),
        open_session(0x54, young, now(), true),
        open_session(0x55, stale_pending, long_ago(), false),
    ];
    let mut s = Setup::default();
    let listed = sessions.clone();
    s.sessions
        .expect_list_open()
        .returning(move || Box::pin(std::future::ready(Ok(listed.clone()))));
    maintenance_quiet(&mut s);
    let modes = [
        (reconnected, Some(AgentMode::Heartbeat)),
        (
            held,
            Some(AgentMode::Tunnel {
                session: sessions[1].id(),
            }),
        ),
        (opening, Some(AgentMode::Heartbeat)),
        (stale_pending, Some(AgentMode::Heartbeat)),
    ];
    for (agent, mode) in modes {
        s.gateway.expect_mode().with(eq(agent)).return_const(mode);
    }
    let in_flight = sessions[2].id();
    s.gateway
        .expect_pending_open()
        .returning(move |agent| (agent == opening).then_some(in_flight));
    let expect = [
        (
            sessions[0].id(),
            CloseReason::AgentReconnected,
            AuditNote::close(CloseReason::AgentReconnected),
        ),
        (
            sessions[4].id(),
            CloseReason::OpenTimeout,
            AuditNote::new(
                AuditAction::TunnelTimeout,
                Some("the open ended without a recorded outcome".into()),
            ),
        ),
    ];
    for (id, reason, note) in expect {
        s.sessions
            .expect_close()
            .with(eq(id), eq(reason), eq(now()), eq(note))
            .times(1)
            .returning(|_, _, _, _| Box::pin(async { Ok(None) }));
    }
    s.build().flush_presence_and_close_idle().await.unwrap();
}

#[tokio::test]
async fn a_command_end_the_store_refuses_is_kept_and_stored_by_maintenance() {
    let mut s = Setup::default();
    active_session_store(&mut s);
    s.commands
        .expect_insert_command()
        .returning(|_, _| Box::pin(async { Ok(()) }));
    s.gateway
        .expect_send_command()
        .returning(|_, _, _, _, _, _| Ok(()));
    s.gateway.expect_release_channel().return_const(());
    // The agent cannot cancel: the server ends the command itself.
    s.gateway.expect_cancel_command().return_const(false);
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&attempts);
    s.commands
        .expect_finish_command()
        .withf(|id, o, e| {
            *id == COMMAND
                && o.status == CommandStatus::Cancelled
                && o.end_reason == Some(CommandEndReason::CancelledByUser)
                && e.action == AuditAction::CommandEnd
                && e.detail.as_deref() == Some("cancelled_by_user")
                && e.command.as_ref().and_then(|c| c.status.as_deref()) == Some("cancelled")
        })
        .times(2)
        .returning(move |_, _, _| {
            let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
            Box::pin(async move { if first { Err(refused()) } else { Ok(true) } })
        });
    let stored = running_command();
    s.commands
        .expect_get_command()
        .with(eq(COMMAND))
        .returning(move |_| Box::pin(std::future::ready(Ok(Some(stored.clone())))));
    no_open_sessions(&mut s);
    maintenance_quiet(&mut s);
    s.sessions
        .expect_touch()
        .returning(|_, _| Box::pin(async { Ok(()) }));
    let app = s.build();
    app.run_command(TECH, SESSION, "sleep 60", None, None)
        .await
        .unwrap();
    let err = app
        .cancel_command(TECH, SESSION, COMMAND, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, GetCommandError::EndNotRecorded(id) if id == COMMAND),
        "{err:?}"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    // Maintenance stores it; a second cancel then finds nothing left to end.
    app.flush_presence_and_close_idle().await.unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    app.cancel_command(TECH, SESSION, COMMAND, Duration::from_secs(1))
        .await
        .unwrap();
    app.flush_presence_and_close_idle().await.unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn restart_reconciliation_ends_sessions_and_commands_each_with_its_entry() {
    let mut s = Setup::default();
    s.sessions
        .expect_close_all_open()
        .with(
            eq(CloseReason::ServerRestart),
            eq(now()),
            eq(AuditNote::close(CloseReason::ServerRestart)),
        )
        .times(1)
        .returning(|_, _, _| Box::pin(async { Ok(vec![]) }));
    s.commands
        .expect_fail_running_commands()
        .with(
            eq(CommandEndReason::SessionClosed(CloseReason::ServerRestart)),
            eq(now()),
            eq(AuditNote::new(
                AuditAction::CommandEnd,
                Some("server_restart".into()),
            )),
        )
        .times(1)
        .returning(|_, _, _| Box::pin(async { Ok(vec![running_command()]) }));
    // Recordings of terminals the previous process ran are closed too.
    s.recordings
        .expect_finish_abandoned()
        .with(eq(now()))
        .times(1)
        .returning(|_| Box::pin(async { Ok(2) }));
    assert_eq!(s.build().reconcile_after_restart().await.unwrap(), (0, 1));
}

fn running_command() -> CommandRecord {
    CommandRecord {
        id: COMMAND,
        session: SESSION,
        agent: AGENT,
        owner: TECH.id,
        channel: ChannelId::for_command(COMMAND),
        text: "sleep 60".into(),
        timeout_secs: 300,
        status: CommandStatus::Running,
        exit_code: None,
        signal: None,
        end_reason: None,
        started_at: now(),
        finished_at: None,
        stdout_bytes: 0,
        stderr_bytes: 0,
        stdout_truncated: false,
        stderr_truncated: false,
        output_pruned: false,
    }
}
