//! Unit tests of the shared row mapping: URL redaction, heartbeat merging, corrupt rows, counts.

use super::*;

fn agent(n: u128) -> AgentId {
    AgentId::from_uuid(Uuid::from_u128(n))
}

fn t(micros: i64) -> Timestamp {
    Timestamp::from_unix_micros(micros)
}

#[test]
fn passwords_are_redacted_from_urls() {
    assert_eq!(
        redact_url("postgres://rmm:s3cret@db:5432/rmm?sslmode=disable"),
        "postgres://rmm:***@db:5432/rmm?sslmode=disable"
    );
    assert_eq!(redact_url("postgres://rmm@db/rmm"), "postgres://rmm@db/rmm");
    assert_eq!(redact_url("postgres://db/x@y"), "postgres://db/x@y");
    assert_eq!(redact_url("sqlite://data/rmm.db"), "sqlite://data/rmm.db");
    assert_eq!(redact_url("sqlite:rmm.db"), "sqlite:rmm.db");
}

#[test]
fn a_batch_is_merged_to_one_update_per_agent_with_the_newest_facts() {
    let facts = |v: &str, up: Option<u64>| HostFacts {
        version: Some(v.into()),
        hostname: None,
        os: Some("linux".into()),
        uptime_secs: up,
    };
    let merged = merge_seen(&[
        (agent(1), t(30), Some(facts("1.1", None))),
        (agent(2), t(5), None),
        (agent(1), t(10), Some(facts("1.0", Some(7)))),
        (agent(1), t(20), None),
    ]);
    assert_eq!(
        merged,
        vec![
            SeenUpdate {
                agent: agent(1),
                at: t(30),
                facts: HostFacts {
                    version: Some("1.1".into()),
                    hostname: None,
                    os: Some("linux".into()),
                    uptime_secs: Some(7),
                },
            },
            SeenUpdate {
                agent: agent(2),
                at: t(5),
                facts: HostFacts::default(),
            },
        ]
    );
}

#[test]
fn corrupt_rows_become_backend_errors_naming_the_column() {
    let row = SessionRow {
        session_id: Uuid::from_u128(9),
        tech_id: Uuid::from_u128(1),
        agent_id: Uuid::from_u128(2),
        opened_at: t(1),
        last_activity: t(1),
        status: "closed".into(),
        closed_at: None,
        close_reason: Some("idle".into()),
    };
    let err = Session::try_from(row).expect_err("closed without time");
    let StoreError::Backend(cause) = err else {
        panic!("expected a backend error, got {err:?}");
    };
    assert!(cause.to_string().contains("tech_sessions row"));

    let row = AgentRow {
        agent_id: Uuid::from_u128(3),
        name: "web".into(),
        key_digest: vec![0; 31],
        created_at: t(0),
        last_seen: None,
        agent_version: None,
        hostname: None,
        os: None,
        uptime_secs: None,
        group_name: "default".into(),
        revoked: false,
    };
    let err = AgentRecord::try_from(row).expect_err("short digest");
    assert!(matches!(err, StoreError::Backend(c) if c.to_string().contains("key_digest")));
}

fn audit_row(action: &str) -> AuditRow {
    AuditRow {
        audit_id: 7,
        occurred_at: t(1),
        action: action.into(),
        tech_id: None,
        agent_id: None,
        session_id: None,
        detail: None,
        command_id: None,
        command: None,
        status: None,
        exit_code: None,
        stdout_bytes: None,
        stderr_bytes: None,
        duration_ms: None,
        path: None,
        direction: None,
        size_bytes: None,
        sha256: None,
        result: None,
    }
}

fn backend_message<T: std::fmt::Debug>(r: Result<T, StoreError>) -> String {
    match r {
        Err(StoreError::Backend(cause)) => cause.to_string(),
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[test]
fn corrupt_audit_rows_become_backend_errors_naming_the_column() {
    let message = backend_message(AuditEntry::try_from(audit_row("tunnel_reopen")));
    assert!(message.contains("audit_events row 7"), "{message}");
    assert!(
        message.contains("unknown action \"tunnel_reopen\""),
        "{message}"
    );

    let mut negative = audit_row("command_end");
    negative.stdout_bytes = Some(-1);
    let message = backend_message(AuditEntry::try_from(negative));
    assert!(message.contains("stdout_bytes"), "{message}");

    // A file entry without its direction and result.
    let mut partial = audit_row("file_upload");
    partial.path = Some("/tmp/x".into());
    let message = backend_message(AuditEntry::try_from(partial));
    assert!(message.contains("path/direction/result"), "{message}");

    let mut stray = audit_row("file_upload");
    stray.sha256 = Some("00".into());
    backend_message(AuditEntry::try_from(stray));
}

#[test]
fn an_audit_row_with_no_details_has_no_command_or_file_part() {
    let entry = AuditEntry::try_from(audit_row("tunnel_open")).expect("valid row");
    assert_eq!(entry.id, 7);
    assert_eq!(entry.event, AuditEvent::new(t(1), AuditAction::TunnelOpen));
}

#[test]
fn corrupt_command_rows_become_backend_errors_naming_the_column() {
    let row = || CommandRow {
        command_id: Uuid::from_u128(5),
        session_id: Uuid::from_u128(1),
        agent_id: Uuid::from_u128(2),
        tech_id: Uuid::from_u128(3),
        channel_id: "cmd-1".into(),
        command: "ls".into(),
        timeout_secs: 30,
        status: "running".into(),
        exit_code: None,
        signal: None,
        started_at: t(0),
        finished_at: None,
        stdout_bytes: 0,
        stderr_bytes: 0,
        stdout_truncated: false,
        stderr_truncated: false,
        output_pruned: false,
        end_reason: None,
    };
    CommandRecord::try_from(row()).expect("valid row");
    let ended = CommandRecord::try_from(CommandRow {
        status: "failed".into(),
        end_reason: Some("agent_disconnected".into()),
        ..row()
    })
    .expect("valid row");
    assert_eq!(
        ended.end_reason,
        Some(rmm_domain::CommandEndReason::SessionClosed(
            rmm_domain::CloseReason::AgentDisconnected
        ))
    );
    let message = backend_message(CommandRecord::try_from(CommandRow {
        end_reason: Some("gremlins".into()),
        ..row()
    }));
    assert!(message.contains("end_reason"), "{message}");
    let message = backend_message(CommandRecord::try_from(CommandRow {
        status: "done".into(),
        ..row()
    }));
    assert!(
        message.contains("commands row") && message.contains("status"),
        "{message}"
    );
    let message = backend_message(CommandRecord::try_from(CommandRow {
        timeout_secs: -5,
        ..row()
    }));
    assert!(message.contains("timeout_secs"), "{message}");
    let message = backend_message(CommandRecord::try_from(CommandRow {
        channel_id: "bad channel!".into(),
        ..row()
    }));
    assert!(message.contains("channel_id"), "{message}");
}

#[test]
fn counts_saturate_chunk_numbers_do_not_and_pages_are_clamped() {
    assert_eq!(u64_to_db(5), 5);
    assert_eq!(u64_to_db(u64::MAX), i64::MAX);
    assert_eq!(seq_to_db(i64::MAX.unsigned_abs()).ok(), Some(i64::MAX));
    backend_message(seq_to_db(u64::MAX));
    assert_eq!(audit_page_size(0), 1);
    assert_eq!(audit_page_size(50), 50);
    assert_eq!(audit_page_size(u32::MAX), 1000);
}
