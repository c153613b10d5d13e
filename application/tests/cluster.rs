//! The sweep of lost cluster nodes over a mocked lease store: the entries it asks the store to
//! write, and what it returns.

use rmm_application::*;
use rmm_domain::*;

#[tokio::test]
async fn the_sweep_closes_with_node_lost_entries_and_returns_the_lost_nodes() {
    let now = Timestamp::from_unix_micros(1_700_000_000_000_000);
    let lost = vec![LostNode {
        node: "node-a".to_owned(),
        generation: 7,
        sessions: vec![],
        commands: vec![],
        recordings: 2,
    }];
    let mut leases = MockNodeLeases::new();
    let returned = lost.clone();
    leases
        .expect_close_lost_nodes()
        .withf(move |at, session_note, command_note| {
            *at == now
                && *session_note
                    == AuditNote::new(AuditAction::TunnelClose, Some("node_lost".to_owned()))
                && *command_note
                    == AuditNote::new(AuditAction::CommandEnd, Some("node_lost".to_owned()))
        })
        .times(1)
        .returning(move |_, _, _| {
            let lost = returned.clone();
            Box::pin(async move { Ok(lost) })
        });

    let swept = sweep_lost_nodes(&leases, now).await;

    assert!(
        matches!(swept, Ok(ref nodes) if *nodes == lost),
        "{swept:?}"
    );
}
