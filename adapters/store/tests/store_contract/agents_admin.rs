//! Admins' changes to agents: revoking (once, the row stays), a new key digest (not for a
//! revoked agent), renaming (names stay unique) and moving by group name; each commits with
//! its audit entry or not at all.

use anyhow::{Context as _, ensure};
use rmm_application::{
    AgentChange, AgentChangeOutcome, AgentRepository, AuditAction, AuditEvent, KeyDigest,
    StoreError,
};
use rmm_domain::{AgentId, AgentName, GroupName};
use uuid::Uuid;

use super::{Backend, agent, entries, refused, t};

fn entry(action: AuditAction, agent: AgentId, at_micros: i64) -> AuditEvent {
    let mut e = AuditEvent::new(t(at_micros), action);
    e.agent = Some(agent);
    e
}

fn unknown() -> AgentId {
    AgentId::from_uuid(Uuid::new_v4())
}

pub(crate) async fn revoking_an_agent_is_audited_once_and_keeps_it_listed(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let web = agent("web-01", 1)?;
    s.insert_agent(&web).await?;
    let note = entry(AuditAction::AgentRevoked, web.id, 1);
    assert_eq!(
        s.revoke_agent(web.id, &note).await?,
        AgentChangeOutcome::Changed
    );
    assert_eq!(
        s.revoke_agent(web.id, &note).await?,
        AgentChangeOutcome::Revoked
    );
    assert_eq!(
        s.revoke_agent(unknown(), &note).await?,
        AgentChangeOutcome::NotFound
    );
    let found = s.find_agent(web.id).await?.context("revoked agent")?;
    ensure!(found.revoked, "not revoked: {found:?}");
    // Found by its key still (the connect use case refuses it), and listed.
    let by_key = s
        .find_agent_by_key(web.key_digest)
        .await?
        .context("by key")?;
    ensure!(by_key.revoked);
    let listed = s.list_agents().await?;
    assert_eq!(listed.len(), 1);
    ensure!(listed[0].revoked);
    let actions: Vec<_> = entries(s).await?.into_iter().map(|e| e.action).collect();
    assert_eq!(actions, vec![AuditAction::AgentRevoked]);
    assert_eq!(s.find_agent(unknown()).await?, None);
    Ok(())
}

pub(crate) async fn a_new_key_replaces_the_old_digest_except_for_a_revoked_agent(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let web = agent("web-01", 1)?;
    let db = agent("db-01", 2)?;
    s.insert_agent(&web).await?;
    s.insert_agent(&db).await?;
    let note = entry(AuditAction::AgentKeyRotated, web.id, 1);
    assert_eq!(
        s.set_agent_key(web.id, KeyDigest([7; 32]), &note).await?,
        AgentChangeOutcome::Changed
    );
    assert_eq!(s.find_agent_by_key(KeyDigest([1; 32])).await?, None);
    let found = s
        .find_agent_by_key(KeyDigest([7; 32]))
        .await?
        .context("new key")?;
    assert_eq!(found.id, web.id);
    assert_eq!(
        s.set_agent_key(unknown(), KeyDigest([8; 32]), &note)
            .await?,
        AgentChangeOutcome::NotFound
    );
    // Keys stay unique.
    assert!(matches!(
        s.set_agent_key(db.id, KeyDigest([7; 32]), &note).await,
        Err(StoreError::Conflict)
    ));
    s.revoke_agent(db.id, &entry(AuditAction::AgentRevoked, db.id, 2))
        .await?;
    assert_eq!(
        s.set_agent_key(db.id, KeyDigest([9; 32]), &note).await?,
        AgentChangeOutcome::Revoked
    );
    assert_eq!(s.find_agent_by_key(KeyDigest([9; 32])).await?, None);
    let actions: Vec<_> = entries(s).await?.into_iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        vec![AuditAction::AgentKeyRotated, AuditAction::AgentRevoked]
    );
    Ok(())
}

pub(crate) async fn agents_are_renamed_and_moved_by_group_name(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let web = agent("web-01", 1)?;
    let db = agent("db-01", 2)?;
    s.insert_agent(&web).await?;
    s.insert_agent(&db).await?;
    b.add_group_for_agents("acme").await?;
    let note = entry(AuditAction::AgentUpdated, web.id, 1);
    let rename = AgentChange {
        name: Some(AgentName::parse("web-02")?),
        group: None,
    };
    assert_eq!(
        s.update_agent(web.id, &rename, &note).await?,
        AgentChangeOutcome::Changed
    );
    let moved = AgentChange {
        name: None,
        group: Some(GroupName::parse("acme")?),
    };
    assert_eq!(
        s.update_agent(web.id, &moved, &note).await?,
        AgentChangeOutcome::Changed
    );
    let found = s.find_agent(web.id).await?.context("web")?;
    assert_eq!(found.name.as_str(), "web-02");
    assert_eq!(found.group.as_str(), "acme");

    let taken = AgentChange {
        name: Some(AgentName::parse("db-01")?),
        group: None,
    };
    assert!(matches!(
        s.update_agent(web.id, &taken, &note).await,
        Err(StoreError::Conflict)
    ));
    let nowhere = AgentChange {
        name: Some(AgentName::parse("web-03")?),
        group: Some(GroupName::parse("nowhere")?),
    };
    assert_eq!(
        s.update_agent(web.id, &nowhere, &note).await?,
        AgentChangeOutcome::UnknownGroup
    );
    assert_eq!(
        s.update_agent(unknown(), &rename, &note).await?,
        AgentChangeOutcome::NotFound
    );
    // A revoked agent is kept as history, unchanged.
    s.revoke_agent(db.id, &entry(AuditAction::AgentRevoked, db.id, 2))
        .await?;
    let renamed = AgentChange {
        name: Some(AgentName::parse("db-02")?),
        group: Some(GroupName::parse("acme")?),
    };
    assert_eq!(
        s.update_agent(db.id, &renamed, &note).await?,
        AgentChangeOutcome::Revoked
    );
    let found = s.find_agent(db.id).await?.context("db")?;
    assert_eq!(found.name.as_str(), "db-01");
    assert_eq!(found.group.as_str(), "default");
    // Nothing of the refused changes stuck.
    let found = s.find_agent(web.id).await?.context("web")?;
    assert_eq!(found.name.as_str(), "web-02");
    assert_eq!(found.group.as_str(), "acme");
    let actions: Vec<_> = entries(s).await?.into_iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        vec![
            AuditAction::AgentUpdated,
            AuditAction::AgentUpdated,
            AuditAction::AgentRevoked
        ]
    );
    Ok(())
}

pub(crate) async fn agent_changes_commit_with_their_entry_or_not_at_all(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let web = agent("web-01", 1)?;
    s.insert_agent(&web).await?;
    let note = entry(AuditAction::AgentUpdated, web.id, 1);
    refused(&b, s.revoke_agent(web.id, &note)).await?;
    refused(&b, s.set_agent_key(web.id, KeyDigest([5; 32]), &note)).await?;
    let rename = AgentChange {
        name: Some(AgentName::parse("web-02")?),
        group: None,
    };
    refused(&b, s.update_agent(web.id, &rename, &note)).await?;
    assert_eq!(s.find_agent(web.id).await?, Some(web));
    Ok(())
}
