//! Logging in under load and attack: throttled after repeated failures (without checking the
//! password), and refused as busy when the password cannot be checked now.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use rmm_application::*;
use rmm_domain::*;

fn admin_record(name: &Username) -> UserRecord {
    UserRecord {
        id: ADMIN.id,
        username: name.clone(),
        password_hash: "h".into(),
        role: Role::Admin,
        created_at: now(),
        disabled: false,
        last_login_at: None,
    }
}

/// A setup whose only user is `admin` with password `right`; counts the hashes checked.
fn setup(checked: &Arc<AtomicUsize>) -> Setup {
    let mut s = Setup::default();
    s.users.expect_find_user().returning(|name| {
        let record = (name.as_str() == "admin").then(|| admin_record(name));
        Box::pin(async move { Ok(record) })
    });
    let checked = Arc::clone(checked);
    s.credentials
        .expect_verify_password()
        .returning(move |password, _| {
            checked.fetch_add(1, Ordering::SeqCst);
            let ok = password == "right";
            Box::pin(async move { Ok(ok) })
        });
    s
}

const FROM: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)));

#[tokio::test]
async fn five_failures_throttle_even_the_right_password_without_hashing_it() {
    let checked = Arc::new(AtomicUsize::new(0));
    let app = setup(&checked).build();
    for _ in 0..5 {
        assert!(matches!(
            app.login("admin", "wrong", FROM).await,
            Err(LoginError::InvalidCredentials)
        ));
    }
    match app.login("admin", "right", None).await {
        Err(LoginError::Throttled { retry_after }) => {
            assert_eq!(retry_after.as_secs(), throttle::FIRST_LOCKOUT.as_secs());
        }
        other => panic!("expected Throttled, got {other:?}"),
    }
    assert_eq!(checked.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_success_resets_the_usernames_failures() {
    let checked = Arc::new(AtomicUsize::new(0));
    let app = setup(&checked).build();
    for round in 0..3 {
        for _ in 0..4 {
            assert!(
                app.login("admin", "wrong", None).await.is_err(),
                "round {round}"
            );
        }
        assert_eq!(app.login("admin", "right", None).await.unwrap(), ADMIN);
    }
}

#[tokio::test]
async fn busy_hashing_is_reported_and_counts_as_no_failure() {
    let mut s = Setup::default();
    s.users.expect_find_user().returning(|name| {
        let record = admin_record(name);
        Box::pin(async move { Ok(Some(record)) })
    });
    s.credentials
        .expect_verify_password()
        .returning(|_, _| Box::pin(async { Err(HashingBusy) }));
    let app = s.build();
    for _ in 0..10 {
        assert!(matches!(
            app.login("admin", "x", FROM).await,
            Err(LoginError::Busy)
        ));
    }
}
