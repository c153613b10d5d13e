//! Admins' changes to agents: revoke, a new key, rename/move; a revoked key refused on
//! connect; a replaced connection audited.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod common;

use common::*;
use mockall::predicate::eq;
use rmm_application::*;
use rmm_domain::*;

fn record(revoked: bool, digest: KeyDigest) -> AgentRecord {
    AgentRecord {
        id: AGENT,
        name: AgentName::parse("web-01").unwrap(),
        group: GroupName::default_group(),
        revoked,
        key_digest: digest,
        created_at: now(),
        last_seen: None,
        facts: HostFacts::default(),
    }
}

#[tokio::test]
async fn a_revoked_agents_key_is_refused_like_an_unknown_one() {
    let digest = KeyDigest([9; 32]);
    let mut s = Setup::default();
    s.credentials.expect_digest_agent_key().return_const(digest);
    s.agents
        .expect_find_agent_by_key()
        .returning(move |_| Box::pin(async move { Ok(Some(record(true, digest))) }));
    assert!(matches!(
        s.build().authenticate_agent("k").await,
        Err(ConnectAgentError::UnknownKey)
    ));
}

#[tokio::test]
async fn only_admins_manage_agents_and_nothing_is_written_for_others() {
    let app = Setup::default().build();
    assert!(matches!(
        app.revoke_agent(TECH, AGENT).await,
        Err(AgentAdminError::Forbidden)
    ));
    assert!(matches!(
        app.rotate_agent_key(TECH, AGENT).await,
        Err(AgentAdminError::Forbidden)
    ));
    assert!(matches!(
        app.update_agent(TECH, AGENT, AgentChange::default()).await,
        Err(AgentAdminError::Forbidden)
    ));
}

#[tokio::test]
async fn revoking_ends_the_connection_and_closes_the_agents_open_sessions_as_agent_revoked() {
    let mut s = Setup::default();
    s.agents
        .expect_revoke_agent()
        .withf(|id, entry| {
            *id == AGENT
                && entry.action == AuditAction::AgentRevoked
                && entry.user == Some(ADMIN.id)
                && entry.agent == Some(AGENT)
        })
        .times(1)
        .returning(|_, _| Box::pin(async { Ok(AgentChangeOutcome::Changed) }));
    s.gateway
        .expect_disconnect()
        .with(eq(AGENT), eq(CLOSE_REVOKED))
        .times(1)
        .return_const(Some(AgentMode::Tunnel { session: SESSION }));
    let other_agent = AgentId::from_uuid(uuid::Uuid::from_u128(0xB));
    let open = vec![
        stored(TECH),
        Session::open(
            SessionId::from_uuid(uuid::Uuid::from_u128(0x6)),
            other_agent,
            TECH.id,
            now(),
        ),
    ];
    s.sessions.expect_list_open().returning(move || {
        let open = open.clone();
        Box::pin(async move { Ok(open) })
    });
    // Only the revoked agent's session, and as agent_revoked.
    s.sessions
        .expect_close()
        .withf(|id, reason, _, note| {
            *id == SESSION
                && *reason == CloseReason::AgentRevoked
                && note.detail.as_deref() == Some("agent_revoked")
        })
        .times(1)
        .returning(|_, _, _, _| {
            Box::pin(async { Ok(Some(closed(TECH, CloseReason::AgentRevoked))) })
        });
    s.build().revoke_agent(ADMIN, AGENT).await.unwrap();
}

#[tokio::test]
async fn revoking_an_unknown_agent_is_not_found_and_touches_no_connection() {
    let mut s = Setup::default();
    s.agents
        .expect_revoke_agent()
        .returning(|_, _| Box::pin(async { Ok(AgentChangeOutcome::NotFound) }));
    s.gateway.expect_disconnect().never();
    assert!(matches!(
        s.build().revoke_agent(ADMIN, AGENT).await,
        Err(AgentAdminError::NotFound(id)) if id == AGENT
    ));
}

#[tokio::test]
async fn a_new_key_is_stored_by_digest_audited_and_ends_the_old_keys_connection() {
    let mut s = Setup::default();
    let digest = KeyDigest([4; 32]);
    s.credentials
        .expect_new_agent_key()
        .returning(move || AgentKey {
            secret: "rmmk_new".into(),
            digest,
        });
    s.agents
        .expect_set_agent_key()
        .withf(move |id, d, entry| {
            *id == AGENT && *d == digest && entry.action == AuditAction::AgentKeyRotated
        })
        .times(1)
        .returning(|_, _, _| Box::pin(async { Ok(AgentChangeOutcome::Changed) }));
    s.gateway
        .expect_disconnect()
        .with(eq(AGENT), eq(CLOSE_KEY_ROTATED))
        .times(1)
        .return_const(Some(AgentMode::Tunnel { session: SESSION }));
    s.sessions
        .expect_close()
        .withf(|id, reason, _, _| *id == SESSION && *reason == CloseReason::AgentDisconnected)
        .times(1)
        .returning(|_, _, _, _| Box::pin(async { Ok(None) }));
    assert_eq!(
        s.build().rotate_agent_key(ADMIN, AGENT).await.unwrap(),
        "rmmk_new"
    );
}

