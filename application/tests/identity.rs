//! Tokens, revocation and user management over mocked ports: what is asked of the store,
//! and what is refused before the store is touched.

mod common;

use std::time::Duration;

use common::*;
use rmm_application::*;
use rmm_domain::*;

fn live(user: UserId, role: Role, live: bool) -> TokenState {
    TokenState {
        user,
        role,
        expires_at: now().plus(Duration::from_secs(60)),
        live,
    }
}

#[tokio::test]
async fn a_live_token_acts_with_its_users_current_role() {
    let mut s = Setup::default();
    s.users
        .expect_token_state()
        .withf(|t| *t == TOKEN)
        .returning(|_| Box::pin(async { Ok(Some(live(TECH.id, Role::Auditor, true))) }));
    let actor = s.build().authenticate(TECH.id, TOKEN).await.unwrap();
    assert_eq!(
        actor,
        Actor {
            id: TECH.id,
            role: Role::Auditor
        }
    );
}

#[tokio::test]
async fn revoked_unknown_and_other_users_tokens_are_refused() {
    for state in [
        Some(live(TECH.id, Role::Tech, false)),
        None,
        Some(live(OTHER_TECH.id, Role::Tech, true)),
    ] {
        let mut s = Setup::default();
        s.users
            .expect_token_state()
            .returning(move |_| Box::pin(async move { Ok(state) }));
        let refused = s.build().authenticate(TECH.id, TOKEN).await;
        assert!(
            matches!(refused, Err(AuthenticateError::Revoked)),
            "{state:?}: {refused:?}"
        );
    }
}

