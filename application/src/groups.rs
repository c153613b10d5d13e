//! Groups (customers, sites): admins create and delete them and grant them to users;
//! technicians see and use only the agents of their groups (admins and auditors see all).

use std::collections::BTreeMap;

use rmm_domain::{Actor, GroupName, Role, UserId};

use crate::access::scoped;
use crate::agents::{AgentView, ListAgentsError};
use crate::app::{App, Ports};
use crate::ports::{
    AuditAction, AuditEvent, Clock, GroupDeleteOutcome, GroupRecord, GroupRepository, StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("only admins manage groups")]
    Forbidden,
    #[error("a group named {0} exists already")]
    Exists(GroupName),
    #[error("group {0} not found")]
    NotFound(GroupName),
    #[error("group {0} still has agents: move or delete them first")]
    NotEmpty(GroupName),
    #[error("the database is unavailable")]
    Store(#[source] StoreError),
}

impl<P: Ports> App<P> {
    /// Every group (admins, auditors) or the caller's own (technicians), with agent counts.
    ///
    /// # Errors
    /// [`GroupError::Store`].
    pub async fn list_groups(&self, actor: Actor) -> Result<Vec<GroupRecord>, GroupError> {
        let all = self.groups.list_groups().await.map_err(GroupError::Store)?;
        if !scoped(actor) {
            return Ok(all);
        }
        let mine = self
            .groups
            .user_groups(actor.id)
            .await
            .map_err(GroupError::Store)?;
        Ok(all.into_iter().filter(|g| mine.contains(&g.name)).collect())
    }

    /// Creates a group, audited `group_created`.
    ///
    /// # Errors
    /// [`GroupError::Forbidden`] for non-admins, [`GroupError::Exists`].
    pub async fn create_group(
        &self,
        actor: Actor,
        name: GroupName,
    ) -> Result<GroupRecord, GroupError> {
        if actor.role != Role::Admin {
            return Err(GroupError::Forbidden);
        }
        let now = self.clock.now();
        let group = GroupRecord {
            id: uuid::Uuid::new_v4().hyphenated().to_string(),
            name: name.clone(),
            created_at: now,
            agents: 0,
        };
        let mut entry = AuditEvent::new(now, AuditAction::GroupCreated);
        entry.user = Some(actor.id);
        entry.detail = Some(format!("group_id={} name={name}", group.id));
        match self.groups.insert_group(&group, &entry).await {
            Ok(()) => {
                tracing::info!(group = %name, by = %actor.id, "group created");
                Ok(group)
            }
            Err(StoreError::Conflict) => Err(GroupError::Exists(name)),
            Err(e) => Err(GroupError::Store(e)),
        }
    }

    /// Deletes a group without agents (and every user's grant of it), audited
    /// `group_deleted`.
    ///
    /// # Errors
    /// [`GroupError::Forbidden`], [`GroupError::NotFound`], [`GroupError::NotEmpty`].
    pub async fn delete_group(&self, actor: Actor, name: GroupName) -> Result<(), GroupError> {
        if actor.role != Role::Admin {
            return Err(GroupError::Forbidden);
        }
        let mut entry = AuditEvent::new(self.clock.now(), AuditAction::GroupDeleted);
        entry.user = Some(actor.id);
        entry.detail = Some(format!("name={name}"));
        let outcome = self
            .groups
            .delete_group(&name, &entry)
            .await
            .map_err(GroupError::Store)?;
        match outcome {
            GroupDeleteOutcome::Deleted => {
                tracing::info!(group = %name, by = %actor.id, "group deleted");
                Ok(())
            }
            GroupDeleteOutcome::NotFound => Err(GroupError::NotFound(name)),
            GroupDeleteOutcome::NotEmpty => Err(GroupError::NotEmpty(name)),
        }
    }

    /// The groups of every user, for listing users.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn groups_of_users(&self) -> Result<BTreeMap<UserId, Vec<GroupName>>, StoreError> {
        let mut map: BTreeMap<UserId, Vec<GroupName>> = BTreeMap::new();
        for (user, group) in self.groups.all_user_groups().await? {
            map.entry(user).or_default().push(group);
        }
        Ok(map)
    }

    /// The groups of one user.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn groups_of_user(&self, user: UserId) -> Result<Vec<GroupName>, StoreError> {
        self.groups.user_groups(user).await
    }

    /// The agents `actor` may see: all for admins and auditors, their groups' for
    /// technicians.
    ///
    /// # Errors
    /// [`ListAgentsError::Store`].
    pub async fn list_agents_for(&self, actor: Actor) -> Result<Vec<AgentView>, ListAgentsError> {
        let all = self.list_agents().await?;
        if !scoped(actor) {
            return Ok(all);
        }
        let mine = self
            .groups
            .user_groups(actor.id)
            .await
            .map_err(ListAgentsError::Store)?;
        Ok(all
            .into_iter()
            .filter(|a| mine.contains(&a.record.group))
            .collect())
    }

    /// The first of `groups` that does not exist, if any.
    pub(crate) async fn unknown_group(
        &self,
        groups: &[GroupName],
    ) -> Result<Option<GroupName>, StoreError> {
        let known = self.groups.list_groups().await?;
        Ok(groups
            .iter()
            .find(|g| !known.iter().any(|k| &k.name == *g))
            .cloned())
    }
}

/// Group names for an audit detail: `a,b` (empty for none).
pub(crate) fn joined(groups: &[GroupName]) -> String {
    groups
        .iter()
        .map(GroupName::as_str)
        .collect::<Vec<_>>()
        .join(",")
}
