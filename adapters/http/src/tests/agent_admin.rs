//! `DELETE /api/v1/agents/{id}` (204, again 204, 403, 404 `agent_not_found`, 503),
//! `POST /api/v1/agents/{id}/rotate-key` (200, 404, 409 `revoked_agent`) and
//! `PATCH /api/v1/agents/{id}` (200, also for a change of nothing; 400 unknown group or bad
//! name; 409 `agent_exists`, 404); and `revoked`/`group` in the agent list.

use poem::http::StatusCode;
use rmm_application::{
    AgentChangeOutcome, AgentKey, AgentRecord, HostFacts, KeyDigest, StoreError,
};
use rmm_domain::{AgentName, GroupName};
use rmm_protocol::api::ApiErrorCode;
use serde_json::json;

use super::{
    ADMIN, AGENT, AUDITOR, Server, Setup, TECH, assert_error, assert_ok, assert_unavailable,
    backend_error, now,
};

fn path() -> String {
    format!("/api/v1/agents/{AGENT}")
}

fn record(revoked: bool) -> AgentRecord {
    AgentRecord {
        id: AGENT,
        name: AgentName::parse("db-01").expect("a valid name"),
        group: GroupName::parse("acme").expect("a valid group"),
        revoked,
        key_digest: KeyDigest([1; 32]),
        created_at: now(),
        last_seen: None,
        facts: HostFacts::default(),
    }
}

fn revoking(outcome: fn() -> Result<AgentChangeOutcome, StoreError>) -> Setup {
    let mut s = Setup::default();
    s.agents
        .expect_revoke_agent()
        .times(1)
        .returning(move |_, _| Box::pin(async move { outcome() }));
    s
}

fn patch<'a>(server: &'a Server, body: &serde_json::Value) -> super::Request<'a> {
    server
        .client
        .patch(path())
        .header("Authorization", format!("Bearer {}", server.token(ADMIN)))
        .body_json(body)
}

#[tokio::test]
async fn revoke_answers_204_also_when_revoked_already_and_ends_the_connection() {
    for outcome in [AgentChangeOutcome::Changed, AgentChangeOutcome::Revoked] {
        let mut s = Setup::default();
        s.agents
            .expect_revoke_agent()
            .times(1)
            .returning(move |_, _| Box::pin(async move { Ok(outcome) }));
        s.gateway.expect_disconnect().times(1).return_const(None);
        s.sessions
            .expect_list_open()
            .returning(|| Box::pin(async { Ok(vec![]) }));
        let resp = s.serve().delete(&path(), ADMIN).send().await;
        resp.assert_status(StatusCode::NO_CONTENT);
    }
}

#[tokio::test]
async fn revoke_answers_404_for_an_unknown_agent_and_503_when_the_store_fails() {
    let resp = revoking(|| Ok(AgentChangeOutcome::NotFound))
        .serve()
        .delete(&path(), ADMIN)
        .send()
        .await;
    assert_error(resp, StatusCode::NOT_FOUND, ApiErrorCode::AgentNotFound).await;
    let resp = revoking(|| Err(backend_error()))
        .serve()
        .delete(&path(), ADMIN)
        .send()
        .await;
    assert_unavailable(resp).await;
}

#[tokio::test]
async fn only_admins_revoke_rotate_or_change_agents() {
    let server = Setup::default().serve();
    for actor in [TECH, AUDITOR] {
        let resp = server.delete(&path(), actor).send().await;
        assert_error(resp, StatusCode::FORBIDDEN, ApiErrorCode::Forbidden).await;
        let resp = server
            .post(&format!("{}/rotate-key", path()), actor, &json!({}))
            .send()
            .await;
        assert_error(resp, StatusCode::FORBIDDEN, ApiErrorCode::Forbidden).await;
    }
}

