//! An open refused because the agent has a session already says who holds it.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod common;

use common::*;
use mockall::predicate::{eq, function};
use rmm_application::*;
use rmm_domain::*;
use uuid::Uuid;

/// The session that holds the agent (the open under test would be `SESSION`).
const HELD: SessionId = SessionId::from_uuid(Uuid::from_u128(0x6));

fn opened_at() -> Timestamp {
    // 2024-02-29T13:05:09Z
    Timestamp::from_unix_micros(1_709_211_909_000_000)
}

fn held_by(owner: Actor, active: bool) -> Session {
    let mut s = Session::open(HELD, AGENT, owner.id, opened_at());
    if active {
        s.activate(opened_at()).unwrap();
    }
    s
}

/// The agent is connected in `mode`, the store refuses a second session, and `HELD` is
/// stored as `held`.
fn conflict(mode: AgentMode, held: Option<Session>) -> Setup {
    let mut s = Setup::default();
    s.gateway
        .expect_mode()
        .with(eq(AGENT))
        .return_const(Some(mode));
    s.sessions
        .expect_insert_pending_capped()
        .returning(|_, _, _| Box::pin(async { Err(StoreError::Conflict) }));
    s.sessions.expect_get().with(eq(HELD)).returning(move |_| {
        let held = held.clone();
        Box::pin(async move { Ok(held) })
    });
    s.gateway.expect_open_tunnel().never();
    s.sessions.expect_close().never();
    s
}

async fn refusal(s: Setup, actor: Actor) -> TunnelHolder {
    match s.build().open_tunnel(actor, AGENT).await {
        Err(OpenTunnelError::Conflict(holder)) => holder,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn the_caller_is_told_it_is_their_own_session_and_how_to_close_it() {
    let s = conflict(
        AgentMode::Tunnel { session: HELD },
        Some(held_by(TECH, true)),
    );
    let holder = refusal(s, TECH).await;
    assert_eq!(
        holder,
        TunnelHolder::Caller {
            session: HELD,
            status: SessionStatus::Active,
            since: opened_at(),
        }
    );
    let message = holder.to_string();
    assert_eq!(
        message,
        "you already hold session 00000000-0000-0000-0000-000000000006 to this agent (open \
         since 2024-02-29T13:05:09Z); an agent has one session at a time: use that one, or \
         close it first with POST /api/v1/tunnel/close {\"session_id\": \
         \"00000000-0000-0000-0000-000000000006\"} (rmm close \
         00000000-0000-0000-0000-000000000006)"
    );
    assert!(
        message.starts_with("you already hold session 00000000-0000-0000-0000-000000000006"),
        "{message}"
    );
    assert!(message.contains("since 2024-02-29T13:05:09Z"), "{message}");
    assert!(message.contains("POST /api/v1/tunnel/close"), "{message}");
    assert!(
        message.contains("rmm close 00000000-0000-0000-0000-000000000006"),
        "{message}"
    );
}

#[tokio::test]
async fn another_tech_is_told_who_holds_it_since_when_but_not_its_id() {
    let s = conflict(
        AgentMode::Tunnel { session: HELD },
        Some(held_by(OTHER_TECH, true)),
    );
    let holder = refusal(s, TECH).await;
    assert_eq!(
        holder,
        TunnelHolder::Other {
            user: OTHER_TECH.id,
            status: SessionStatus::Active,
            since: opened_at(),
            session: None,
        }
    );
    let message = holder.to_string();
    assert_eq!(
        message,
        "user 00000000-0000-0000-0000-000000000002 holds this agent: their session is open \
         since 2024-02-29T13:05:09Z; an agent has one session at a time: they or an admin \
         can close it"
    );
    assert!(
        message.starts_with("user 00000000-0000-0000-0000-000000000002 holds this agent"),
        "{message}"
    );
    assert!(
        message.contains("open since 2024-02-29T13:05:09Z"),
        "{message}"
    );
    assert!(
        message.contains("they or an admin can close it"),
        "{message}"
    );
    assert!(!message.contains("000000000006"), "{message}");
    assert!(!message.contains("you already"), "{message}");
}

#[tokio::test]
async fn an_admin_is_also_told_the_session_to_close() {
    let s = conflict(
        AgentMode::Tunnel { session: HELD },
        Some(held_by(TECH, true)),
    );
    let holder = refusal(s, ADMIN).await;
    assert!(
        matches!(holder, TunnelHolder::Other { user, session: Some(HELD), .. } if user == TECH.id)
    );
    assert!(
        holder
            .to_string()
            .ends_with("(session 00000000-0000-0000-0000-000000000006)")
    );
}

#[tokio::test]
async fn an_open_in_flight_is_named_by_the_gateway() {
    let mut s = conflict(AgentMode::Heartbeat, Some(held_by(OTHER_TECH, false)));
    s.gateway
        .expect_pending_open()
        .with(eq(AGENT))
        .times(1)
        .return_const(Some(HELD));
    let holder = refusal(s, TECH).await;
    assert!(matches!(
        holder,
        TunnelHolder::Other {
            status: SessionStatus::Pending,
            session: None,
            ..
        }
    ));
    assert!(
        holder
            .to_string()
            .contains("their session is being opened since")
    );
}

#[tokio::test]
async fn a_holder_gone_meanwhile_gives_the_generic_answer() {
    let mut s = conflict(AgentMode::Heartbeat, None);
    s.gateway.expect_pending_open().return_const(None);
    assert_eq!(refusal(s, TECH).await, TunnelHolder::Unknown);

    let mut closed = held_by(OTHER_TECH, true);
    closed
        .close(CloseReason::ClosedByOwner, opened_at())
        .unwrap();
    let s = conflict(AgentMode::Tunnel { session: HELD }, Some(closed));
    let holder = refusal(s, TECH).await;
    assert_eq!(holder, TunnelHolder::Unknown);
    assert!(holder.to_string().contains("retry when it ends"));
}

#[tokio::test]
async fn a_gateway_busy_during_the_open_names_the_holder_and_closes_ours() {
    let mut s = Setup::default();
    s.gateway
        .expect_mode()
        .with(eq(AGENT))
        .return_const(Some(AgentMode::Tunnel { session: HELD }));
    s.sessions
        .expect_insert_pending_capped()
        .returning(|_, _, _| Box::pin(async { Ok(true) }));
    s.gateway
        .expect_open_tunnel()
        .returning(|_, _, _| Box::pin(async { Err(GatewayError::Busy) }));
    s.sessions
        .expect_get()
        .with(eq(HELD))
        .returning(|_| Box::pin(async { Ok(Some(held_by(TECH, true))) }));
    s.sessions
        .expect_close()
        .with(
            eq(SESSION),
            eq(CloseReason::Refused),
            eq(now()),
            function(|n: &AuditNote| {
                n.action == AuditAction::TunnelRefused
                    && n.detail
                        .as_deref()
                        .is_some_and(|d| d.starts_with("you already hold session"))
            }),
        )
        .times(1)
        .returning(|_, _, _, _| {
            let mut ours = Session::open(SESSION, AGENT, TECH.id, now());
            ours.close(CloseReason::Refused, now()).unwrap();
            Box::pin(async move { Ok(Some(ours)) })
        });
    let holder = refusal(s, TECH).await;
    assert!(matches!(holder, TunnelHolder::Caller { session: HELD, .. }));
}