#[tokio::test]
async fn a_revoked_agent_gets_no_new_key() {
    let mut s = Setup::default();
    s.credentials.expect_new_agent_key().returning(|| AgentKey {
        secret: "x".into(),
        digest: KeyDigest([4; 32]),
    });
    s.agents
        .expect_set_agent_key()
        .returning(|_, _, _| Box::pin(async { Ok(AgentChangeOutcome::Revoked) }));
    s.gateway.expect_disconnect().never();
    assert!(matches!(
        s.build().rotate_agent_key(ADMIN, AGENT).await,
        Err(AgentAdminError::Revoked(_))
    ));
}

#[tokio::test]
async fn rename_and_move_report_taken_names_and_unknown_groups() {
    let change = AgentChange {
        name: Some(AgentName::parse("db-01").unwrap()),
        group: Some(GroupName::parse("acme").unwrap()),
    };
    let mut s = Setup::default();
    s.agents
        .expect_update_agent()
        .returning(|_, _, _| Box::pin(async { Err(StoreError::Conflict) }));
    assert!(matches!(
        s.build().update_agent(ADMIN, AGENT, change.clone()).await,
        Err(AgentAdminError::NameTaken(name)) if name == "db-01"
    ));
    let mut s = Setup::default();
    s.agents
        .expect_update_agent()
        .returning(|_, _, _| Box::pin(async { Ok(AgentChangeOutcome::UnknownGroup) }));
    assert!(matches!(
        s.build().update_agent(ADMIN, AGENT, change.clone()).await,
        Err(AgentAdminError::UnknownGroup(group)) if group == "acme"
    ));
    let mut s = Setup::default();
    s.agents
        .expect_update_agent()
        .returning(|_, _, _| Box::pin(async { Ok(AgentChangeOutcome::Revoked) }));
    assert!(matches!(
        s.build().update_agent(ADMIN, AGENT, change.clone()).await,
        Err(AgentAdminError::Revoked(id)) if id == AGENT
    ));
    // Nothing to change: the agent as it is, nothing written (no update, no audit).
    let mut s = Setup::default();
    s.agents.expect_update_agent().never();
    s.agents
        .expect_find_agent()
        .returning(|_| Box::pin(async { Ok(None) }));
    assert!(matches!(
        s.build()
            .update_agent(ADMIN, AGENT, AgentChange::default())
            .await,
        Err(AgentAdminError::NotFound(id)) if id == AGENT
    ));
    let mut s = Setup::default();
    s.agents
        .expect_update_agent()
        .withf(|_, _, entry| {
            entry.action == AuditAction::AgentUpdated
                && entry.detail.as_deref() == Some("name=db-01 group=acme")
        })
        .returning(|_, _, _| Box::pin(async { Ok(AgentChangeOutcome::Changed) }));
    s.agents
        .expect_find_agent()
        .returning(|_| Box::pin(async { Ok(Some(record(false, KeyDigest([1; 32])))) }));
    assert_eq!(
        s.build()
            .update_agent(ADMIN, AGENT, change)
            .await
            .unwrap()
            .id,
        AGENT
    );
}

#[tokio::test]
async fn a_replaced_connection_is_audited_with_both_addresses() {
    let mut s = Setup::default();
    s.audit
        .expect_append()
        .withf(|entry| {
            entry.action == AuditAction::AgentReplaced
                && entry.agent == Some(AGENT)
                && entry.detail.as_deref() == Some("old 127.0.0.1, new 127.0.0.2")
        })
        .times(1)
        .returning(|_| Box::pin(async { Ok(()) }));
    s.build()
        .agent_replaced(AGENT, "127.0.0.1", "127.0.0.2")
        .await;
}

#[tokio::test]
async fn a_registered_connection_is_kept_only_while_its_key_is_the_agents_live_key() {
    let key = KeyDigest([7; 32]);
    for (stored, admitted) in [
        (Some(record(false, key)), true),
        // Revoked, or its key replaced, while the connection was being set up.
        (Some(record(true, key)), false),
        (Some(record(false, KeyDigest([8; 32]))), false),
        (None, false),
    ] {
        let mut s = Setup::default();
        let found = stored.clone();
        s.agents
            .expect_find_agent()
            .with(eq(AGENT))
            .times(1)
            .returning(move |_| {
                let found = found.clone();
                Box::pin(async move { Ok(found) })
            });
        assert_eq!(
            s.build().still_admitted(AGENT, key).await,
            admitted,
            "{stored:?}"
        );
    }
}
