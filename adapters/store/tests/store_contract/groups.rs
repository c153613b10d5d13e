//! Groups: created and deleted with their entry, deleted only when no agent is in them (and
//! then with every grant of them and every enrollment token into them), granted to users as a whole set, and scoping which agents
//! a user may see; the per-user count of open sessions.

use anyhow::ensure;
use rmm_application::{
    AgentRepository, AuditAction, AuditEvent, EnrollmentRecord, EnrollmentRepository,
    GroupDeleteOutcome, GroupRecord, GroupRepository, KeyDigest, NewEnrollment, SessionRepository,
    UserChange, UserChangeOutcome, UserRepository,
};
use rmm_domain::{AgentId, CloseReason, EnrollmentId, GroupName, Role, UserId};
use uuid::Uuid;

use super::{
    Backend, active_session, agent, created, entries, is_conflict, new_session, refused, t, user,
    world,
};

fn group(name: &str) -> anyhow::Result<GroupRecord> {
    Ok(GroupRecord {
        id: Uuid::new_v4().to_string(),
        name: GroupName::parse(name)?,
        created_at: t(5),
        agents: 0,
    })
}

/// Grants `user` exactly `groups`, the way a user update does.
async fn grant(
    s: &impl UserRepository,
    user: UserId,
    groups: &[GroupName],
) -> anyhow::Result<UserChangeOutcome> {
    let change = UserChange {
        groups: Some(groups.to_vec()),
        ..UserChange::default()
    };
    let note = entry(AuditAction::UserUpdated, "groups");
    Ok(s.update_user(user, &change, None, &note).await?)
}

fn entry(action: AuditAction, detail: &str) -> AuditEvent {
    let mut e = AuditEvent::new(t(10), action);
    e.detail = Some(detail.to_owned());
    e
}

fn names(groups: &[GroupRecord]) -> Vec<(String, u64)> {
    groups
        .iter()
        .map(|g| (g.name.as_str().to_owned(), g.agents))
        .collect()
}

pub(crate) async fn groups_are_listed_with_agent_counts_and_deleted_only_when_empty(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    assert_eq!(names(&s.list_groups().await?), vec![("default".into(), 0)]);
    let web = agent("web-01", 1)?;
    s.insert_agent(&web).await?;
    let acme = group("acme")?;
    s.insert_group(&acme, &entry(AuditAction::GroupCreated, "acme"))
        .await?;
    let again = s
        .insert_group(&group("acme")?, &entry(AuditAction::GroupCreated, "acme"))
        .await;
    ensure!(is_conflict(&again), "a second acme: {again:?}");
    b.move_agent(web.id, "acme").await?;
    let listed = s.list_groups().await?;
    assert_eq!(
        names(&listed),
        vec![("acme".into(), 1), ("default".into(), 0)]
    );
    assert_eq!(listed[0].id, acme.id);
    assert_eq!(listed[0].created_at, acme.created_at);

    let name = GroupName::parse("acme")?;
    let deleted = entry(AuditAction::GroupDeleted, "acme");
    assert_eq!(
        s.delete_group(&name, &deleted).await?,
        GroupDeleteOutcome::NotEmpty
    );
    let nobody = GroupName::parse("nobody")?;
    assert_eq!(
        s.delete_group(&nobody, &deleted).await?,
        GroupDeleteOutcome::NotFound
    );
    let tech = user("tech", Role::Tech)?;
    let granted = [name.clone(), GroupName::default_group()];
    s.insert_user(&tech, &granted, &created(&tech)).await?;
    b.move_agent(web.id, "default").await?;
    // An enrollment token into the group goes with it (it could only enroll into nothing).
    let token = NewEnrollment {
        record: EnrollmentRecord {
            id: EnrollmentId::from_uuid(Uuid::new_v4()),
            group: name.clone(),
            uses: 0,
            uses_allowed: 1,
            expires_at: t(100_000),
            revoked: false,
            created_at: t(6),
            created_by: None,
        },
        digest: KeyDigest([9; 32]),
    };
    ensure!(
        s.insert_enrollment(
            &token,
            &AuditEvent::new(t(6), AuditAction::EnrollmentCreated)
        )
        .await?,
        "the token's group exists"
    );
    assert_eq!(
        s.delete_group(&name, &deleted).await?,
        GroupDeleteOutcome::Deleted
    );
    ensure!(
        s.list_enrollments().await?.is_empty(),
        "the group's enrollment token was left behind"
    );
    assert_eq!(names(&s.list_groups().await?), vec![("default".into(), 1)]);
    assert_eq!(
        s.user_groups(tech.id).await?,
        vec![GroupName::default_group()]
    );
    let actions: Vec<_> = entries(s).await?.into_iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        vec![
            AuditAction::GroupCreated,
            AuditAction::EnrollmentCreated,
            AuditAction::GroupDeleted
        ]
    );
    Ok(())
}

