//! The retention sweep over mocked stores: what it asks the stores to prune, in which order,
//! and what it audits.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod common;

use std::time::Duration;

use common::{Setup, now};
use mockall::predicate::eq;
use rmm_application::*;
use rmm_domain::*;
use uuid::Uuid;

fn id(n: u128) -> CommandId {
    CommandId::from_uuid(Uuid::from_u128(n))
}

fn output(n: u128, bytes: u64) -> StoredOutput {
    StoredOutput {
        id: id(n),
        finished_at: Timestamp::from_unix_micros(i64::try_from(n).unwrap()),
        bytes,
    }
}

#[tokio::test]
async fn the_size_budget_prunes_the_oldest_until_the_total_fits_and_audits_it() {
    let mut s = Setup {
        retention: Retention {
            output_bytes: Some(3000),
            ..Retention::default()
        },
        ..Setup::default()
    };
    s.commands
        .expect_stored_output_bytes()
        .times(1)
        .returning(|| Box::pin(async { Ok(3600) }));
    s.commands
        .expect_ended_output()
        .with(eq(None), mockall::predicate::always())
        .times(1)
        .returning(|_, _| {
            Box::pin(async { Ok(vec![output(1, 1200), output(2, 1200), output(3, 1200)]) })
        });
    s.commands
        .expect_prune_output()
        .withf(|ids, at| ids == [id(1)] && *at == now())
        .times(1)
        .returning(|_, _| {
            Box::pin(async {
                Ok(Pruned {
                    items: 1,
                    bytes: 1200,
                })
            })
        });
    s.audit
        .expect_append()
        .withf(|e| {
            e.action == AuditAction::RetentionSweep
                && e.user.is_none()
                && e.detail.as_deref()
                    == Some(
                        "output_commands=1 output_bytes=1200 output_by_age=0 output_by_size=1 \
                         recordings=0 recording_bytes=0",
                    )
        })
        .times(1)
        .returning(|_| Box::pin(async { Ok(()) }));
    let report = s.build().retention_sweep().await.unwrap();
    assert_eq!(
        report.output_by_size,
        Pruned {
            items: 1,
            bytes: 1200
        }
    );
}

#[tokio::test]
async fn ages_cut_at_now_minus_the_age_and_a_sweep_that_prunes_nothing_is_not_audited() {
    let mut s = Setup {
        retention: Retention {
            output_age: Some(Duration::from_millis(300)),
            recording_age: Some(Duration::from_millis(500)),
            output_bytes: None,
        },
        ..Setup::default()
    };
    let output_cutoff = now().minus(Duration::from_millis(300));
    let recording_cutoff = now().minus(Duration::from_millis(500));
    s.commands
        .expect_ended_output()
        .with(eq(Some(output_cutoff)), mockall::predicate::always())
        .times(1)
        .returning(|_, _| Box::pin(async { Ok(vec![]) }));
    s.recordings
        .expect_ended_recordings()
        .with(eq(recording_cutoff), mockall::predicate::always())
        .times(1)
        .returning(|_, _| Box::pin(async { Ok(vec![]) }));
    // No prune and no audit entry is expected: either would fail the mocks.
    let report = s.build().retention_sweep().await.unwrap();
    assert!(!report.pruned_any());
}

#[tokio::test]
async fn no_retention_touches_nothing() {
    // No expectation at all: any store call fails the test.
    let report = Setup::default().build().retention_sweep().await.unwrap();
    assert_eq!(report, RetentionReport::default());
}
