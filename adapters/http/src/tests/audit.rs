//! `GET /api/v1/audit`: 200 (admins everything, technicians their own), 400, 403, 500.

use poem::http::StatusCode;
use rmm_application::{
    AuditAction, AuditEntry, AuditEvent, AuditQuery, CommandAudit, FileAudit, UserRecord,
};
use rmm_domain::{Role, Username};
use rmm_protocol::api::ApiErrorCode;

use super::{
    ADMIN, AGENT, COMMAND, OTHER_TECH, SESSION, Setup, TECH, assert_error, assert_internal,
    assert_ok, backend_error, now,
};

fn entries() -> Vec<AuditEntry> {
    let mut command = AuditEvent::new(now(), AuditAction::Command);
    command.user = Some(TECH.id);
    command.agent = Some(AGENT);
    command.session = Some(SESSION);
    command.command = Some(CommandAudit {
        command_id: Some(COMMAND),
        text: Some("uptime".into()),
        status: Some("running".into()),
        ..CommandAudit::default()
    });
    let mut upload = AuditEvent::new(now(), AuditAction::FileUpload);
    upload.user = Some(TECH.id);
    upload.file = Some(FileAudit {
        path: "/tmp/x".into(),
        direction: "upload".into(),
        size: Some(3),
        sha256: None,
        result: "ok".into(),
    });
    vec![
        AuditEntry {
            id: 9,
            event: command,
        },
        AuditEntry {
            id: 8,
            event: upload,
        },
    ]
}

/// The users the store holds: the technician of [`entries`] and one they do not name.
fn users_named(s: &mut Setup) {
    let user = |id, name: &str| UserRecord {
        id,
        username: Username::parse(name).expect("a valid name"),
        password_hash: "hash".into(),
        role: Role::Tech,
        created_at: now(),
        disabled: false,
        last_login_at: None,
    };
    s.users.expect_list_users().returning(move || {
        let users = vec![user(TECH.id, "alice"), user(OTHER_TECH.id, "bob")];
        Box::pin(async move { Ok(users) })
    });
}

/// The store answers [`entries`] to a query that passes `check`.
fn listing(check: fn(&AuditQuery) -> bool) -> Setup {
    let mut s = Setup::default();
    s.audit
        .expect_list_audit()
        .withf(check)
        .times(1)
        .returning(|_| Box::pin(async { Ok(entries()) }));
    users_named(&mut s);
    s
}

#[tokio::test]
async fn an_admin_reads_the_whole_log_newest_first() {
    let resp = listing(|q| {
        *q == AuditQuery {
            limit: 50,
            ..AuditQuery::default()
        }
    })
    .serve()
    .get("/api/v1/audit", ADMIN)
    .send()
    .await;
    let body = assert_ok(resp, StatusCode::OK).await;
    let entries = body["entries"].as_array().expect("a list of entries");
    assert_eq!(entries.len(), 2, "{body}");
    assert_eq!(entries[0]["id"], 9);
    assert_eq!(entries[0]["event"], "command");
    assert_eq!(entries[0]["tech_id"], TECH.id.as_uuid().to_string());
    assert_eq!(entries[0]["username"], "alice");
    assert_eq!(entries[1]["username"], "alice");
    assert_eq!(entries[0]["session_id"], SESSION.as_uuid().to_string());
    assert_eq!(entries[0]["command_id"], COMMAND.as_uuid().to_string());
    assert_eq!(entries[0]["command"], "uptime");
    assert!(entries[0].get("path").is_none(), "{body}");
    assert_eq!(entries[1]["event"], "file_upload");
    assert_eq!(entries[1]["path"], "/tmp/x");
    assert_eq!(entries[1]["size"], 3);
    // Fewer entries than the limit: the last page.
    assert!(body["next_before"].is_null(), "{body}");
}

#[tokio::test]
async fn filters_reach_the_store_and_a_full_page_points_to_the_next() {
    let since = "2025-01-01T00:00:00Z";
    let until = "2025-01-02T00:00:00Z";
    let resp = listing(|q| {
        q.agent == Some(AGENT)
            && q.session == Some(SESSION)
            && q.user == Some(TECH.id)
            && q.since.map(|t| t.as_unix_micros()) == Some(1_735_689_600_000_000)
            && q.until.map(|t| t.as_unix_micros()) == Some(1_735_776_000_000_000)
            && q.before == Some(100)
            && q.limit == 2
    })
    .serve()
    .get(
        &format!(
            "/api/v1/audit?agent_id={}&session_id={}&tech_id={}&since={since}&until={until}&before=100&limit=2",
            AGENT.as_uuid(),
            SESSION.as_uuid(),
            TECH.id.as_uuid()
        ),
        ADMIN,
    )
    .send()
    .await;
    let body = assert_ok(resp, StatusCode::OK).await;
    assert_eq!(body["next_before"], 8, "{body}");
}

#[tokio::test]
async fn a_limit_beyond_500_is_clamped() {
    let resp = listing(|q| q.limit == 500)
        .serve()
        .get("/api/v1/audit?limit=100000", ADMIN)
        .send()
        .await;
    let body = assert_ok(resp, StatusCode::OK).await;
    assert!(body["next_before"].is_null(), "{body}");
}

#[tokio::test]
async fn a_technician_reads_only_their_own_entries() {
    let server = {
        let mut s = Setup::default();
        s.audit
            .expect_list_audit()
            .withf(|q| q.user == Some(TECH.id))
            .times(2)
            .returning(|_| Box::pin(async { Ok(entries()) }));
        users_named(&mut s);
        s.serve()
    };
    for path in [
        "/api/v1/audit".to_owned(),
        format!("/api/v1/audit?tech_id={}", TECH.id.as_uuid()),
    ] {
        let resp = server.get(&path, TECH).send().await;
        let body = assert_ok(resp, StatusCode::OK).await;
        assert_eq!(body["entries"][0]["id"], 9, "{body}");
    }
}

#[tokio::test]
async fn a_malformed_query_parameter_is_invalid_request() {
    let server = Setup::default().serve();
    for query in [
        "agent_id=host-1",
        "tech_id=1",
        "since=yesterday",
        "limit=-1",
        "before=soon",
    ] {
        let resp = server
            .get(&format!("/api/v1/audit?{query}"), ADMIN)
            .send()
            .await;
        assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;
    }
}

#[tokio::test]
async fn a_technician_may_not_read_anothers_entries() {
    let mut s = Setup::default();
    s.audit.expect_list_audit().never();
    let resp = s
        .serve()
        .get(
            &format!("/api/v1/audit?tech_id={}", OTHER_TECH.id.as_uuid()),
            TECH,
        )
        .send()
        .await;
    assert_error(resp, StatusCode::FORBIDDEN, ApiErrorCode::Forbidden).await;
}

#[tokio::test]
async fn a_failing_audit_store_is_a_500() {
    let mut s = Setup::default();
    s.audit
        .expect_list_audit()
        .times(1)
        .returning(|_| Box::pin(async { Err(backend_error()) }));
    let resp = s.serve().get("/api/v1/audit", ADMIN).send().await;
    assert_internal(resp).await;
}