#[tokio::test]
async fn rotate_key_answers_the_new_key_or_409_for_a_revoked_agent() {
    for (outcome, status) in [
        (AgentChangeOutcome::Changed, StatusCode::OK),
        (AgentChangeOutcome::Revoked, StatusCode::CONFLICT),
        (AgentChangeOutcome::NotFound, StatusCode::NOT_FOUND),
    ] {
        let mut s = Setup::default();
        s.credentials.expect_new_agent_key().returning(|| AgentKey {
            secret: "rmmk_fresh".into(),
            digest: KeyDigest([3; 32]),
        });
        s.agents
            .expect_set_agent_key()
            .returning(move |_, _, _| Box::pin(async move { Ok(outcome) }));
        s.gateway.expect_disconnect().return_const(None);
        let resp = s
            .serve()
            .post(&format!("{}/rotate-key", path()), ADMIN, &json!({}))
            .send()
            .await;
        match status {
            StatusCode::OK => {
                let body = assert_ok(resp, status).await;
                assert_eq!(body["agent_key"], "rmmk_fresh");
                assert_eq!(body["agent_id"], AGENT.as_uuid().to_string());
            }
            StatusCode::CONFLICT => {
                assert_error(resp, status, ApiErrorCode::RevokedAgent).await;
            }
            _ => {
                assert_error(resp, status, ApiErrorCode::AgentNotFound).await;
            }
        }
    }
}

#[tokio::test]
async fn patch_renames_and_moves_and_answers_the_agent() {
    let mut s = Setup::default();
    s.agents
        .expect_update_agent()
        .withf(|_, change, _| {
            change.name.as_ref().map(AgentName::as_str) == Some("db-01")
                && change.group.as_ref().map(GroupName::as_str) == Some("acme")
        })
        .times(1)
        .returning(|_, _, _| Box::pin(async { Ok(AgentChangeOutcome::Changed) }));
    s.agents
        .expect_find_agent()
        .returning(|_| Box::pin(async { Ok(Some(record(false))) }));
    let server = s.serve();
    let body = assert_ok(
        patch(&server, &json!({"name": "db-01", "group": "acme"}))
            .send()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(body["name"], "db-01");
    assert_eq!(body["group"], "acme");
    assert_eq!(body["revoked"], false);
}

/// A PATCH of no field is valid (its schema has no required field): the agent as it is,
/// nothing written.
#[tokio::test]
async fn patch_of_nothing_answers_the_agent_unchanged() {
    let mut s = Setup::default();
    s.agents.expect_update_agent().never();
    s.agents
        .expect_find_agent()
        .times(1)
        .returning(|_| Box::pin(async { Ok(Some(record(false))) }));
    let server = s.serve();
    let body = assert_ok(patch(&server, &json!({})).send().await, StatusCode::OK).await;
    assert_eq!(body["name"], "db-01");
    assert_eq!(body["group"], "acme");
}

#[tokio::test]
async fn patch_refuses_unknown_groups_taken_names_unknown_agents_and_bad_values() {
    for (outcome, status, code) in [
        (
            Ok(AgentChangeOutcome::UnknownGroup),
            StatusCode::CONFLICT,
            ApiErrorCode::GroupNotFound,
        ),
        (Err(()), StatusCode::CONFLICT, ApiErrorCode::AgentExists),
        // A revoked agent is kept as history, unchanged.
        (
            Ok(AgentChangeOutcome::Revoked),
            StatusCode::CONFLICT,
            ApiErrorCode::RevokedAgent,
        ),
        (
            Ok(AgentChangeOutcome::NotFound),
            StatusCode::NOT_FOUND,
            ApiErrorCode::AgentNotFound,
        ),
    ] {
        let mut s = Setup::default();
        s.agents.expect_update_agent().returning(move |_, _, _| {
            Box::pin(async move { outcome.map_err(|()| StoreError::Conflict) })
        });
        let server = s.serve();
        let resp = patch(&server, &json!({"name": "db-01", "group": "nowhere"}))
            .send()
            .await;
        let message = assert_error(resp, status, code).await;
        if code == ApiErrorCode::GroupNotFound {
            assert!(message.contains("nowhere"), "names the group: {message}");
        }
    }
    let server = Setup::default().serve();
    for body in [json!({"name": ""}), json!({"group": "bad\ngroup"})] {
        let resp = patch(&server, &body).send().await;
        assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;
    }
}

#[tokio::test]
async fn the_agent_list_shows_revoked_agents_and_their_group() {
    let mut s = Setup::default();
    s.agents
        .expect_list_agents()
        .returning(|| Box::pin(async { Ok(vec![record(true)]) }));
    s.gateway.expect_mode().return_const(None);
    let body = assert_ok(
        s.serve().get("/api/v1/agents", AUDITOR).send().await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(body[0]["revoked"], true);
    assert_eq!(body[0]["group"], "acme");
    assert_eq!(body[0]["mode"], "offline");
}
