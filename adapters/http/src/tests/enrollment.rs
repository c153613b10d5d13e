//! `POST/GET /api/v1/enrollment-tokens`, `DELETE /api/v1/enrollment-tokens/{id}` (201/200/204,
//! 400 naming the problem, 403 for non-admins, 404 `enrollment_not_found`) and
//! `POST /api/v1/agents/enroll` without a user token (201, 400, 401 with the reason's code,
//! 409 `agent_exists`).

use poem::http::StatusCode;
use rmm_application::{AgentKey, EnrollOutcome, EnrollmentRecord, KeyDigest};
use rmm_domain::{EnrollmentId, GroupName};
use rmm_protocol::api::ApiErrorCode;
use serde_json::json;
use uuid::Uuid;

use super::{ADMIN, AGENT, AUDITOR, Setup, TECH, assert_error, assert_ok, now};

const ENROLLMENT: EnrollmentId = EnrollmentId::from_uuid(Uuid::from_u128(0xE));

fn keys(s: &mut Setup) {
    s.credentials.expect_new_agent_key().returning(|| AgentKey {
        secret: "fresh-secret".into(),
        digest: KeyDigest([1; 32]),
    });
    s.credentials
        .expect_digest_agent_key()
        .returning(|_| KeyDigest([2; 32]));
    s.ids.expect_enrollment_id().returning(|| ENROLLMENT);
    s.ids.expect_agent_id().returning(|| AGENT);
}

#[tokio::test]
async fn an_admin_creates_a_token_shown_once_and_stored_as_its_digest() {
    let mut s = Setup::default();
    keys(&mut s);
    s.enrollment
        .expect_insert_enrollment()
        .withf(|e, entry| {
            e.digest == KeyDigest([1; 32])
                && e.record.uses_allowed == 3
                && e.record.group.as_str() == "default"
                && entry
                    .detail
                    .as_deref()
                    .is_some_and(|d| d.contains("uses_allowed=3"))
        })
        .times(1)
        .returning(|_, _| Box::pin(async { Ok(true) }));
    let server = s.serve();
    let body = json!({"group": "default", "uses": 3, "expires_in_secs": 3600});
    let created = assert_ok(
        server
            .post("/api/v1/enrollment-tokens", ADMIN, &body)
            .send()
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["token"], "fresh-secret");
    assert_eq!(created["enrollment_id"], ENROLLMENT.to_string());
}

#[tokio::test]
async fn bad_values_are_400_unknown_groups_409_naming_them_and_non_admins_403() {
    let mut s = Setup::default();
    keys(&mut s);
    s.enrollment
        .expect_insert_enrollment()
        .times(1)
        .returning(|_, _| Box::pin(async { Ok(false) }));
    let server = s.serve();
    let resp = server
        .post(
            "/api/v1/enrollment-tokens",
            ADMIN,
            &json!({"group": "nowhere"}),
        )
        .send()
        .await;
    let message = assert_error(resp, StatusCode::CONFLICT, ApiErrorCode::GroupNotFound).await;
    assert!(message.contains("nowhere"), "{message}");
    for (body, needle) in [
        (json!({"group": "default", "uses": 10_001}), "uses"),
        (
            json!({"group": "default", "expires_in_secs": 2_592_001}),
            "expires_in_secs",
        ),
    ] {
        let resp = server
            .post("/api/v1/enrollment-tokens", ADMIN, &body)
            .send()
            .await;
        let message =
            assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;
        assert!(message.contains(needle), "{message}");
    }
    for actor in [TECH, AUDITOR] {
        let body = json!({"group": "default"});
        let resp = server
            .post("/api/v1/enrollment-tokens", actor, &body)
            .send()
            .await;
        assert_error(resp, StatusCode::FORBIDDEN, ApiErrorCode::Forbidden).await;
        let resp = server.get("/api/v1/enrollment-tokens", actor).send().await;
        assert_error(resp, StatusCode::FORBIDDEN, ApiErrorCode::Forbidden).await;
    }
}

