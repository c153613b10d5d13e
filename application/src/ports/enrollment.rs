//! Enrollment tokens: what lets a machine register itself as an agent of a group.

use std::future::Future;

use rmm_domain::{AgentId, EnrollmentId, GroupName, Timestamp, UserId};

use super::{AgentRecord, AuditEvent, KeyDigest, StoreError};

/// An enrollment token as stored and listed (never the token: only its digest is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentRecord {
    pub id: EnrollmentId,
    pub group: GroupName,
    /// Agents enrolled with it so far.
    pub uses: u32,
    pub uses_allowed: u32,
    pub expires_at: Timestamp,
    pub revoked: bool,
    pub created_at: Timestamp,
    pub created_by: Option<UserId>,
}

/// A token to store: its record (uses 0, not revoked) and the digest of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEnrollment {
    pub record: EnrollmentRecord,
    pub digest: KeyDigest,
}

/// What became of an enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollOutcome {
    /// The agent was stored in the token's group (its record as stored), and the use counted.
    Enrolled {
        agent: Box<AgentRecord>,
        enrollment: EnrollmentId,
    },
    /// No token has this digest.
    Invalid,
    Expired,
    UsedUp,
    Revoked,
    /// An agent with the name exists; the use is not counted.
    NameTaken,
}

#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait EnrollmentRepository: Send + Sync + 'static {
    /// Stores a new token in its group (by name) with `entry`, in one transaction; false
    /// (nothing stored) when the group does not exist.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn insert_enrollment(
        &self,
        enrollment: &NewEnrollment,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Every token, newest first.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn list_enrollments(
        &self,
    ) -> impl Future<Output = Result<Vec<EnrollmentRecord>, StoreError>> + Send;

    /// Revokes a token at `at` with `entry`; false when there is no such token (a revoked
    /// one stays revoked at its first time, and the entry is written again).
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn revoke_enrollment(
        &self,
        id: EnrollmentId,
        at: Timestamp,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// In one transaction: finds the token of `digest`, refuses it when revoked, expired at
    /// `agent.created_at` or used up, stores `agent` in the token's group (`agent.group` is
    /// ignored), counts the use, and writes `entry` with the enrollment id in its detail and
    /// the agent's id. Two racing for the last use: one wins, the other is `UsedUp`.
    ///
    /// # Errors
    /// [`StoreError::Backend`]: then nothing changed.
    fn enroll(
        &self,
        digest: KeyDigest,
        agent: &AgentRecord,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<EnrollOutcome, StoreError>> + Send;
}

/// The detail of an `agent_enrolled` entry (the store fills it in).
#[must_use]
pub fn enrolled_detail(enrollment: EnrollmentId, agent: AgentId, group: &GroupName) -> String {
    format!("enrollment_id={enrollment} agent_id={agent} group={group}")
}
