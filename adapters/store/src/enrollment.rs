//! What both stores share about `enrollment_tokens`: the row decoder and the rule deciding
//! whether a token may enroll one more agent.

use rmm_application::{AgentRecord, EnrollOutcome, EnrollmentRecord, StoreError};
use rmm_domain::{EnrollmentId, GroupName, Timestamp, UserId};
use uuid::Uuid;

use crate::RowError;

/// The columns read of a token (`e`) and its group (`g`), in the order of [`EnrollmentRow`].
macro_rules! enrollment_select {
    () => {
        "e.enrollment_id, g.name as group_name, e.uses, e.uses_allowed, e.expires_at, \
         (e.revoked_at is not null) as revoked, e.created_at, e.created_by, e.group_id \
         from enrollment_tokens e join groups g on g.group_id = e.group_id"
    };
}
pub(crate) use enrollment_select;

/// An `enrollment_tokens` row with its columns decoded but not yet validated.
pub(crate) struct EnrollmentRow {
    pub enrollment_id: Uuid,
    pub group_name: String,
    pub uses: i64,
    pub uses_allowed: i64,
    pub expires_at: Timestamp,
    pub revoked: bool,
    pub created_at: Timestamp,
    pub created_by: Option<Uuid>,
}

impl TryFrom<EnrollmentRow> for EnrollmentRecord {
    type Error = StoreError;

    fn try_from(row: EnrollmentRow) -> Result<Self, Self::Error> {
        let key = row.enrollment_id;
        let count = |value: i64, column| {
            u32::try_from(value).map_err(|e| RowError::bad("enrollment_tokens", key, column, e))
        };
        Ok(Self {
            id: EnrollmentId::from_uuid(row.enrollment_id),
            group: GroupName::parse(&row.group_name)
                .map_err(|e| RowError::bad("groups", key, "name", e))?,
            uses: count(row.uses, "uses")?,
            uses_allowed: count(row.uses_allowed, "uses_allowed")?,
            expires_at: row.expires_at,
            revoked: row.revoked,
            created_at: row.created_at,
            created_by: row.created_by.map(UserId::from_uuid),
        })
    }
}

/// Why `token` may not enroll an agent at `now`, if it may not: revoked first, then expired,
/// then used up.
pub(crate) fn refusal(token: &EnrollmentRecord, now: Timestamp) -> Option<EnrollOutcome> {
    if token.revoked {
        Some(EnrollOutcome::Revoked)
    } else if token.expires_at <= now {
        Some(EnrollOutcome::Expired)
    } else if token.uses >= token.uses_allowed {
        Some(EnrollOutcome::UsedUp)
    } else {
        None
    }
}

/// The outcome of a successful enrollment: the agent as stored.
pub(crate) fn enrolled(agent: &AgentRecord, group: GroupName, id: EnrollmentId) -> EnrollOutcome {
    let mut agent = agent.clone();
    agent.group = group;
    EnrollOutcome::Enrolled {
        agent: Box::new(agent),
        enrollment: id,
    }
}
