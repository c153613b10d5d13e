//! Users, roles and tokens: changes commit with their entry, the last enabled admin stays,
//! deleted users vanish from every lookup (their rows stay for what names them), and a token
//! is live only while unrevoked and its user enabled.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use rmm_application::{
    AuditAction, AuditEvent, RevokeReason, SessionRepository, TokenRecord, TokenState, UserChange,
    UserChangeOutcome, UserRepository,
};
use rmm_domain::{Role, TokenId, Username};
use uuid::Uuid;

use super::{Backend, created, entries, refused, t, user};

fn entry(action: AuditAction, at_micros: i64, detail: &str) -> AuditEvent {
    let mut e = AuditEvent::new(t(at_micros), action);
    e.detail = Some(detail.to_owned());
    e
}

fn token(user: &rmm_application::UserRecord, issued: i64) -> TokenRecord {
    TokenRecord {
        id: TokenId::from_uuid(Uuid::new_v4()),
        user: user.id,
        issued_at: t(issued),
        expires_at: t(issued).plus(Duration::from_secs(3600)),
    }
}

fn disable() -> UserChange {
    UserChange {
        disabled: Some(true),
        ..UserChange::default()
    }
}

pub(crate) async fn users_are_listed_found_by_id_and_changed_with_their_entry(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let admin = user("admin", Role::Admin)?;
    let tech = user("tech", Role::Tech)?;
    let auditor = user("auditor", Role::Auditor)?;
    for u in [&tech, &admin, &auditor] {
        s.insert_user(u, &[], &created(u)).await?;
    }
    let names: Vec<_> = s
        .list_users()
        .await?
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(
        names,
        vec![
            Username::parse("admin")?,
            Username::parse("auditor")?,
            Username::parse("tech")?
        ]
    );
    assert_eq!(s.find_user_by_id(auditor.id).await?, Some(auditor.clone()));

    let change = UserChange {
        role: Some(Role::Auditor),
        disabled: Some(true),
        password_hash: Some("new-hash".into()),
        groups: None,
    };
    let note = entry(AuditAction::UserUpdated, 5, "role=auditor");
    assert_eq!(
        s.update_user(tech.id, &change, None, &note).await?,
        UserChangeOutcome::Changed
    );
    let changed = s.find_user_by_id(tech.id).await?.context("tech is gone")?;
    assert_eq!((changed.role, changed.disabled), (Role::Auditor, true));
    assert_eq!(changed.password_hash, "new-hash");
    assert_eq!(entries(s).await?, vec![note]);

    // An empty change changes nothing but is still recorded; unknown ids are not found.
    let noop = entry(AuditAction::UserUpdated, 6, "nothing");
    s.update_user(tech.id, &UserChange::default(), None, &noop)
        .await?;
    assert_eq!(s.find_user_by_id(tech.id).await?, Some(changed));
    let stranger = user("stranger", Role::Tech)?;
    assert_eq!(
        s.update_user(stranger.id, &disable(), None, &noop).await?,
        UserChangeOutcome::NotFound
    );
    assert_eq!(
        s.delete_user(stranger.id, t(7), &noop).await?,
        UserChangeOutcome::NotFound
    );
    Ok(())
}

