//! Live agent lists: every use case that changes what `list_agents_for` shows tells them
//! (and one that changes nothing does not), and one user holds at most
//! `MAX_AGENT_STREAMS_PER_USER` at once, a closed one giving its place back.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod common;

use common::*;
use rmm_application::*;
use rmm_domain::*;

/// Whether a change was noted since the last call (marking it seen).
fn changed(watch: &mut AgentWatch) -> bool {
    let changed = watch.changes.has_changed().unwrap();
    watch.changes.borrow_and_update();
    changed
}

#[tokio::test]
async fn a_user_holds_at_most_four_live_lists_and_a_closed_one_frees_its_place() {
    let app = Setup::default().build();
    let mut open: Vec<AgentWatch> = (0..MAX_AGENT_STREAMS_PER_USER)
        .map(|_| app.watch_agents(TECH).unwrap())
        .collect();
    assert_eq!(MAX_AGENT_STREAMS_PER_USER, 4);
    assert_eq!(
        app.watch_agents(TECH).unwrap_err(),
        WatchAgentsError::TooMany
    );
    // Another user is counted apart.
    let _admins = app.watch_agents(ADMIN).unwrap();
    open.pop();
    let again = app.watch_agents(TECH);
    assert!(again.is_ok());
    assert_eq!(
        app.watch_agents(TECH).unwrap_err(),
        WatchAgentsError::TooMany
    );
}

#[tokio::test]
async fn connecting_and_disconnecting_agents_are_told() {
    let app = Setup::default().build();
    let mut watch = app.watch_agents(TECH).unwrap();
    assert!(!changed(&mut watch), "nothing happened yet");
    app.agent_connected(AGENT, None).await.unwrap();
    assert!(changed(&mut watch), "connect");
    app.agent_disconnected(AGENT, None).await.unwrap();
    assert!(changed(&mut watch), "disconnect");
    // A heartbeat alone is told when presence is written (the maintenance flush), not per beat.
    app.agent_heartbeat(AGENT, None);
    assert!(!changed(&mut watch), "heartbeat");
}

#[tokio::test]
async fn registering_is_told_and_a_refused_registration_is_not() {
    let mut s = Setup::default();
    s.credentials.expect_new_agent_key().returning(|| AgentKey {
        secret: "rmmk_x".to_owned(),
        digest: KeyDigest([1; 32]),
    });
    s.agents
        .expect_insert_agent()
        .times(1)
        .returning(|_| Box::pin(async { Ok(()) }));
    let app = s.build();
    let mut watch = app.watch_agents(ADMIN).unwrap();
    let name = AgentName::parse("web-01").unwrap();
    assert!(app.register_agent(TECH, name.clone()).await.is_err());
    assert!(
        !changed(&mut watch),
        "a refused registration changes nothing"
    );
    app.register_agent(ADMIN, name).await.unwrap();
    assert!(changed(&mut watch), "register");
}

#[tokio::test]
async fn revoking_and_moving_an_agent_are_told() {
    let mut s = Setup::default();
    s.agents
        .expect_revoke_agent()
        .returning(|_, _| Box::pin(async { Ok(AgentChangeOutcome::Changed) }));
    s.gateway.expect_disconnect().return_const(None);
    no_open_sessions(&mut s);
    s.agents
        .expect_update_agent()
        .returning(|_, _, _| Box::pin(async { Ok(AgentChangeOutcome::Changed) }));
    s.agents.expect_find_agent().returning(|_| {
        Box::pin(async {
            Ok(Some(AgentRecord {
                id: AGENT,
                name: AgentName::parse("web-01").unwrap(),
                group: GroupName::parse("acme").unwrap(),
                revoked: false,
                key_digest: KeyDigest([1; 32]),
                created_at: now(),
                last_seen: None,
                facts: HostFacts::default(),
            }))
        })
    });
    let app = s.build();
    let mut watch = app.watch_agents(ADMIN).unwrap();
    app.revoke_agent(ADMIN, AGENT).await.unwrap();
    assert!(changed(&mut watch), "revoke");
    let change = AgentChange {
        group: Some(GroupName::parse("acme").unwrap()),
        ..AgentChange::default()
    };
    app.update_agent(ADMIN, AGENT, change).await.unwrap();
    assert!(changed(&mut watch), "move");
}