pub(crate) async fn user_groups_are_replaced_whole_and_scope_the_agents_seen(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    for name in ["acme", "globex"] {
        s.insert_group(&group(name)?, &entry(AuditAction::GroupCreated, name))
            .await?;
    }
    let tech = user("tech", Role::Tech)?;
    let other = user("other", Role::Tech)?;
    for u in [&tech, &other] {
        s.insert_user(u, &[], &created(u)).await?;
    }
    let acme = GroupName::parse("acme")?;
    let globex = GroupName::parse("globex")?;
    assert_eq!(s.user_groups(tech.id).await?, vec![]);
    assert_eq!(
        grant(s, tech.id, &[globex.clone(), acme.clone(), acme.clone()]).await?,
        UserChangeOutcome::Changed
    );
    assert_eq!(
        s.user_groups(tech.id).await?,
        vec![acme.clone(), globex.clone()]
    );
    let unknown = GroupName::parse("initech")?;
    assert_eq!(
        grant(s, tech.id, &[acme.clone(), unknown.clone()]).await?,
        UserChangeOutcome::UnknownGroup(unknown)
    );
    assert_eq!(
        s.user_groups(tech.id).await?,
        vec![acme.clone(), globex.clone()],
        "a refused set changes nothing"
    );
    grant(s, tech.id, std::slice::from_ref(&acme)).await?;
    grant(s, other.id, &[GroupName::default_group()]).await?;
    let mut all = s.all_user_groups().await?;
    all.sort_by_key(|(u, _)| *u == other.id);
    assert_eq!(
        all,
        vec![(tech.id, acme), (other.id, GroupName::default_group())]
    );

    let web = agent("web-01", 1)?;
    s.insert_agent(&web).await?;
    ensure!(
        !s.may_see_agent(tech.id, web.id).await?,
        "default is not tech's"
    );
    ensure!(
        s.may_see_agent(other.id, web.id).await?,
        "default is other's"
    );
    b.move_agent(web.id, "acme").await?;
    ensure!(s.may_see_agent(tech.id, web.id).await?, "acme is tech's");
    ensure!(
        !s.may_see_agent(other.id, web.id).await?,
        "acme is not other's"
    );
    b.move_agent(web.id, "globex").await?;
    ensure!(
        !s.may_see_agent(tech.id, web.id).await?,
        "globex is nobody's"
    );
    let missing = AgentId::from_uuid(Uuid::new_v4());
    ensure!(!s.may_see_agent(tech.id, missing).await?, "no such agent");
    Ok(())
}

pub(crate) async fn open_sessions_of_counts_a_users_pending_and_active_sessions(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let w = world(s).await?;
    let third = agent("app-01", 3)?;
    s.insert_agent(&third).await?;
    assert_eq!(s.open_sessions_of(w.alice.id).await?, 0);
    let active = active_session(s, &w.web, &w.alice, t(0), t(1)).await?;
    s.insert_pending(&new_session(&w.db, &w.alice, t(2)), None)
        .await?;
    s.insert_pending(&new_session(&third, &w.bob, t(2)), None)
        .await?;
    assert_eq!(s.open_sessions_of(w.alice.id).await?, 2);
    assert_eq!(s.open_sessions_of(w.bob.id).await?, 1);
    let note = rmm_application::AuditNote::close(CloseReason::ClosedByOwner);
    s.close(active.id(), CloseReason::ClosedByOwner, t(3), &note)
        .await?;
    assert_eq!(s.open_sessions_of(w.alice.id).await?, 1);
    Ok(())
}

pub(crate) async fn group_changes_commit_with_their_entry_or_not_at_all(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let acme = group("acme")?;
    refused(
        &b,
        s.insert_group(&acme, &entry(AuditAction::GroupCreated, "acme")),
    )
    .await?;
    assert_eq!(names(&s.list_groups().await?), vec![("default".into(), 0)]);
    s.insert_group(&acme, &entry(AuditAction::GroupCreated, "acme"))
        .await?;
    refused(
        &b,
        s.delete_group(&acme.name, &entry(AuditAction::GroupDeleted, "acme")),
    )
    .await?;
    assert_eq!(
        names(&s.list_groups().await?),
        vec![("acme".into(), 0), ("default".into(), 0)]
    );
    Ok(())
}