pub(crate) async fn the_last_enabled_admin_cannot_be_disabled_demoted_or_deleted(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let first = user("first", Role::Admin)?;
    let second = user("second", Role::Admin)?;
    s.insert_user(&first, &[], &created(&first)).await?;
    let note = entry(AuditAction::UserUpdated, 1, "x");
    let demote = UserChange {
        role: Some(Role::Tech),
        ..UserChange::default()
    };
    for change in [&disable(), &demote] {
        assert_eq!(
            s.update_user(first.id, change, None, &note).await?,
            UserChangeOutcome::LastAdmin
        );
    }
    assert_eq!(
        s.delete_user(first.id, t(1), &note).await?,
        UserChangeOutcome::LastAdmin
    );
    // Keeping admin status (a password change, re-enabling) is fine.
    let password = UserChange {
        password_hash: Some("h".into()),
        ..UserChange::default()
    };
    assert_eq!(
        s.update_user(first.id, &password, None, &note).await?,
        UserChangeOutcome::Changed
    );
    ensure!(
        entries(s).await?.len() == 1,
        "refused changes wrote entries"
    );

    // With a second enabled admin, one may go; then the other is the last again.
    s.insert_user(&second, &[], &created(&second)).await?;
    assert_eq!(
        s.update_user(first.id, &disable(), None, &note).await?,
        UserChangeOutcome::Changed
    );
    assert_eq!(
        s.delete_user(second.id, t(2), &note).await?,
        UserChangeOutcome::LastAdmin
    );
    let enable = UserChange {
        disabled: Some(false),
        ..UserChange::default()
    };
    s.update_user(first.id, &enable, None, &note).await?;
    assert_eq!(
        s.delete_user(second.id, t(3), &note).await?,
        UserChangeOutcome::Changed
    );
    Ok(())
}

pub(crate) async fn a_deleted_user_is_gone_from_lookups_and_frees_the_username(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let admin = user("admin", Role::Admin)?;
    let tech = user("tech", Role::Tech)?;
    s.insert_user(&admin, &[], &created(&admin)).await?;
    s.insert_user(&tech, &[], &created(&tech)).await?;
    let live = token(&tech, 0);
    s.insert_token(&live).await?;

    let note = entry(AuditAction::UserDeleted, 1, "tech");
    assert_eq!(
        s.delete_user(tech.id, t(1), &note).await?,
        UserChangeOutcome::Changed
    );
    assert_eq!(s.find_user(&tech.username).await?, None);
    assert_eq!(s.find_user_by_id(tech.id).await?, None);
    assert_eq!(s.count_users().await?, 1);
    assert_eq!(s.list_users().await?, vec![admin]);
    let state = s
        .token_state(live.id)
        .await?
        .context("the token row stays")?;
    assert!(!state.live, "a deleted user's token is live");
    assert_eq!(entries(s).await?, vec![note]);

    // The name is free again, for a different user.
    let again = user("tech", Role::Auditor)?;
    s.insert_user(&again, &[], &created(&again)).await?;
    assert_eq!(
        s.find_user(&again.username).await?.map(|u| u.id),
        Some(again.id)
    );
    Ok(())
}

pub(crate) async fn tokens_are_live_until_revoked_or_their_user_disabled(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let admin = user("admin", Role::Admin)?;
    let tech = user("tech", Role::Tech)?;
    s.insert_user(&admin, &[], &created(&admin)).await?;
    s.insert_user(&tech, &[], &created(&tech)).await?;
    let first = token(&tech, 10);
    let second = token(&tech, 20);
    s.insert_token(&first).await?;
    s.insert_token(&second).await?;
    assert_eq!(
        s.find_user_by_id(tech.id)
            .await?
            .and_then(|u| u.last_login_at),
        Some(t(20)),
        "a token's issue is its user's last login"
    );
    assert_eq!(
        s.token_state(first.id).await?,
        Some(TokenState {
            user: tech.id,
            role: Role::Tech,
            expires_at: first.expires_at,
            live: true,
        })
    );
    assert_eq!(
        s.token_state(TokenId::from_uuid(Uuid::new_v4())).await?,
        None
    );

    let logout = entry(AuditAction::Logout, 30, "first");
    assert!(
        s.revoke_token(first.id, RevokeReason::LoggedOut, t(30), &logout)
            .await?
    );
    assert!(
        !s.revoke_token(first.id, RevokeReason::LoggedOut, t(31), &logout)
            .await?
    );
    assert!(!s.token_state(first.id).await?.context("first")?.live);
    assert!(s.token_state(second.id).await?.context("second")?.live);

    // The role a token carries is the user's role now.
    let promote = UserChange {
        role: Some(Role::Admin),
        ..UserChange::default()
    };
    let note = entry(AuditAction::UserUpdated, 40, "promote");
    s.update_user(tech.id, &promote, None, &note).await?;
    assert_eq!(
        s.token_state(second.id).await?.map(|st| st.role),
        Some(Role::Admin)
    );

    // Disabling revokes; enabling again does not bring revoked tokens back.
    let revoke = Some((RevokeReason::UserDisabled, None));
    s.update_user(tech.id, &disable(), revoke, &note).await?;
    assert!(!s.token_state(second.id).await?.context("second")?.live);
    let enable = UserChange {
        disabled: Some(false),
        ..UserChange::default()
    };
    s.update_user(tech.id, &enable, None, &note).await?;
    assert!(!s.token_state(second.id).await?.context("second")?.live);
    assert_eq!(
        entries(s).await?,
        vec![logout, note.clone(), note.clone(), note]
    );
    Ok(())
}

