//! Enrollment tokens: created only in existing groups with their entry, listed, revoked; an
//! enrollment counts the use and stores the agent in the token's group in one transaction,
//! refuses expired, used-up, revoked and unknown tokens, and two racing for the last use
//! cannot both win.

use anyhow::ensure;
use rmm_application::{
    AgentRepository, AuditAction, AuditEvent, EnrollOutcome, EnrollmentRecord,
    EnrollmentRepository, KeyDigest, NewEnrollment,
};
use rmm_domain::{EnrollmentId, GroupName, UserId};
use uuid::Uuid;

use super::{Backend, agent, entries, refused, t};

fn token(uses_allowed: u32, expires_at: i64, digest_byte: u8) -> anyhow::Result<NewEnrollment> {
    Ok(NewEnrollment {
        record: EnrollmentRecord {
            id: EnrollmentId::from_uuid(Uuid::new_v4()),
            group: GroupName::default_group(),
            uses: 0,
            uses_allowed,
            expires_at: t(expires_at),
            revoked: false,
            created_at: t(0),
            created_by: Some(UserId::from_uuid(Uuid::new_v4())),
        },
        digest: KeyDigest([digest_byte; 32]),
    })
}

fn entry(action: AuditAction) -> AuditEvent {
    AuditEvent::new(t(1), action)
}

/// An agent to enroll at `at`, its key digest `key_byte`s.
fn enrolling(name: &str, key_byte: u8, at: i64) -> anyhow::Result<rmm_application::AgentRecord> {
    let mut a = agent(name, key_byte)?;
    a.created_at = t(at);
    Ok(a)
}

async fn uses_of(s: &impl EnrollmentRepository, id: EnrollmentId) -> anyhow::Result<u32> {
    let listed = s.list_enrollments().await?;
    let found = listed.iter().find(|e| e.id == id);
    found
        .map(|e| e.uses)
        .ok_or_else(|| anyhow::anyhow!("token {id} not listed"))
}

pub(crate) async fn enrollment_tokens_are_created_in_existing_groups_listed_and_revoked(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let older = token(3, 10_000, 1)?;
    let mut newer = token(1, 20_000, 2)?;
    newer.record.created_at = t(5);
    ensure!(
        s.insert_enrollment(&older, &entry(AuditAction::EnrollmentCreated))
            .await?
    );
    ensure!(
        s.insert_enrollment(&newer, &entry(AuditAction::EnrollmentCreated))
            .await?
    );
    let mut elsewhere = token(1, 10_000, 3)?;
    elsewhere.record.group = GroupName::parse("nowhere")?;
    ensure!(
        !s.insert_enrollment(&elsewhere, &entry(AuditAction::EnrollmentCreated))
            .await?,
        "a token was stored in a group that does not exist"
    );
    assert_eq!(
        s.list_enrollments().await?,
        vec![newer.record.clone(), older.record.clone()]
    );
    ensure!(
        s.revoke_enrollment(
            older.record.id,
            t(7),
            &entry(AuditAction::EnrollmentRevoked)
        )
        .await?
    );
    let unknown = EnrollmentId::from_uuid(Uuid::new_v4());
    ensure!(
        !s.revoke_enrollment(unknown, t(7), &entry(AuditAction::EnrollmentRevoked))
            .await?
    );
    let revoked: Vec<bool> = s
        .list_enrollments()
        .await?
        .iter()
        .map(|e| e.revoked)
        .collect();
    assert_eq!(revoked, vec![false, true]);
    let actions: Vec<AuditAction> = entries(s).await?.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        vec![
            AuditAction::EnrollmentCreated,
            AuditAction::EnrollmentCreated,
            AuditAction::EnrollmentRevoked
        ]
    );
    Ok(())
}

