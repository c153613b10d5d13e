//! Groups of agents (customers, sites) and the groups each user is granted.

use std::future::Future;

use rmm_domain::{AgentId, GroupName, Timestamp, UserId};

use super::{AuditEvent, StoreError};

/// A group as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// The group's id (a UUID), stable while it exists.
    pub id: String,
    pub name: GroupName,
    pub created_at: Timestamp,
    /// Agents in the group (revoked ones included: they still name it).
    pub agents: u64,
}

/// What became of a group delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupDeleteOutcome {
    Deleted,
    NotFound,
    /// Refused: agents are in it.
    NotEmpty,
}

#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait GroupRepository: Send + Sync + 'static {
    /// Every group with its agent count, by name.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn list_groups(&self) -> impl Future<Output = Result<Vec<GroupRecord>, StoreError>> + Send;

    /// Stores a new group (its `agents` ignored) with `entry` (`group_created`), in one
    /// transaction.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the name is taken.
    fn insert_group(
        &self,
        group: &GroupRecord,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes a group that has no agents, every user's grant of it and every enrollment
    /// token into it, with `entry` (`group_deleted`), in one transaction.
    ///
    /// # Errors
    /// [`StoreError::Backend`]: then nothing changed.
    fn delete_group(
        &self,
        name: &GroupName,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<GroupDeleteOutcome, StoreError>> + Send;

    /// The groups `user` is granted, by name.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn user_groups(
        &self,
        user: UserId,
    ) -> impl Future<Output = Result<Vec<GroupName>, StoreError>> + Send;

    /// Every grant, as (user, group), for listing users.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn all_user_groups(
        &self,
    ) -> impl Future<Output = Result<Vec<(UserId, GroupName)>, StoreError>> + Send;

    /// Whether `agent` exists and is in one of `user`'s groups.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn may_see_agent(
        &self,
        user: UserId,
        agent: AgentId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Pending or active tunnel sessions of `user` (the per-user cap).
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn open_sessions_of(
        &self,
        user: UserId,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
