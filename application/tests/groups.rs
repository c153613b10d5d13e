//! Groups over mocked ports: technicians see only their groups' agents, users are created
//! and changed with groups (an unknown group refused before anything is written), and the
//! per-user session cap.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod common;

use common::*;
use mockall::predicate::eq;
use rmm_application::*;
use rmm_domain::*;
use uuid::Uuid;

fn name(n: &str) -> GroupName {
    GroupName::parse(n).unwrap()
}

fn agent(id: u128, group: &str) -> AgentRecord {
    AgentRecord {
        id: AgentId::from_uuid(Uuid::from_u128(id)),
        name: AgentName::parse(&format!("agent-{id}")).unwrap(),
        group: name(group),
        revoked: false,
        key_digest: KeyDigest([0; 32]),
        created_at: now(),
        last_seen: None,
        facts: HostFacts::default(),
    }
}

/// Groups `default` and `acme`; TECH is granted acme; other expectations as `permissive`.
fn acme_groups() -> MockGroupRepository {
    let mut g = MockGroupRepository::new();
    g.expect_user_groups()
        .returning(|_| Box::pin(async { Ok(vec![name("acme")]) }));
    g.expect_list_groups().returning(|| {
        Box::pin(async {
            Ok(["acme", "default"]
                .into_iter()
                .map(|n| GroupRecord {
                    id: n.to_owned(),
                    name: name(n),
                    created_at: now(),
                    agents: 0,
                })
                .collect())
        })
    });
    g
}

#[tokio::test]
async fn technicians_list_only_their_groups_agents_admins_and_auditors_all() {
    let mut s = Setup {
        groups: Some(acme_groups()),
        ..Setup::default()
    };
    s.agents.expect_list_agents().returning(|| {
        Box::pin(async {
            Ok(vec![
                agent(1, "acme"),
                agent(2, "default"),
                agent(3, "acme"),
            ])
        })
    });
    s.gateway.expect_mode().return_const(None);
    let app = s.build();
    let ids = |views: Vec<AgentView>| -> Vec<u128> {
        views
            .iter()
            .map(|v| v.record.id.as_uuid().as_u128())
            .collect()
    };
    assert_eq!(ids(app.list_agents_for(TECH).await.unwrap()), [1, 3]);
    assert_eq!(ids(app.list_agents_for(ADMIN).await.unwrap()), [1, 2, 3]);
    let auditor = Actor {
        id: OTHER_TECH.id,
        role: Role::Auditor,
    };
    assert_eq!(ids(app.list_agents_for(auditor).await.unwrap()), [1, 2, 3]);
}

#[tokio::test]
async fn an_unknown_group_is_refused_before_a_user_is_created_or_changed() {
    // No users or credentials expectation: nothing is hashed or written.
    let s = Setup {
        groups: Some(acme_groups()),
        ..Setup::default()
    };
    let app = s.build();
    let created = app
        .create_user_in(
            Some(ADMIN),
            Username::parse("gus").unwrap(),
            "long-enough",
            Role::Tech,
            &[name("acme"), name("initech")],
        )
        .await;
    assert!(
        matches!(&created, Err(CreateUserError::UnknownGroup(g)) if g.as_str() == "initech"),
        "{created:?}"
    );
    let update = UserUpdate {
        groups: Some(vec![name("nowhere")]),
        ..UserUpdate::default()
    };
    let changed = app.update_user(Some(ADMIN), TECH.id, update).await;
    assert!(
        matches!(&changed, Err(UserAdminError::UnknownGroup(g)) if g == "nowhere"),
        "{changed:?}"
    );
}

#[tokio::test]
async fn a_users_groups_are_granted_in_the_audited_change_that_names_them() {
    let mut s = Setup {
        groups: Some(acme_groups()),
        ..Setup::default()
    };
    s.users
        .expect_update_user()
        .withf(|_, change, revoke, entry| {
            *change
                == UserChange {
                    groups: Some(vec![name("acme")]),
                    ..UserChange::default()
                }
                && revoke.is_none()
                && entry
                    .detail
                    .as_deref()
                    .is_some_and(|d| d.ends_with("groups=acme"))
        })
        .times(1)
        .returning(|_, _, _, _| Box::pin(async { Ok(UserChangeOutcome::Changed) }));
    s.users.expect_find_user_by_id().returning(|_| {
        Box::pin(async {
            Ok(Some(UserRecord {
                id: TECH.id,
                username: Username::parse("tina").unwrap(),
                password_hash: "hash".into(),
                role: Role::Tech,
                created_at: now(),
                disabled: false,
                last_login_at: None,
            }))
        })
    });
    let update = UserUpdate {
        groups: Some(vec![name("acme")]),
        ..UserUpdate::default()
    };
    let user = s
        .build()
        .update_user(Some(ADMIN), TECH.id, update)
        .await
        .unwrap();
    assert_eq!(user.id, TECH.id);
}