pub(crate) async fn enrollment_counts_uses_and_refuses_expired_used_up_revoked_and_unknown_tokens(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let two = token(2, 10_000, 1)?;
    s.insert_enrollment(&two, &entry(AuditAction::EnrollmentCreated))
        .await?;
    let first = enrolling("box-1", 11, 100)?;
    let outcome = s
        .enroll(two.digest, &first, &entry(AuditAction::AgentEnrolled))
        .await?;
    assert_eq!(
        outcome,
        EnrollOutcome::Enrolled {
            agent: Box::new(first.clone()),
            enrollment: two.record.id
        }
    );
    assert_eq!(
        s.find_agent_by_key(first.key_digest).await?,
        Some(first.clone())
    );
    // A taken name: refused, the use not counted.
    let taken = enrolling("box-1", 12, 100)?;
    assert_eq!(
        s.enroll(two.digest, &taken, &entry(AuditAction::AgentEnrolled))
            .await?,
        EnrollOutcome::NameTaken
    );
    assert_eq!(uses_of(s, two.record.id).await?, 1);
    let second = enrolling("box-2", 13, 100)?;
    ensure!(matches!(
        s.enroll(two.digest, &second, &entry(AuditAction::AgentEnrolled))
            .await?,
        EnrollOutcome::Enrolled { .. }
    ));
    let third = enrolling("box-3", 14, 100)?;
    assert_eq!(
        s.enroll(two.digest, &third, &entry(AuditAction::AgentEnrolled))
            .await?,
        EnrollOutcome::UsedUp
    );
    assert_eq!(
        s.enroll(
            KeyDigest([99; 32]),
            &third,
            &entry(AuditAction::AgentEnrolled)
        )
        .await?,
        EnrollOutcome::Invalid
    );
    let short = token(5, 500, 2)?;
    s.insert_enrollment(&short, &entry(AuditAction::EnrollmentCreated))
        .await?;
    let late = enrolling("box-4", 15, 500)?;
    assert_eq!(
        s.enroll(short.digest, &late, &entry(AuditAction::AgentEnrolled))
            .await?,
        EnrollOutcome::Expired
    );
    let revoked = token(5, 10_000, 3)?;
    s.insert_enrollment(&revoked, &entry(AuditAction::EnrollmentCreated))
        .await?;
    s.revoke_enrollment(
        revoked.record.id,
        t(2),
        &entry(AuditAction::EnrollmentRevoked),
    )
    .await?;
    assert_eq!(
        s.enroll(revoked.digest, &third, &entry(AuditAction::AgentEnrolled))
            .await?,
        EnrollOutcome::Revoked
    );
    ensure!(s.find_agent_by_key(third.key_digest).await?.is_none());
    let enrolled: Vec<AuditEvent> = entries(s)
        .await?
        .into_iter()
        .filter(|e| e.action == AuditAction::AgentEnrolled)
        .collect();
    assert_eq!(enrolled.len(), 2);
    assert_eq!(enrolled[0].agent, Some(first.id));
    let detail = enrolled[0].detail.clone().unwrap_or_default();
    ensure!(
        detail.contains(&format!("enrollment_id={}", two.record.id))
            && detail.contains(&first.id.to_string()),
        "{detail}"
    );
    Ok(())
}

pub(crate) async fn two_enrollments_racing_for_the_last_use_cannot_both_win(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    for round in 0..5u8 {
        let one = token(1, 10_000, 100 + round)?;
        s.insert_enrollment(&one, &entry(AuditAction::EnrollmentCreated))
            .await?;
        let a = enrolling(&format!("racer-{round}-a"), 2 * round + 1, 100)?;
        let c = enrolling(&format!("racer-{round}-b"), 2 * round + 2, 100)?;
        let enrolled = entry(AuditAction::AgentEnrolled);
        let (x, y) = tokio::join!(
            s.enroll(one.digest, &a, &enrolled),
            s.enroll(one.digest, &c, &enrolled),
        );
        let won = [x?, y?]
            .iter()
            .filter(|o| matches!(o, EnrollOutcome::Enrolled { .. }))
            .count();
        assert_eq!(won, 1, "round {round}");
        assert_eq!(uses_of(s, one.record.id).await?, 1);
        let stored = [
            s.find_agent_by_key(a.key_digest).await?,
            s.find_agent_by_key(c.key_digest).await?,
        ];
        assert_eq!(stored.iter().flatten().count(), 1, "round {round}");
    }
    Ok(())
}

pub(crate) async fn an_enrollment_commits_with_its_entry_or_not_at_all(
    b: impl Backend,
) -> anyhow::Result<()> {
    let s = b.store();
    let one = token(1, 10_000, 1)?;
    s.insert_enrollment(&one, &entry(AuditAction::EnrollmentCreated))
        .await?;
    let a = enrolling("box-1", 11, 100)?;
    refused(
        &b,
        s.enroll(one.digest, &a, &entry(AuditAction::AgentEnrolled)),
    )
    .await?;
    ensure!(s.find_agent_by_key(a.key_digest).await?.is_none());
    assert_eq!(uses_of(s, one.record.id).await?, 0);
    refused(
        &b,
        s.insert_enrollment(
            &token(1, 10_000, 2)?,
            &entry(AuditAction::EnrollmentCreated),
        ),
    )
    .await?;
    assert_eq!(s.list_enrollments().await?.len(), 1);
    Ok(())
}
