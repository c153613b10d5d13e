//! Enrollment: admins issue tokens that let machines register themselves as agents of a
//! group; a machine presents one (no user token: the enrollment token is the credential)
//! and gets its own agent key. Failed enrollments are throttled per client address like
//! logins (see [`crate::throttle`]).

use std::net::IpAddr;
use std::time::Duration;

use rmm_domain::{Actor, AgentName, EnrollmentId, GroupName, Role, Timestamp};

use crate::app::{App, Ports};
use crate::ports::{
    AgentKey, AgentRecord, AuditAction, AuditEvent, Clock, Credentials, EnrollOutcome,
    EnrollmentRecord, EnrollmentRepository, HostFacts, IdGenerator, NewEnrollment, StoreError,
};

/// Uses a token may allow.
pub const MAX_ENROLLMENT_USES: u32 = 10_000;
/// The shortest life of a token.
pub const MIN_ENROLLMENT_TTL: Duration = Duration::from_secs(60);
/// The longest life of a token.
pub const MAX_ENROLLMENT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// A token's life when none is asked for.
pub const DEFAULT_ENROLLMENT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why an admin's enrollment operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnrollmentAdminError {
    #[error("only admins manage enrollment tokens")]
    Forbidden,
    /// Out-of-range uses or expiry, a bad group name (the message says which).
    #[error("{0}")]
    Invalid(String),
    #[error("group {0:?} does not exist")]
    UnknownGroup(String),
    #[error("enrollment token {0} not found")]
    NotFound(EnrollmentId),
    #[error("the database is unavailable")]
    Store(#[source] StoreError),
}

/// Why a machine's enrollment was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("unknown enrollment token")]
    Invalid,
    #[error("the enrollment token has expired")]
    Expired,
    #[error("the enrollment token is used up")]
    UsedUp,
    #[error("the enrollment token was revoked")]
    Revoked,
    #[error("an agent named {0:?} exists already")]
    NameTaken(String),
    #[error("too many failed enrollments; retry in {} s", retry_after.as_secs())]
    Throttled { retry_after: Duration },
    #[error("the database is unavailable")]
    Store(#[source] StoreError),
}

/// A new token: its secret is shown this once.
#[derive(Debug)]
pub struct CreatedEnrollment {
    pub id: EnrollmentId,
    pub token: AgentKey,
    pub expires_at: Timestamp,
}

/// An agent enrolled, and its key (shown this once).
#[derive(Debug)]
pub struct EnrolledAgent {
    pub record: AgentRecord,
    pub enrollment: EnrollmentId,
    pub key: AgentKey,
}

impl<P: Ports> App<P> {
    /// Creates a token for `group`, `uses` times (1 default), for `ttl` (24 h default).
    ///
    /// # Errors
    /// See [`EnrollmentAdminError`].
    pub async fn create_enrollment(
        &self,
        actor: Actor,
        group: &str,
        uses: Option<u32>,
        ttl: Option<Duration>,
    ) -> Result<CreatedEnrollment, EnrollmentAdminError> {
        admin(actor)?;
        let group =
            GroupName::parse(group).map_err(|e| EnrollmentAdminError::Invalid(e.to_string()))?;
        let uses = uses.unwrap_or(1);
        if !(1..=MAX_ENROLLMENT_USES).contains(&uses) {
            return Err(EnrollmentAdminError::Invalid(format!(
                "uses must be 1 to {MAX_ENROLLMENT_USES}, got {uses}"
            )));
        }
        let ttl = ttl.unwrap_or(DEFAULT_ENROLLMENT_TTL);
        if !(MIN_ENROLLMENT_TTL..=MAX_ENROLLMENT_TTL).contains(&ttl) {
            return Err(EnrollmentAdminError::Invalid(format!(
                "expires_in_secs must be {} to {}, got {}",
                MIN_ENROLLMENT_TTL.as_secs(),
                MAX_ENROLLMENT_TTL.as_secs(),
                ttl.as_secs()
            )));
        }
        let now = self.clock.now();
        let token = self.credentials.new_agent_key();
        let record = EnrollmentRecord {
            id: self.ids.enrollment_id(),
            group: group.clone(),
            uses: 0,
            uses_allowed: uses,
            expires_at: now.plus(ttl),
            revoked: false,
            created_at: now,
            created_by: Some(actor.id),
        };
        let mut entry = AuditEvent::new(now, AuditAction::EnrollmentCreated);
        entry.user = Some(actor.id);
        entry.detail = Some(format!(
            "enrollment_id={} group={group} uses_allowed={uses} expires_in_secs={}",
            record.id,
            ttl.as_secs()
        ));
        let (id, expires_at) = (record.id, record.expires_at);
        let stored = self
            .enrollment
            .insert_enrollment(
                &NewEnrollment {
                    record,
                    digest: token.digest,
                },
                &entry,
            )
            .await
            .map_err(EnrollmentAdminError::Store)?;
        if !stored {
            return Err(EnrollmentAdminError::UnknownGroup(
                group.as_str().to_owned(),
            ));
        }
        tracing::info!(enrollment_id = %id, group = group.as_str(), uses, by = %actor.id, "enrollment token created");
        Ok(CreatedEnrollment {
            id,
            token,
            expires_at,
        })
    }

