#![allow(clippy::unwrap_used)]

use super::*;

const ALICE: Option<&str> = Some("alice");

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

fn at(secs: u64) -> Timestamp {
    Timestamp::from_unix_micros(1_700_000_000_000_000).plus(Duration::from_secs(secs))
}

/// `n` failed attempts for `user` from `addr`, one a second from `from`.
fn fail(t: &LoginThrottle, user: Option<&str>, addr: Option<IpAddr>, n: u64, from: u64) {
    for i in 0..n {
        let attempt = t.begin(user, addr, at(from + i)).unwrap();
        t.failed(&attempt, at(from + i));
    }
}

#[test]
fn five_failures_in_a_minute_lock_the_username_for_a_minute() {
    let t = LoginThrottle::default();
    fail(&t, ALICE, ip("10.0.0.1"), 4, 0);
    assert!(t.begin(ALICE, ip("10.0.0.2"), at(4)).is_ok_and(|a| {
        t.failed(&a, at(4));
        true
    }));
    // Locked from another address too, for a minute after the fifth failure.
    assert_eq!(
        t.begin(ALICE, ip("10.0.0.3"), at(5)).unwrap_err(),
        Duration::from_secs(59)
    );
    assert!(t.begin(Some("bob"), ip("10.0.0.3"), at(5)).is_ok());
    assert!(t.begin(ALICE, ip("10.0.0.3"), at(64)).is_ok());
}

#[test]
fn failures_spread_over_more_than_a_minute_do_not_lock() {
    let t = LoginThrottle::default();
    for i in 0..10 {
        fail(&t, ALICE, None, 1, i * 15);
    }
    assert!(t.begin(ALICE, None, at(151)).is_ok());
}

#[test]
fn lockouts_double_up_to_fifteen_minutes() {
    let t = LoginThrottle::default();
    let mut now = 0;
    for expected in [60, 120, 240, 480, 900, 900] {
        fail(&t, ALICE, None, 5, now);
        now += 4;
        assert_eq!(
            t.begin(ALICE, None, at(now)).unwrap_err(),
            Duration::from_secs(expected)
        );
        now += expected;
    }
}

#[test]
fn a_success_resets_the_username_but_not_the_address() {
    let t = LoginThrottle::default();
    fail(&t, ALICE, ip("10.0.0.1"), 4, 0);
    let ok = t.begin(ALICE, ip("10.0.0.1"), at(4)).unwrap();
    t.succeeded(&ok);
    fail(&t, ALICE, ip("10.0.0.9"), 4, 5);
    assert!(t.begin(ALICE, ip("10.0.0.9"), at(9)).is_ok());
    // The address has four failures from before the success, and the success is not one.
    let t = LoginThrottle::default();
    fail(&t, ALICE, ip("10.0.0.1"), 4, 0);
    t.succeeded(&t.begin(ALICE, ip("10.0.0.1"), at(4)).unwrap());
    fail(&t, Some("bob"), ip("10.0.0.1"), 1, 5);
    assert!(t.begin(Some("carol"), ip("10.0.0.1"), at(6)).is_err());
}

#[test]
fn five_failures_from_one_address_lock_it_for_every_username() {
    let t = LoginThrottle::default();
    for (i, user) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        fail(&t, Some(user), ip("192.0.2.7"), 1, i as u64);
    }
    assert!(t.begin(Some("f"), ip("192.0.2.7"), at(6)).is_err());
    assert!(t.begin(Some("f"), ip("192.0.2.8"), at(6)).is_ok());
}

#[test]
fn ipv6_addresses_count_by_their_64() {
    let t = LoginThrottle::default();
    for i in 0..5u64 {
        let addr = ip(&format!("2001:db8::{}", i + 1));
        fail(&t, None, addr, 1, i);
    }
    assert!(t.begin(None, ip("2001:db8::ffff"), at(6)).is_err());
    assert!(t.begin(None, ip("2001:db8:0:1::1"), at(6)).is_ok());
}

#[test]
fn after_a_failure_running_attempts_count_so_a_burst_cannot_slip_past() {
    let t = LoginThrottle::default();
    fail(&t, ALICE, None, 1, 0);
    let running: Vec<Attempt> = (0..4)
        .map(|_| t.begin(ALICE, None, at(1)).unwrap())
        .collect();
    assert!(t.begin(ALICE, None, at(1)).is_err());
    // Undecided attempts count against nobody.
    for a in &running {
        t.abandoned(a);
    }
    assert!(t.begin(ALICE, None, at(2)).is_ok());
}

#[test]
fn a_clean_record_admits_any_number_of_concurrent_attempts() {
    let t = LoginThrottle::default();
    let running: Vec<Attempt> = (0..50)
        .map(|_| t.begin(ALICE, ip("10.0.0.1"), at(0)).unwrap())
        .collect();
    for a in &running {
        t.succeeded(a);
    }
    assert!(t.begin(ALICE, ip("10.0.0.1"), at(0)).is_ok());
}

#[test]
fn tracked_keys_are_bounded() {
    let t = LoginThrottle::default();
    for i in 0..(MAX_TRACKED as u64 + 10) {
        let name = format!("user{i}");
        let a = t.begin(Some(&name), None, at(0)).unwrap();
        t.failed(&a, at(0));
    }
    let state = t.state.lock().unwrap();
    assert!(state.users.0.len() <= MAX_TRACKED);
}
