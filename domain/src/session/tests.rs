//! Unit tests of the session lifecycle and its access rules.

use uuid::Uuid;

use super::*;

fn t(micros: i64) -> Timestamp {
    Timestamp::from_unix_micros(micros)
}

fn owner() -> UserId {
    UserId::from_uuid(Uuid::from_u128(1))
}

fn pending() -> Session {
    Session::open(
        SessionId::from_uuid(Uuid::from_u128(10)),
        AgentId::from_uuid(Uuid::from_u128(20)),
        owner(),
        t(100),
    )
}

fn active() -> Session {
    let mut s = pending();
    s.activate(t(200)).unwrap();
    s
}

#[test]
fn a_new_session_is_pending() {
    let s = pending();
    assert_eq!(s.status(), SessionStatus::Pending);
    assert_eq!(s.opened_at(), t(100));
    assert_eq!(s.closed_at(), None);
}

#[test]
fn pending_activates_and_records_activity() {
    let s = active();
    assert_eq!(s.status(), SessionStatus::Active);
    assert_eq!(s.last_activity(), t(200));
}

#[test]
fn active_cannot_activate_again() {
    let mut s = active();
    assert_eq!(s.activate(t(300)), Err(SessionError::AlreadyActive));
}

#[test]
fn closed_cannot_activate() {
    let mut s = pending();
    s.close(CloseReason::OpenTimeout, t(150)).unwrap();
    assert_eq!(
        s.activate(t(300)),
        Err(SessionError::Closed(CloseReason::OpenTimeout))
    );
}

#[test]
fn pending_and_active_close_with_time_and_reason() {
    let mut p = pending();
    p.close(CloseReason::Refused, t(150)).unwrap();
    assert_eq!(
        p.state(),
        SessionState::Closed {
            at: t(150),
            reason: CloseReason::Refused
        }
    );

    let mut a = active();
    a.close(CloseReason::ClosedByOwner, t(400)).unwrap();
    assert_eq!(a.closed_at(), Some(t(400)));
    assert_eq!(a.close_reason(), Some(CloseReason::ClosedByOwner));
}

#[test]
fn closing_twice_keeps_the_first_reason() {
    let mut s = active();
    s.close(CloseReason::AgentDisconnected, t(400)).unwrap();
    assert_eq!(
        s.close(CloseReason::ClosedByOwner, t(500)),
        Err(SessionError::Closed(CloseReason::AgentDisconnected))
    );
    assert_eq!(s.closed_at(), Some(t(400)));
}

#[test]
fn touch_only_moves_an_active_session_forward() {
    let mut s = active();
    s.touch(t(900)).unwrap();
    s.touch(t(800)).unwrap();
    assert_eq!(s.last_activity(), t(900));
    assert_eq!(pending().touch(t(900)), Err(SessionError::NotActive));
    let mut c = active();
    c.close(CloseReason::Idle, t(300)).unwrap();
    assert_eq!(
        c.touch(t(900)),
        Err(SessionError::Closed(CloseReason::Idle))
    );
}

#[test]
fn the_owner_may_do_everything() {
    let me = Actor {
        id: owner(),
        role: Role::Tech,
    };
    for action in [
        SessionAction::Read,
        SessionAction::Use,
        SessionAction::Close,
        SessionAction::Watch,
    ] {
        assert_eq!(active().authorize(me, action), Ok(()));
    }
    assert_eq!(active().close_reason_for(me), CloseReason::ClosedByOwner);
}

#[test]
fn another_tech_may_do_nothing() {
    let other = Actor {
        id: UserId::from_uuid(Uuid::from_u128(2)),
        role: Role::Tech,
    };
    for action in [
        SessionAction::Read,
        SessionAction::Use,
        SessionAction::Close,
        SessionAction::Watch,
    ] {
        assert!(active().authorize(other, action).is_err());
    }
}

#[test]
fn an_admin_may_close_and_watch_but_not_read_or_use_anothers_session() {
    let admin = Actor {
        id: UserId::from_uuid(Uuid::from_u128(3)),
        role: Role::Admin,
    };
    assert_eq!(active().authorize(admin, SessionAction::Close), Ok(()));
    assert_eq!(active().authorize(admin, SessionAction::Watch), Ok(()));
    let auditor = Actor {
        id: UserId::from_uuid(Uuid::from_u128(4)),
        role: Role::Auditor,
    };
    assert!(active().authorize(auditor, SessionAction::Watch).is_err());
    assert!(active().authorize(admin, SessionAction::Read).is_err());
    assert!(active().authorize(admin, SessionAction::Use).is_err());
    assert_eq!(active().close_reason_for(admin), CloseReason::ClosedByAdmin);
}

#[test]
fn idleness_counts_from_the_last_activity_of_active_sessions_only() {
    let idle = Duration::from_micros(50);
    assert!(!active().is_idle(t(249), idle));
    assert!(active().is_idle(t(250), idle));
    assert!(!pending().is_idle(t(10_000), idle));
}

#[test]
fn stored_states_round_trip_and_incomplete_closed_rows_are_rejected() {
    for reason in CloseReason::ALL {
        assert_eq!(CloseReason::parse(reason.as_str()), Some(reason));
    }
    assert_eq!(
        Session::state_from_parts("closed", Some(t(5)), Some("idle")),
        Ok(SessionState::Closed {
            at: t(5),
            reason: CloseReason::Idle
        })
    );
    assert_eq!(
        Session::state_from_parts("active", None, None),
        Ok(SessionState::Active)
    );
    assert!(Session::state_from_parts("closed", None, Some("idle")).is_err());
    assert!(Session::state_from_parts("closed", Some(t(5)), Some("bogus")).is_err());
    assert!(Session::state_from_parts("weird", None, None).is_err());
}