    /// Every token, newest first (admins only).
    ///
    /// # Errors
    /// See [`EnrollmentAdminError`].
    pub async fn list_enrollments(
        &self,
        actor: Actor,
    ) -> Result<Vec<EnrollmentRecord>, EnrollmentAdminError> {
        admin(actor)?;
        self.enrollment
            .list_enrollments()
            .await
            .map_err(EnrollmentAdminError::Store)
    }

    /// Revokes a token (admins only): it enrolls no further machine.
    ///
    /// # Errors
    /// See [`EnrollmentAdminError`].
    pub async fn revoke_enrollment(
        &self,
        actor: Actor,
        id: EnrollmentId,
    ) -> Result<(), EnrollmentAdminError> {
        admin(actor)?;
        let now = self.clock.now();
        let mut entry = AuditEvent::new(now, AuditAction::EnrollmentRevoked);
        entry.user = Some(actor.id);
        entry.detail = Some(format!("enrollment_id={id}"));
        if self
            .enrollment
            .revoke_enrollment(id, now, &entry)
            .await
            .map_err(EnrollmentAdminError::Store)?
        {
            tracing::info!(enrollment_id = %id, by = %actor.id, "enrollment token revoked");
            Ok(())
        } else {
            Err(EnrollmentAdminError::NotFound(id))
        }
    }

    /// Enrolls a machine as the agent `name` with `token`, from `from` (when known):
    /// failures are throttled per address like logins.
    ///
    /// # Errors
    /// See [`EnrollError`].
    pub async fn enroll_agent(
        &self,
        token: &str,
        name: AgentName,
        from: Option<IpAddr>,
    ) -> Result<EnrolledAgent, EnrollError> {
        let attempt = self
            .enroll_throttle
            .begin(None, from, self.clock.now())
            .map_err(|retry_after| EnrollError::Throttled { retry_after })?;
        let outcome = self.try_enroll(token, name).await;
        if outcome.is_ok() {
            self.agent_events.changed();
        }
        match &outcome {
            Ok(_) | Err(EnrollError::NameTaken(_)) => self.enroll_throttle.succeeded(&attempt),
            Err(EnrollError::Store(_) | EnrollError::Throttled { .. }) => {
                self.enroll_throttle.abandoned(&attempt);
            }
            Err(_) => self.enroll_throttle.failed(&attempt, self.clock.now()),
        }
        outcome
    }

    async fn try_enroll(&self, token: &str, name: AgentName) -> Result<EnrolledAgent, EnrollError> {
        let digest = self.credentials.digest_agent_key(token);
        let key = self.credentials.new_agent_key();
        let now = self.clock.now();
        let agent = AgentRecord {
            id: self.ids.agent_id(),
            name: name.clone(),
            group: GroupName::default_group(),
            revoked: false,
            key_digest: key.digest,
            created_at: now,
            last_seen: None,
            facts: HostFacts::default(),
        };
        let mut entry = AuditEvent::new(now, AuditAction::AgentEnrolled);
        entry.agent = Some(agent.id);
        let outcome = self
            .enrollment
            .enroll(digest, &agent, &entry)
            .await
            .map_err(EnrollError::Store)?;
        match outcome {
            EnrollOutcome::Enrolled { agent, enrollment } => {
                tracing::info!(agent_id = %agent.id, name = agent.name.as_str(), group = agent.group.as_str(), enrollment_id = %enrollment, "agent enrolled");
                Ok(EnrolledAgent {
                    record: *agent,
                    enrollment,
                    key,
                })
            }
            EnrollOutcome::Invalid => Err(EnrollError::Invalid),
            EnrollOutcome::Expired => Err(EnrollError::Expired),
            EnrollOutcome::UsedUp => Err(EnrollError::UsedUp),
            EnrollOutcome::Revoked => Err(EnrollError::Revoked),
            EnrollOutcome::NameTaken => Err(EnrollError::NameTaken(name.as_str().to_owned())),
        }
    }
}

fn admin(actor: Actor) -> Result<(), EnrollmentAdminError> {
    if actor.role == Role::Admin {
        Ok(())
    } else {
        Err(EnrollmentAdminError::Forbidden)
    }
}
