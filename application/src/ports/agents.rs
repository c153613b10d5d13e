//! Registered agents, their keys and what they report about their hosts.

use std::fmt;
use std::future::Future;

use rmm_domain::{AgentId, AgentName, GroupName, Timestamp};

use super::{AuditEvent, StoreError};

/// SHA-256 of an agent key. Only this is stored; the key itself is shown once.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    /// Compares without an early exit, so the time taken does not say how many leading bytes
    /// matched.
    #[must_use]
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyDigest(..)")
    }
}

/// A freshly generated agent key: the secret text (shown once) and its digest (stored).
#[derive(Clone)]
pub struct AgentKey {
    pub secret: String,
    pub digest: KeyDigest,
}

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentKey([redacted])")
    }
}

/// What an agent reports about its host in heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostFacts {
    pub version: Option<String>,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub uptime_secs: Option<u64>,
}

/// One agent's presence to record: who, when last seen, and the facts of its last heartbeat.
pub type Seen = (AgentId, Timestamp, Option<HostFacts>);

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub id: AgentId,
    pub name: AgentName,
    /// The customer or site it belongs to (`default` unless set).
    pub group: GroupName,
    /// A revoked agent's key is refused; it stays listed for its history.
    pub revoked: bool,
    pub key_digest: KeyDigest,
    pub created_at: Timestamp,
    pub last_seen: Option<Timestamp>,
    pub facts: HostFacts,
}

/// What an admin changes about an agent: its name, its group (by name), or both.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentChange {
    pub name: Option<AgentName>,
    pub group: Option<GroupName>,
}

/// How an audited change to an agent went. Nothing is written (the entry neither) unless
/// [`Self::Changed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentChangeOutcome {
    Changed,
    /// No agent has this id.
    NotFound,
    /// The agent is revoked (revoking again, or a new key for it): nothing to do.
    Revoked,
    /// The group named in the change does not exist.
    UnknownGroup,
}

#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait AgentRepository: Send + Sync + 'static {
    /// # Errors
    /// [`StoreError::Conflict`] when the name is taken.
    fn insert_agent(
        &self,
        agent: &AgentRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// # Errors
    /// [`StoreError::Backend`].
    fn find_agent_by_key(
        &self,
        digest: KeyDigest,
    ) -> impl Future<Output = Result<Option<AgentRecord>, StoreError>> + Send;

    /// All agents, by name.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn list_agents(&self) -> impl Future<Output = Result<Vec<AgentRecord>, StoreError>> + Send;

    /// Records when agents were last seen (and what they said about their host), in one
    /// batch: heartbeats are coalesced, never one write each.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn record_seen(&self, seen: &[Seen]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The agent with this id (revoked ones too).
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn find_agent(
        &self,
        id: AgentId,
    ) -> impl Future<Output = Result<Option<AgentRecord>, StoreError>> + Send;

    /// Revokes the agent at `entry.at`, with `entry`, in one transaction.
    /// [`AgentChangeOutcome::Revoked`] (nothing written) when it is revoked already.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn revoke_agent(
        &self,
        id: AgentId,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<AgentChangeOutcome, StoreError>> + Send;

    /// Replaces the agent's key digest, with `entry`, in one transaction; a revoked agent's
    /// is left alone ([`AgentChangeOutcome::Revoked`]).
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn set_agent_key(
        &self,
        id: AgentId,
        digest: KeyDigest,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<AgentChangeOutcome, StoreError>> + Send;

    /// Renames the agent and/or moves it to another group, with `entry`, in one transaction;
    /// a revoked agent is left alone ([`AgentChangeOutcome::Revoked`]: it is kept as history).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the new name is taken; [`StoreError::Backend`].
    fn update_agent(
        &self,
        id: AgentId,
        change: &AgentChange,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<AgentChangeOutcome, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_compare_equal_only_when_every_byte_matches() {
        let a = KeyDigest([7; 32]);
        let mut b = [7; 32];
        assert!(a.ct_eq(&KeyDigest(b)));
        b[31] = 8;
        assert!(!a.ct_eq(&KeyDigest(b)));
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let key = AgentKey {
            secret: "s3cret".into(),
            digest: KeyDigest([1; 32]),
        };
        assert!(!format!("{key:?}").contains("s3cret"));
    }
}