#[tokio::test]
async fn tokens_are_listed_without_their_secret_and_revoked_or_404() {
    let mut s = Setup::default();
    s.enrollment.expect_list_enrollments().returning(|| {
        Box::pin(async {
            Ok(vec![EnrollmentRecord {
                id: ENROLLMENT,
                group: GroupName::default_group(),
                uses: 1,
                uses_allowed: 2,
                expires_at: now(),
                revoked: false,
                created_at: now(),
                created_by: None,
            }])
        })
    });
    s.enrollment
        .expect_revoke_enrollment()
        .returning(|id, _, _| Box::pin(async move { Ok(id == ENROLLMENT) }));
    let server = s.serve();
    let list = assert_ok(
        server.get("/api/v1/enrollment-tokens", ADMIN).send().await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (list[0]["uses"].as_u64(), list[0]["uses_allowed"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(list[0].get("token").is_none(), "{list}");
    let resp = server
        .delete(&format!("/api/v1/enrollment-tokens/{ENROLLMENT}"), ADMIN)
        .send()
        .await;
    resp.assert_status(StatusCode::NO_CONTENT);
    let resp = server
        .delete(
            &format!("/api/v1/enrollment-tokens/{}", Uuid::from_u128(9)),
            ADMIN,
        )
        .send()
        .await;
    assert_error(
        resp,
        StatusCode::NOT_FOUND,
        ApiErrorCode::EnrollmentNotFound,
    )
    .await;
}

#[tokio::test]
async fn a_machine_enrolls_without_a_user_token_or_is_told_why_not() {
    let outcomes = [
        (
            EnrollOutcome::Invalid,
            StatusCode::UNAUTHORIZED,
            ApiErrorCode::EnrollmentInvalid,
        ),
        (
            EnrollOutcome::Expired,
            StatusCode::UNAUTHORIZED,
            ApiErrorCode::EnrollmentExpired,
        ),
        (
            EnrollOutcome::UsedUp,
            StatusCode::UNAUTHORIZED,
            ApiErrorCode::EnrollmentUsedUp,
        ),
        (
            EnrollOutcome::Revoked,
            StatusCode::UNAUTHORIZED,
            ApiErrorCode::EnrollmentRevoked,
        ),
        (
            EnrollOutcome::NameTaken,
            StatusCode::CONFLICT,
            ApiErrorCode::AgentExists,
        ),
    ];
    for (outcome, status, code) in outcomes {
        let mut s = Setup::default();
        keys(&mut s);
        s.enrollment
            .expect_enroll()
            .times(1)
            .returning(move |_, _, _| {
                let outcome = outcome.clone();
                Box::pin(async move { Ok(outcome) })
            });
        let server = s.serve();
        let resp = server
            .client
            .post("/api/v1/agents/enroll")
            .body_json(&json!({"token": "t", "name": "box-1"}))
            .send()
            .await;
        assert_error(resp, status, code).await;
    }
    let mut s = Setup::default();
    keys(&mut s);
    s.enrollment
        .expect_enroll()
        .times(1)
        .returning(|_, agent, _| {
            let mut agent = agent.clone();
            agent.group = GroupName::parse("site-a").expect("a valid group");
            Box::pin(async move {
                Ok(EnrollOutcome::Enrolled {
                    agent: Box::new(agent),
                    enrollment: ENROLLMENT,
                })
            })
        });
    let server = s.serve();
    let resp = server
        .client
        .post("/api/v1/agents/enroll")
        .body_json(&json!({"token": "t", "name": "box-1"}))
        .send()
        .await;
    let body = assert_ok(resp, StatusCode::CREATED).await;
    assert_eq!(
        (&body["agent_key"], &body["group"], &body["name"]),
        (&json!("fresh-secret"), &json!("site-a"), &json!("box-1"))
    );
    let resp = server
        .client
        .post("/api/v1/agents/enroll")
        .body_json(&json!({"token": "t", "name": ""}))
        .send()
        .await;
    assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;
}