pub(crate) async fn a_password_change_revokes_every_token_but_the_kept_one(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let tech = user("tech", Role::Tech)?;
    let other = user("other", Role::Tech)?;
    s.insert_user(&tech, &[], &created(&tech)).await?;
    s.insert_user(&other, &[], &created(&other)).await?;
    let (kept, dropped, others) = (token(&tech, 1), token(&tech, 2), token(&other, 3));
    for tok in [&kept, &dropped, &others] {
        s.insert_token(tok).await?;
    }
    let change = UserChange {
        password_hash: Some("new".into()),
        ..UserChange::default()
    };
    let note = entry(AuditAction::PasswordChanged, 4, "tech");
    let revoke = Some((RevokeReason::PasswordChanged, Some(kept.id)));
    s.update_user(tech.id, &change, revoke, &note).await?;
    let live = |id| async move {
        s.token_state(id)
            .await
            .map(|st| st.is_some_and(|st| st.live))
    };
    assert!(live(kept.id).await?);
    assert!(!live(dropped.id).await?);
    assert!(live(others.id).await?, "another user's token was revoked");
    Ok(())
}

pub(crate) async fn expired_tokens_are_pruned(b: impl Backend) -> anyhow::Result<()> {
    let s = b.store();
    let tech = user("tech", Role::Tech)?;
    s.insert_user(&tech, &[], &created(&tech)).await?;
    let old = token(&tech, 0);
    let new = token(&tech, 7_200_000_000);
    s.insert_token(&old).await?;
    s.insert_token(&new).await?;
    assert_eq!(
        s.prune_tokens(old.expires_at.plus(Duration::from_secs(1)))
            .await?,
        1
    );
    assert_eq!(s.token_state(old.id).await?, None);
    assert!(s.token_state(new.id).await?.is_some());
    Ok(())
}

pub(crate) async fn user_changes_commit_with_their_entry_or_not_at_all(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let admin = user("admin", Role::Admin)?;
    let tech = user("tech", Role::Tech)?;
    s.insert_user(&admin, &[], &created(&admin)).await?;
    s.insert_user(&tech, &[], &created(&tech)).await?;
    let live = token(&tech, 1);
    s.insert_token(&live).await?;
    let tech = s.find_user_by_id(tech.id).await?.context("tech")?;
    let note = entry(AuditAction::UserUpdated, 2, "x");
    let revoke = Some((RevokeReason::UserDisabled, None));

    let newcomer = user("newcomer", Role::Tech)?;
    refused(&b, s.insert_user(&newcomer, &[], &created(&newcomer))).await?;
    assert_eq!(s.find_user(&newcomer.username).await?, None);

    refused(&b, s.update_user(tech.id, &disable(), revoke, &note)).await?;
    assert_eq!(s.find_user_by_id(tech.id).await?, Some(tech.clone()));
    assert!(s.token_state(live.id).await?.context("token")?.live);

    refused(&b, s.delete_user(tech.id, t(3), &note)).await?;
    assert_eq!(s.find_user_by_id(tech.id).await?, Some(tech.clone()));

    refused(
        &b,
        s.revoke_token(live.id, RevokeReason::LoggedOut, t(4), &note),
    )
    .await?;
    assert!(s.token_state(live.id).await?.context("token")?.live);
    Ok(())
}