#[tokio::test]
async fn a_login_token_is_stored_with_its_expiry() {
    let mut s = Setup::default();
    s.users
        .expect_insert_token()
        .withf(|t| {
            *t == TokenRecord {
                id: TOKEN,
                user: TECH.id,
                issued_at: now(),
                expires_at: now().plus(Duration::from_secs(600)),
            }
        })
        .times(1)
        .returning(|_| Box::pin(async { Ok(()) }));
    let token = s
        .build()
        .issue_token(TECH, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(token.id, TOKEN);
}

#[tokio::test]
async fn only_admins_and_the_console_manage_users() {
    for actor in [
        TECH,
        Actor {
            id: TECH.id,
            role: Role::Auditor,
        },
    ] {
        // No expectation on the store: it must not be touched.
        let app = Setup::default().build();
        assert!(matches!(
            app.list_users(Some(actor)).await,
            Err(UserAdminError::Forbidden)
        ));
        let update = UserUpdate {
            disabled: Some(true),
            ..UserUpdate::default()
        };
        assert!(matches!(
            app.update_user(Some(actor), OTHER_TECH.id, update).await,
            Err(UserAdminError::Forbidden)
        ));
        assert!(matches!(
            app.delete_user(Some(actor), OTHER_TECH.id).await,
            Err(UserAdminError::Forbidden)
        ));
    }
    let mut s = Setup::default();
    s.users
        .expect_list_users()
        .times(2)
        .returning(|| Box::pin(async { Ok(vec![]) }));
    let app = s.build();
    assert!(app.list_users(Some(ADMIN)).await.unwrap().is_empty());
    assert!(app.list_users(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn disabling_revokes_every_token_and_is_audited_in_the_admins_name() {
    let mut s = Setup::default();
    s.users
        .expect_update_user()
        .withf(|id, change, revoke, entry| {
            *id == TECH.id
                && change.disabled == Some(true)
                && change.password_hash.is_none()
                && *revoke == Some((RevokeReason::UserDisabled, None))
                && entry.action == AuditAction::UserUpdated
                && entry.user == Some(ADMIN.id)
                && entry.detail.as_deref() == Some(&*format!("user_id={} disabled=true", TECH.id))
        })
        .times(1)
        .returning(|_, _, _, _| Box::pin(async { Ok(UserChangeOutcome::Changed) }));
    s.users
        .expect_find_user_by_id()
        .returning(|_| Box::pin(async { Ok(None) }));
    let update = UserUpdate {
        disabled: Some(true),
        ..UserUpdate::default()
    };
    // The user read back after the change is gone (deleted meanwhile): not found.
    let result = s.build().update_user(Some(ADMIN), TECH.id, update).await;
    assert!(matches!(result, Err(UserAdminError::NotFound(id)) if id == TECH.id));
}

#[tokio::test]
async fn the_last_admin_refusal_and_weak_passwords_are_reported() {
    let mut s = Setup::default();
    s.users
        .expect_delete_user()
        .returning(|_, _, _| Box::pin(async { Ok(UserChangeOutcome::LastAdmin) }));
    let app = s.build();
    assert!(matches!(
        app.delete_user(None, ADMIN.id).await,
        Err(UserAdminError::LastAdmin)
    ));
    let update = UserUpdate {
        password: Some("short".into()),
        ..UserUpdate::default()
    };
    // Refused before hashing or storing anything.
    assert!(matches!(
        app.update_user(None, ADMIN.id, update).await,
        Err(UserAdminError::WeakPassword)
    ));
}

#[tokio::test]
async fn a_password_change_needs_the_current_password_and_keeps_the_token_used() {
    let record = UserRecord {
        id: TECH.id,
        username: Username::parse("tech").unwrap(),
        password_hash: "old-hash".into(),
        role: Role::Tech,
        created_at: now(),
        disabled: false,
        last_login_at: None,
    };
    let mut s = Setup::default();
    let found = record.clone();
    s.users.expect_find_user_by_id().returning(move |_| {
        let found = found.clone();
        Box::pin(async move { Ok(Some(found)) })
    });
    s.credentials
        .expect_verify_password()
        .returning(|given, hash| {
            let ok = given == "right-password" && hash == "old-hash";
            Box::pin(async move { Ok(ok) })
        });
    s.credentials
        .expect_hash_password()
        .returning(|_| Box::pin(async { Ok("new-hash".to_owned()) }));
    s.users
        .expect_update_user()
        .withf(|id, change, revoke, entry| {
            *id == TECH.id
                && change.password_hash.as_deref() == Some("new-hash")
                && *revoke == Some((RevokeReason::PasswordChanged, Some(TOKEN)))
                && entry.action == AuditAction::PasswordChanged
        })
        .times(1)
        .returning(|_, _, _, _| Box::pin(async { Ok(UserChangeOutcome::Changed) }));
    let app = s.build();
    let wrong = app
        .change_own_password(TECH, TOKEN, "wrong-password", "brand-new-password")
        .await;
    assert!(matches!(wrong, Err(UserAdminError::WrongPassword)));
    app.change_own_password(TECH, TOKEN, "right-password", "brand-new-password")
        .await
        .unwrap();
}

#[tokio::test]
async fn logout_revokes_the_presented_token_with_its_entry() {
    let mut s = Setup::default();
    s.users
        .expect_revoke_token()
        .withf(|id, reason, _, entry| {
            *id == TOKEN
                && *reason == RevokeReason::LoggedOut
                && entry.action == AuditAction::Logout
                && entry.user == Some(TECH.id)
        })
        .times(1)
        .returning(|_, _, _, _| Box::pin(async { Ok(true) }));
    // The session it opened closes as logged_out, and its agent is told.
    let opened = Session::open(SESSION, AGENT, TECH.id, now());
    s.sessions
        .expect_list_open_opened_with()
        .withf(|t| *t == TOKEN)
        .times(1)
        .returning(move |_| {
            let opened = vec![opened.clone()];
            Box::pin(async move { Ok(opened) })
        });
    s.sessions
        .expect_close()
        .withf(|id, reason, _, _| *id == SESSION && *reason == CloseReason::LoggedOut)
        .times(1)
        .returning(|id, _, _, _| {
            let closed = Session::open(id, AGENT, TECH.id, now());
            Box::pin(async move { Ok(Some(closed)) })
        });
    s.gateway
        .expect_close_tunnel()
        .withf(|agent, session| *agent == AGENT && *session == SESSION)
        .times(1)
        .return_const(());
    assert!(s.build().logout(TECH, TOKEN).await.unwrap());
}

#[tokio::test]
async fn sessions_of_disabled_or_deleted_users_are_closed_as_user_disabled() {
    let mine = Session::open(SESSION, AGENT, TECH.id, now());
    let theirs = Session::open(
        SessionId::from_uuid(uuid::Uuid::from_u128(0x6)),
        AgentId::from_uuid(uuid::Uuid::from_u128(0xB)),
        OTHER_TECH.id,
        now(),
    );
    let mut s = Setup::default();
    s.sessions
        .expect_list_open_logged_out()
        .times(1)
        .returning(|| Box::pin(async { Ok(vec![]) }));
    let open = vec![mine.clone(), theirs.clone()];
    s.sessions.expect_list_open().returning(move || {
        let open = open.clone();
        Box::pin(async move { Ok(open) })
    });
    // TECH is disabled; OTHER_TECH was deleted (not found).
    s.users.expect_find_user_by_id().returning(|id| {
        let user = (id == TECH.id).then(|| UserRecord {
            id,
            username: Username::parse("tech").unwrap(),
            password_hash: "h".into(),
            role: Role::Tech,
            created_at: now(),
            disabled: true,
            last_login_at: None,
        });
        Box::pin(async move { Ok(user) })
    });
    s.sessions
        .expect_close()
        .withf(|_, reason, _, note| {
            *reason == CloseReason::UserDisabled && note.detail.as_deref() == Some("user_disabled")
        })
        .times(2)
        .returning(|id, _, _, _| {
            let closed = Session::open(id, AGENT, TECH.id, now());
            Box::pin(async move { Ok(Some(closed)) })
        });
    s.gateway.expect_close_tunnel().times(2).return_const(());
    assert_eq!(
        s.build().close_sessions_of_revoked_users().await.unwrap(),
        2
    );
}