#[tokio::test]
async fn the_open_at_the_per_user_cap_is_refused_before_the_agent_is_asked() {
    let mut g = MockGroupRepository::new();
    g.expect_may_see_agent()
        .returning(|_, _| Box::pin(async { Ok(true) }));
    let mut s = Setup {
        groups: Some(g),
        ..Setup::default()
    };
    s.gateway
        .expect_mode()
        .return_const(Some(AgentMode::Heartbeat));
    // The store counts with the insert and refuses it; no agent is asked (no expectation).
    s.sessions
        .expect_insert_pending_capped()
        .withf(|_, _, cap| *cap == 20)
        .times(1)
        .returning(|_, _, _| Box::pin(async { Ok(false) }));
    let refused = s.build().open_tunnel(TECH, AGENT).await;
    assert!(
        matches!(refused, Err(OpenTunnelError::TooManySessions(20))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_offline_agent_at_the_cap_still_answers_the_cap_first() {
    let mut g = MockGroupRepository::new();
    g.expect_may_see_agent()
        .returning(|_, _| Box::pin(async { Ok(true) }));
    g.expect_open_sessions_of()
        .with(eq(TECH.id))
        .returning(|_| Box::pin(async { Ok(20) }));
    let mut s = Setup {
        groups: Some(g),
        ..Setup::default()
    };
    s.gateway.expect_mode().return_const(None);
    s.sessions.expect_insert_pending_capped().never();
    let refused = s.build().open_tunnel(TECH, AGENT).await;
    assert!(
        matches!(refused, Err(OpenTunnelError::TooManySessions(20))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn two_opens_racing_at_the_cap_cannot_both_pass_it() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    // One below the cap of 20; each stored pending session counts.
    let held = Arc::new(AtomicU64::new(19));
    let mut g = MockGroupRepository::new();
    g.expect_may_see_agent()
        .returning(|_, _| Box::pin(async { Ok(true) }));
    let mut s = Setup {
        groups: Some(g),
        ..Setup::default()
    };
    s.gateway
        .expect_mode()
        .return_const(Some(AgentMode::Heartbeat));
    // As the store does it, the count and the insert in one call; it yields between them,
    // so an open that ignored the other in flight would count 19 twice. The insert then
    // fails (the open is not the subject).
    let stored = Arc::clone(&held);
    s.sessions
        .expect_insert_pending_capped()
        .times(2..=3)
        .returning(move |_, _, cap| {
            let stored = Arc::clone(&stored);
            Box::pin(async move {
                if stored.load(Ordering::SeqCst) >= cap {
                    return Ok(false);
                }
                tokio::task::yield_now().await;
                stored.fetch_add(1, Ordering::SeqCst);
                Err(StoreError::backend(std::io::Error::other(
                    "not the subject",
                )))
            })
        });
    let app = s.build();
    let (first, second) = tokio::join!(app.open_tunnel(TECH, AGENT), app.open_tunnel(TECH, AGENT));
    let capped = [&first, &second]
        .iter()
        .filter(|r| matches!(r, Err(OpenTunnelError::TooManySessions(20))))
        .count();
    assert_eq!(capped, 1, "{first:?} / {second:?}");
}

#[tokio::test]
async fn opens_of_one_user_below_the_cap_run_side_by_side() {
    use std::sync::Arc;
    let mut g = MockGroupRepository::new();
    g.expect_may_see_agent()
        .returning(|_, _| Box::pin(async { Ok(true) }));
    let mut s = Setup {
        groups: Some(g),
        ..Setup::default()
    };
    s.gateway
        .expect_mode()
        .return_const(Some(AgentMode::Heartbeat));
    // Each insert waits for the other to have started: opens taking turns would never get
    // there. The inserts then fail (the open is not the subject); the cap left to each is
    // the cap minus the other in flight, or the whole cap.
    let both = Arc::new(tokio::sync::Barrier::new(2));
    s.sessions
        .expect_insert_pending_capped()
        .withf(|_, _, cap| *cap == 19 || *cap == 20)
        .times(2)
        .returning(move |_, _, _| {
            let both = Arc::clone(&both);
            Box::pin(async move {
                both.wait().await;
                Err(StoreError::backend(std::io::Error::other(
                    "not the subject",
                )))
            })
        });
    let app = s.build();
    let (first, second) = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        tokio::join!(app.open_tunnel(TECH, AGENT), app.open_tunnel(TECH, AGENT))
    })
    .await
    .expect("the two opens waited for each other");
    assert!(matches!(first, Err(OpenTunnelError::Store(_))), "{first:?}");
    assert!(
        matches!(second, Err(OpenTunnelError::Store(_))),
        "{second:?}"
    );
}
