//! `POST /api/v1/agents` (201, 400, 403, 409 `agent_exists`, 500) and `GET /api/v1/agents`
//! (200, 500).

use poem::http::StatusCode;
use rmm_application::{AgentKey, AgentRecord, HostFacts, KeyDigest, StoreError};
use rmm_domain::{AgentMode, AgentName};
use rmm_protocol::api::ApiErrorCode;
use serde_json::json;

use super::{
    ADMIN, AGENT, OTHER_AGENT, SESSION, Setup, TECH, assert_error, assert_internal, assert_ok,
    backend_error, now,
};

const SECRET: &str = "rmmk_the-secret";

/// Registration as far as the store: a key is made and an id drawn, then `insert` answers.
fn registering(insert: fn() -> Result<(), StoreError>) -> Setup {
    let mut s = Setup::default();
    s.credentials
        .expect_new_agent_key()
        .times(1)
        .returning(|| AgentKey {
            secret: SECRET.to_owned(),
            digest: KeyDigest([7; 32]),
        });
    s.ids.expect_agent_id().times(1).return_const(AGENT);
    s.agents
        .expect_insert_agent()
        .withf(|a| a.id == AGENT && a.name.as_str() == "host-1" && a.key_digest.0 == [7; 32])
        .times(1)
        .returning(move |_| Box::pin(async move { insert() }));
    s
}

#[tokio::test]
async fn an_admin_registers_an_agent_and_sees_its_key_once() {
    let server = registering(|| Ok(())).serve();
    let resp = server
        .post("/api/v1/agents", ADMIN, &json!({"name": "host-1"}))
        .send()
        .await;
    let body = assert_ok(resp, StatusCode::CREATED).await;
    assert_eq!(body["agent_id"], AGENT.as_uuid().to_string());
    assert_eq!(body["agent_key"], SECRET);
}

#[tokio::test]
async fn an_invalid_agent_name_is_invalid_request() {
    let server = Setup::default().serve();
    for name in ["", "   ", "bad\nname"] {
        let resp = server
            .post("/api/v1/agents", ADMIN, &json!({ "name": name }))
            .send()
            .await;
        assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;
    }
}

#[tokio::test]
async fn a_technician_may_not_register_agents() {
    let mut s = Setup::default();
    s.agents.expect_insert_agent().never();
    s.credentials.expect_new_agent_key().never();
    let resp = s
        .serve()
        .post("/api/v1/agents", TECH, &json!({"name": "host-1"}))
        .send()
        .await;
    assert_error(resp, StatusCode::FORBIDDEN, ApiErrorCode::Forbidden).await;
}

#[tokio::test]
async fn a_taken_agent_name_is_agent_exists() {
    let resp = registering(|| Err(StoreError::Conflict))
        .serve()
        .post("/api/v1/agents", ADMIN, &json!({"name": "host-1"}))
        .send()
        .await;
    let message = assert_error(resp, StatusCode::CONFLICT, ApiErrorCode::AgentExists).await;
    assert!(message.contains("host-1"), "{message}");
}

#[tokio::test]
async fn a_failing_agent_store_on_register_is_a_500() {
    let resp = registering(|| Err(backend_error()))
        .serve()
        .post("/api/v1/agents", ADMIN, &json!({"name": "host-1"}))
        .send()
        .await;
    assert_internal(resp).await;
}

pub(super) fn record(id: rmm_domain::AgentId, name: &str, facts: HostFacts) -> AgentRecord {
    AgentRecord {
        id,
        name: AgentName::parse(name).expect("a valid agent name"),
        group: rmm_domain::GroupName::default_group(),
        revoked: false,
        key_digest: KeyDigest([0; 32]),
        created_at: now(),
        last_seen: Some(now()),
        facts,
    }
}

#[tokio::test]
async fn agents_are_listed_with_their_live_mode() {
    let mut s = Setup::default();
    s.agents.expect_list_agents().times(1).returning(|| {
        Box::pin(async {
            Ok(vec![
                record(
                    AGENT,
                    "host-1",
                    HostFacts {
                        version: Some("1.2.3".into()),
                        hostname: Some("host-1.lan".into()),
                        os: Some("linux".into()),
                        uptime_secs: Some(42),
                    },
                ),
                record(OTHER_AGENT, "host-2", HostFacts::default()),
            ])
        })
    });
    s.gateway
        .expect_mode()
        .withf(|a| *a == AGENT)
        .return_const(Some(AgentMode::Tunnel { session: SESSION }));
    s.gateway
        .expect_mode()
        .withf(|a| *a == OTHER_AGENT)
        .return_const(None);
    let resp = s.serve().get("/api/v1/agents", TECH).send().await;
    let body = assert_ok(resp, StatusCode::OK).await;
    let agents = body.as_array().expect("a list");
    assert_eq!(agents.len(), 2, "{body}");
    assert_eq!(agents[0]["agent_id"], AGENT.as_uuid().to_string());
    assert_eq!(agents[0]["name"], "host-1");
    assert_eq!(agents[0]["connected"], true);
    assert_eq!(agents[0]["mode"], "tunnel");
    assert_eq!(agents[0]["agent_version"], "1.2.3");
    assert_eq!(agents[0]["uptime_secs"], 42);
    assert_eq!(agents[1]["connected"], false);
    assert_eq!(agents[1]["mode"], "offline");
    assert!(agents[1].get("hostname").is_none(), "{body}");
}

#[tokio::test]
async fn a_failing_agent_store_on_list_is_a_500() {
    let mut s = Setup::default();
    s.agents
        .expect_list_agents()
        .times(1)
        .returning(|| Box::pin(async { Err(backend_error()) }));
    let resp = s.serve().get("/api/v1/agents", TECH).send().await;
    assert_internal(resp).await;
}
