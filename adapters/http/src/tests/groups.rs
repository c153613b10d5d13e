//! `GET/POST /api/v1/groups`, `DELETE /api/v1/groups/{name}` (200/201/204, 400, 403, 404
//! `group_not_found`, 409 `group_exists`/`group_not_empty`), and the group scoping of
//! technicians: an agent outside their groups, or a session to one, is not found; the
//! per-user session cap answers 429 `too_many_sessions`.

use poem::http::StatusCode;
use rmm_application::{GroupDeleteOutcome, GroupRecord, MockGroupRepository, StoreError};
use rmm_domain::GroupName;
use rmm_protocol::api::ApiErrorCode;
use serde_json::json;

use super::{ADMIN, AGENT, AUDITOR, SESSION, Setup, TECH, active, assert_error, assert_ok, now};

fn group(name: &str, agents: u64) -> GroupRecord {
    GroupRecord {
        id: format!("00000000-0000-0000-0000-00000000000{agents}"),
        name: GroupName::parse(name).expect("a valid name"),
        created_at: now(),
        agents,
    }
}

/// Groups `acme` (2 agents) and `globex` (1); TECH is granted acme; no agent is visible to
/// technicians, and each holds `held` open sessions.
fn groups(held: u64) -> MockGroupRepository {
    let mut g = MockGroupRepository::new();
    g.expect_list_groups()
        .returning(|| Box::pin(async { Ok(vec![group("acme", 2), group("globex", 1)]) }));
    g.expect_user_groups()
        .returning(|_| Box::pin(async { Ok(vec![GroupName::parse("acme").expect("valid")]) }));
    g.expect_may_see_agent()
        .returning(|_, _| Box::pin(async { Ok(false) }));
    g.expect_open_sessions_of()
        .returning(move |_| Box::pin(async move { Ok(held) }));
    g
}

#[tokio::test]
async fn technicians_list_their_groups_admins_and_auditors_all() {
    let s = Setup {
        groups: Some(groups(0)),
        ..Setup::default()
    };
    let server = s.serve();
    let body = assert_ok(
        server.get("/api/v1/groups", TECH).send().await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        body,
        json!([{"group_id": group("acme", 2).id, "name": "acme", "agents": 2}])
    );
    for actor in [ADMIN, AUDITOR] {
        let body = assert_ok(
            server.get("/api/v1/groups", actor).send().await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(body[1]["name"], "globex", "{body}");
    }
}

#[tokio::test]
async fn creating_a_group_answers_201_409_400_or_403() {
    let mut g = MockGroupRepository::new();
    g.expect_insert_group()
        .withf(|g, e| g.name.as_str() == "acme" && e.user == Some(ADMIN.id))
        .times(1)
        .returning(|_, _| Box::pin(async { Ok(()) }));
    g.expect_insert_group()
        .withf(|g, _| g.name.as_str() == "globex")
        .times(1)
        .returning(|_, _| Box::pin(async { Err(StoreError::Conflict) }));
    let s = Setup {
        groups: Some(g),
        ..Setup::default()
    };
    let server = s.serve();
    let body = assert_ok(
        server
            .post("/api/v1/groups", ADMIN, &json!({"name": "acme"}))
            .send()
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(body["name"], "acme");
    assert_eq!(body["group_id"].as_str().map(str::len), Some(36), "{body}");
    let resp = server
        .post("/api/v1/groups", ADMIN, &json!({"name": "globex"}))
        .send()
        .await;
    assert_error(resp, StatusCode::CONFLICT, ApiErrorCode::GroupExists).await;
    let resp = server
        .post("/api/v1/groups", ADMIN, &json!({"name": "a/b"}))
        .send()
        .await;
    assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;
    let resp = server
        .post("/api/v1/groups", TECH, &json!({"name": "x"}))
        .send()
        .await;
    assert_error(resp, StatusCode::FORBIDDEN, ApiErrorCode::Forbidden).await;
}

#[tokio::test]
async fn deleting_a_group_answers_204_409_404_or_403() {
    let mut g = MockGroupRepository::new();
    for (name, outcome) in [
        ("old", GroupDeleteOutcome::Deleted),
        ("busy", GroupDeleteOutcome::NotEmpty),
        ("gone", GroupDeleteOutcome::NotFound),
    ] {
        g.expect_delete_group()
            .withf(move |n, e| n.as_str() == name && e.user == Some(ADMIN.id))
            .times(1)
            .returning(move |_, _| Box::pin(async move { Ok(outcome) }));
    }
    let s = Setup {
        groups: Some(g),
        ..Setup::default()
    };
    let server = s.serve();
    let resp = server.delete("/api/v1/groups/old", ADMIN).send().await;
    assert_eq!(resp.0.status(), StatusCode::NO_CONTENT);
    let resp = server.delete("/api/v1/groups/busy", ADMIN).send().await;
    assert_error(resp, StatusCode::CONFLICT, ApiErrorCode::GroupNotEmpty).await;
    let resp = server.delete("/api/v1/groups/gone", ADMIN).send().await;
    assert_error(resp, StatusCode::NOT_FOUND, ApiErrorCode::GroupNotFound).await;
    let resp = server.delete("/api/v1/groups/old", TECH).send().await;
    assert_error(resp, StatusCode::FORBIDDEN, ApiErrorCode::Forbidden).await;
}

#[tokio::test]
async fn an_agent_outside_a_technicians_groups_is_not_connected_and_its_session_not_found() {
    // No gateway expectation: the agent is not even asked about.
    let mut s = Setup {
        groups: Some(groups(0)),
        ..Setup::default()
    };
    s.stored_session(active(TECH));
    let server = s.serve();
    let body = json!({ "agent_id": AGENT.to_string() });
    let resp = server.post("/api/v1/tunnel/open", TECH, &body).send().await;
    assert_error(resp, StatusCode::NOT_FOUND, ApiErrorCode::AgentNotConnected).await;
    let resp = server
        .get(&format!("/api/v1/tunnel/status/{SESSION}"), TECH)
        .send()
        .await;
    assert_error(resp, StatusCode::NOT_FOUND, ApiErrorCode::SessionNotFound).await;
}

#[tokio::test]
async fn the_open_past_the_per_user_cap_answers_429() {
    let mut g = MockGroupRepository::new();
    g.expect_may_see_agent()
        .returning(|_, _| Box::pin(async { Ok(true) }));
    g.expect_open_sessions_of()
        .returning(|_| Box::pin(async { Ok(20) }));
    let mut s = Setup {
        groups: Some(g),
        ..Setup::default()
    };
    // Over the cap comes first even for an agent that is not connected.
    s.gateway.expect_mode().return_const(None);
    let server = s.serve();
    let body = json!({ "agent_id": AGENT.to_string() });
    let resp = server.post("/api/v1/tunnel/open", TECH, &body).send().await;
    let message = assert_error(
        resp,
        StatusCode::TOO_MANY_REQUESTS,
        ApiErrorCode::TooManySessions,
    )
    .await;
    assert!(message.contains("20"), "{message}");
}