pub(crate) async fn sessions_opened_with_a_token_are_listed_while_open(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = super::world(s).await?;
    let token = TokenId::from_uuid(Uuid::new_v4());
    let with_token = super::new_session(&w.web, &w.alice, t(0));
    let without = super::new_session(&w.db, &w.alice, t(0));
    s.insert_pending(&with_token, Some(token)).await?;
    s.insert_pending(&without, None).await?;
    let listed: Vec<_> = s
        .list_open_opened_with(token)
        .await?
        .iter()
        .map(|x| x.id())
        .collect();
    assert_eq!(listed, vec![with_token.id()]);
    // Only a logged-out token's sessions are the sweep's.
    ensure!(
        s.list_open_logged_out().await?.is_empty(),
        "listed before the logout"
    );
    let tech = user("lou", Role::Tech)?;
    s.insert_user(&tech, &[], &created(&tech)).await?;
    let record = TokenRecord {
        id: token,
        user: tech.id,
        issued_at: t(0),
        expires_at: t(0).plus(Duration::from_secs(60)),
    };
    s.insert_token(&record).await?;
    let logout = entry(AuditAction::Logout, 1, "lou");
    s.revoke_token(token, RevokeReason::LoggedOut, t(1), &logout)
        .await?;
    let swept: Vec<_> = s
        .list_open_logged_out()
        .await?
        .iter()
        .map(|x| x.id())
        .collect();
    assert_eq!(swept, vec![with_token.id()]);
    let note = rmm_application::AuditNote::close(rmm_domain::CloseReason::LoggedOut);
    s.close(
        with_token.id(),
        rmm_domain::CloseReason::LoggedOut,
        t(1),
        &note,
    )
    .await?;
    ensure!(
        s.list_open_opened_with(token).await?.is_empty(),
        "a closed session is listed"
    );
    Ok(())
}

pub(crate) async fn grants_commit_with_the_user_change_or_not_at_all(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let default = rmm_domain::GroupName::default_group();
    let nowhere = rmm_domain::GroupName::parse("nowhere")?;
    let tech = user("tech", Role::Tech)?;
    // An unknown group refuses the whole creation, entry included.
    assert_eq!(
        s.insert_user(&tech, std::slice::from_ref(&nowhere), &created(&tech))
            .await?,
        UserChangeOutcome::UnknownGroup(nowhere.clone())
    );
    assert_eq!(s.find_user(&tech.username).await?, None);
    assert_eq!(
        s.insert_user(&tech, std::slice::from_ref(&default), &created(&tech))
            .await?,
        UserChangeOutcome::Changed
    );
    let id = tech.id;
    assert_eq!(
        rmm_application::GroupRepository::user_groups(s, id).await?,
        vec![default.clone()]
    );
    let change = UserChange {
        role: Some(Role::Auditor),
        groups: Some(vec![nowhere.clone()]),
        ..UserChange::default()
    };
    let note = entry(AuditAction::UserUpdated, 1, "x");
    assert_eq!(
        s.update_user(tech.id, &change, None, &note).await?,
        UserChangeOutcome::UnknownGroup(nowhere)
    );
    let unchanged = s.find_user_by_id(tech.id).await?.context("tech")?;
    assert_eq!(
        unchanged.role,
        Role::Tech,
        "the role changed with an unknown group"
    );
    assert_eq!(
        rmm_application::GroupRepository::user_groups(s, id).await?,
        vec![default]
    );
    ensure!(
        entries(s).await?.is_empty(),
        "a refused change wrote an entry"
    );
    Ok(())
}
