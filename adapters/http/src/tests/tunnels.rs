//! `POST /api/v1/tunnel/open` (200, 400, 404, 409, 503, 504), `POST /api/v1/tunnel/close`
//! (200, 400, 403, 404, 503) and `GET /api/v1/tunnel/status/{id}` (200, 400, 403, 404, 500).

use std::future::Future;
use std::pin::Pin;

use poem::http::StatusCode;
use rmm_application::{AuditAction, GatewayError, OpenReply, StoreError};
use rmm_domain::{AgentMode, CloseReason, SessionStatus};
use rmm_protocol::api::ApiErrorCode;
use serde_json::json;

use super::{
    ADMIN, AGENT, OTHER_TECH, SESSION, Setup, TECH, active, assert_error, assert_internal,
    assert_ok, assert_unavailable, backend_error, closed, now, token_id_of,
};

type Reply = Pin<Box<dyn Future<Output = Result<OpenReply, GatewayError>> + Send>>;

fn open_body() -> serde_json::Value {
    json!({ "agent_id": AGENT.as_uuid() })
}

/// An open as far as the agent: connected, a pending session recorded, `tunnel_open` sent
/// and answered by `reply`.
fn opening(reply: fn() -> Reply) -> Setup {
    let mut s = Setup::default();
    s.gateway
        .expect_mode()
        .withf(|a| *a == AGENT)
        .return_const(Some(AgentMode::Heartbeat));
    s.ids.expect_session_id().times(1).return_const(SESSION);
    s.sessions
        .expect_insert_pending_capped()
        .withf(|sess, token, _| {
            sess.id() == SESSION && sess.owner() == TECH.id && *token == Some(token_id_of(TECH))
        })
        .times(1)
        .returning(|_, _, _| Box::pin(async { Ok(true) }));
    s.gateway
        .expect_open_tunnel()
        .withf(|a, sess, tech| *a == AGENT && *sess == SESSION && *tech == TECH.id)
        .times(1)
        .returning(move |_, _, _| reply());
    s
}

/// The failed open closes the pending session for `reason` with an `action` entry; nothing
/// is activated.
fn closes_as(s: &mut Setup, reason: CloseReason, action: AuditAction) {
    s.sessions
        .expect_close()
        .withf(move |id, r, _, note| *id == SESSION && *r == reason && note.action == action)
        .times(1)
        .returning(move |_, _, _, _| Box::pin(async move { Ok(Some(closed(TECH, reason))) }));
    s.sessions.expect_activate().never();
}

#[tokio::test]
async fn open_answers_once_the_agent_confirms() {
    let mut s = opening(|| Box::pin(async { Ok(OpenReply::Ready) }));
    s.sessions
        .expect_activate()
        .withf(|id, _, note| *id == SESSION && note.action == AuditAction::TunnelOpen)
        .times(1)
        .returning(|_, _, _| Box::pin(async { Ok(true) }));
    let resp = s
        .serve()
        .post("/api/v1/tunnel/open", TECH, &open_body())
        .send()
        .await;
    let body = assert_ok(resp, StatusCode::OK).await;
    assert_eq!(body["session_id"], SESSION.as_uuid().to_string());
    assert_eq!(body["status"], "active");
}

#[tokio::test]
async fn open_with_an_agent_id_that_is_no_uuid_is_invalid_request() {
    let resp = Setup::default()
        .serve()
        .post(
            "/api/v1/tunnel/open",
            TECH,
            &json!({ "agent_id": "host-1" }),
        )
        .send()
        .await;
    assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;
}

#[tokio::test]
async fn open_to_an_offline_agent_is_agent_not_connected() {
    let mut s = Setup::default();
    s.gateway.expect_mode().return_const(None);
    s.sessions.expect_insert_pending_capped().never();
    let resp = s
        .serve()
        .post("/api/v1/tunnel/open", TECH, &open_body())
        .send()
        .await;
    assert_error(resp, StatusCode::NOT_FOUND, ApiErrorCode::AgentNotConnected).await;
}

#[tokio::test]
async fn an_agent_that_drops_during_the_open_is_agent_not_connected() {
    let mut s = opening(|| Box::pin(async { Err(GatewayError::Disconnected) }));
    closes_as(
        &mut s,
        CloseReason::AgentDisconnected,
        AuditAction::TunnelClose,
    );
    let resp = s
        .serve()
        .post("/api/v1/tunnel/open", TECH, &open_body())
        .send()
        .await;
    assert_error(resp, StatusCode::NOT_FOUND, ApiErrorCode::AgentNotConnected).await;
}

/// The agent answered, but its connection closed the session before it could be activated.
#[tokio::test]
async fn a_ready_that_loses_the_race_with_a_disconnect_is_agent_not_connected() {
    let mut s = opening(|| Box::pin(async { Ok(OpenReply::Ready) }));
    s.sessions
        .expect_activate()
        .times(1)
        .returning(|_, _, _| Box::pin(async { Ok(false) }));
    s.gateway
        .expect_close_tunnel()
        .withf(|a, sess| *a == AGENT && *sess == SESSION)
        .times(1)
        .return_const(());
    s.audit.expect_append().never();
    let resp = s
        .serve()
        .post("/api/v1/tunnel/open", TECH, &open_body())
        .send()
        .await;
    assert_error(resp, StatusCode::NOT_FOUND, ApiErrorCode::AgentNotConnected).await;
}

#[tokio::test]
async fn open_when_the_agent_has_a_session_is_session_exists() {
    let mut s = Setup::default();
    s.gateway
        .expect_mode()
        .return_const(Some(AgentMode::Tunnel { session: SESSION }));
    s.ids.expect_session_id().return_const(SESSION);
    s.sessions
        .expect_insert_pending_capped()
        .times(1)
        .returning(|_, _, _| Box::pin(async { Err(StoreError::Conflict) }));
    s.gateway.expect_open_tunnel().never();
    // The refusal names the holder: the caller's own session.
    s.stored_session(active(TECH));
    let resp = s
        .serve()
        .post("/api/v1/tunnel/open", TECH, &open_body())
        .send()
        .await;
    let message = assert_error(resp, StatusCode::CONFLICT, ApiErrorCode::SessionExists).await;
    assert!(
        message.contains(&format!("you already hold session {SESSION}")),
        "{message}"
    );
}

#[tokio::test]
async fn open_while_the_agent_has_an_open_in_flight_is_session_exists() {
    let mut s = opening(|| Box::pin(async { Err(GatewayError::Busy) }));
    closes_as(&mut s, CloseReason::Refused, AuditAction::TunnelRefused);
    // The open in flight has just been answered: nobody the server can name holds it now.
    s.gateway.expect_pending_open().return_const(None);
    let resp = s
        .serve()
        .post("/api/v1/tunnel/open", TECH, &open_body())
        .send()
        .await;
    assert_error(resp, StatusCode::CONFLICT, ApiErrorCode::SessionExists).await;
}

#[tokio::test]
async fn a_refused_open_is_agent_refused_with_the_agents_reason() {
    let mut s =
        opening(|| Box::pin(async { Ok(OpenReply::Refused("tunnels are disabled".into())) }));
    closes_as(&mut s, CloseReason::Refused, AuditAction::TunnelRefused);
    let resp = s
        .serve()
        .post("/api/v1/tunnel/open", TECH, &open_body())
        .send()
        .await;
    let message = assert_error(resp, StatusCode::CONFLICT, ApiErrorCode::AgentRefused).await;
    assert!(message.contains("tunnels are disabled"), "{message}");
}

/// The agent confirmed, but the activation and its entry cannot be recorded: nothing is
/// open, the agent is told to close, and the answer is 503.
#[tokio::test]
async fn an_open_whose_activation_cannot_be_recorded_is_database_unavailable() {
    let mut s = opening(|| Box::pin(async { Ok(OpenReply::Ready) }));
    s.sessions
        .expect_activate()
        .times(1)
        .returning(|_, _, _| Box::pin(async { Err(backend_error()) }));
    s.gateway
        .expect_close_tunnel()
        .withf(|a, sess| *a == AGENT && *sess == SESSION)
        .times(1)
        .return_const(());
    let resp = s
        .serve()
        .post("/api/v1/tunnel/open", TECH, &open_body())
        .send()
        .await;
    assert_unavailable(resp).await;
}

#[tokio::test]
async fn a_failing_session_store_on_open_is_database_unavailable() {
    let mut s = Setup::default();
    s.gateway
        .expect_mode()
        .return_const(Some(AgentMode::Heartbeat));
    s.ids.expect_session_id().return_const(SESSION);
    s.sessions
        .expect_insert_pending_capped()
        .times(1)
        .returning(|_, _, _| Box::pin(async { Err(backend_error()) }));
    s.gateway.expect_open_tunnel().never();
    let resp = s
        .serve()
        .post("/api/v1/tunnel/open", TECH, &open_body())
        .send()
        .await;
    assert_unavailable(resp).await;
}

#[tokio::test]
async fn open_to_a_saturated_agent_is_agent_busy() {
    let mut s = opening(|| Box::pin(async { Err(GatewayError::Overloaded) }));
    closes_as(&mut s, CloseReason::Refused, AuditAction::TunnelRefused);
    let resp = s
        .serve()
        .post("/api/v1/tunnel/open", TECH, &open_body())
        .send()
        .await;
    assert_error(
        resp,
        StatusCode::SERVICE_UNAVAILABLE,
        ApiErrorCode::AgentBusy,
    )
    .await;
}

/// The agent never answers; paused time runs the open timeout out at once.
#[tokio::test(start_paused = true)]
async fn an_unanswered_open_is_agent_timeout_and_abandoned() {
    let mut s = opening(|| Box::pin(std::future::pending()));
    s.gateway
        .expect_abandon_open()
        .withf(|a, sess| *a == AGENT && *sess == SESSION)
        .times(1)
        .return_const(());
    closes_as(&mut s, CloseReason::OpenTimeout, AuditAction::TunnelTimeout);
    let resp = s
        .serve()
        .post("/api/v1/tunnel/open", TECH, &open_body())
        .send()
        .await;
    assert_error(
        resp,
        StatusCode::GATEWAY_TIMEOUT,
        ApiErrorCode::AgentTimeout,
    )
    .await;
}

fn close_body() -> serde_json::Value {
    json!({ "session_id": SESSION.as_uuid() })
}

/// Closing `SESSION` for `reason`: the store closes it with its `tunnel_close` entry, the
/// agent is told and watchers are ended.
fn closing(owner: rmm_domain::Actor, reason: CloseReason) -> Setup {
    let mut s = Setup::default();
    s.stored_session(active(owner));
    s.sessions
        .expect_close()
        .withf(move |id, r, _, note| {
            *id == SESSION
                && *r == reason
                && note.action == AuditAction::TunnelClose
                && note.detail.as_deref() == Some(reason.as_str())
        })
        .times(1)
        .returning(move |_, _, _, _| Box::pin(async move { Ok(Some(closed(owner, reason))) }));
    s.gateway
        .expect_close_tunnel()
        .withf(|a, sess| *a == AGENT && *sess == SESSION)
        .times(1)
        .return_const(());
    s.streams
        .expect_end_session()
        .withf(|sess| *sess == SESSION)
        .times(1)
        .return_const(());
    s
}

#[tokio::test]
async fn the_owner_closes_a_tunnel() {
    let resp = closing(TECH, CloseReason::ClosedByOwner)
        .serve()
        .post("/api/v1/tunnel/close", TECH, &close_body())
        .send()
        .await;
    let body = assert_ok(resp, StatusCode::OK).await;
    assert_eq!(body["status"], "closed");
    assert_eq!(body["session_id"], SESSION.as_uuid().to_string());
    assert_eq!(body["close_reason"], "closed_by_owner");
}

#[tokio::test]
async fn an_admin_closes_anothers_tunnel() {
    let resp = closing(TECH, CloseReason::ClosedByAdmin)
        .serve()
        .post("/api/v1/tunnel/close", ADMIN, &close_body())
        .send()
        .await;
    let body = assert_ok(resp, StatusCode::OK).await;
    assert_eq!(body["close_reason"], "closed_by_admin");
}

#[tokio::test]
async fn closing_a_closed_tunnel_answers_its_state() {
    let mut s = Setup::default();
    s.stored_session(closed(TECH, CloseReason::Idle));
    s.sessions
        .expect_close()
        .times(1)
        .returning(|_, _, _, _| Box::pin(async { Ok(None) }));
    s.gateway.expect_close_tunnel().never();
    s.audit.expect_append().never();
    let resp = s
        .serve()
        .post("/api/v1/tunnel/close", TECH, &close_body())
        .send()
        .await;
    let body = assert_ok(resp, StatusCode::OK).await;
    assert_eq!(body["status"], "closed");
    assert_eq!(body["close_reason"], "idle");
}

#[tokio::test]
async fn close_with_a_session_id_that_is_no_uuid_is_invalid_request() {
    let resp = Setup::default()
        .serve()
        .post("/api/v1/tunnel/close", TECH, &json!({ "session_id": 5 }))
        .send()
        .await;
    assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;
}

#[tokio::test]
async fn another_technician_may_not_close_a_tunnel() {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    s.sessions.expect_close().never();
    let resp = s
        .serve()
        .post("/api/v1/tunnel/close", OTHER_TECH, &close_body())
        .send()
        .await;
    assert_error(resp, StatusCode::FORBIDDEN, ApiErrorCode::Forbidden).await;
}

#[tokio::test]
async fn closing_an_unknown_session_is_session_not_found() {
    let mut s = Setup::default();
    s.no_session();
    s.sessions.expect_close().never();
    let resp = s
        .serve()
        .post("/api/v1/tunnel/close", TECH, &close_body())
        .send()
        .await;
    assert_error(resp, StatusCode::NOT_FOUND, ApiErrorCode::SessionNotFound).await;
}

#[tokio::test]
async fn a_failing_session_store_on_close_is_database_unavailable() {
    let mut s = Setup::default();
    s.sessions
        .expect_get()
        .returning(|_| Box::pin(async { Err(backend_error()) }));
    let resp = s
        .serve()
        .post("/api/v1/tunnel/close", TECH, &close_body())
        .send()
        .await;
    assert_unavailable(resp).await;
}

/// The close and its entry cannot be recorded: the session stays open (the agent is not
/// told) and the answer is 503.
#[tokio::test]
async fn a_close_that_cannot_be_recorded_is_database_unavailable_and_keeps_the_tunnel() {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    s.sessions
        .expect_close()
        .times(1)
        .returning(|_, _, _, _| Box::pin(async { Err(backend_error()) }));
    s.gateway.expect_close_tunnel().never();
    let resp = s
        .serve()
        .post("/api/v1/tunnel/close", TECH, &close_body())
        .send()
        .await;
    assert_unavailable(resp).await;
}

fn status_path() -> String {
    format!("/api/v1/tunnel/status/{}", SESSION.as_uuid())
}

#[tokio::test]
async fn the_owner_reads_an_active_sessions_status() {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    let resp = s.serve().get(&status_path(), TECH).send().await;
    let body = assert_ok(resp, StatusCode::OK).await;
    assert_eq!(body["session_id"], SESSION.as_uuid().to_string());
    assert_eq!(body["agent_id"], AGENT.as_uuid().to_string());
    assert_eq!(body["status"], SessionStatus::Active.as_str());
    assert!(body.get("closed_at").is_none(), "{body}");
    assert!(body.get("close_reason").is_none(), "{body}");
}

#[tokio::test]
async fn a_closed_sessions_status_says_when_and_why() {
    let mut s = Setup::default();
    s.stored_session(closed(TECH, CloseReason::AgentDisconnected));
    let resp = s.serve().get(&status_path(), TECH).send().await;
    let body = assert_ok(resp, StatusCode::OK).await;
    assert_eq!(body["status"], "closed");
    assert_eq!(body["close_reason"], "agent_disconnected");
    let closed_at = crate::to_datetime(now());
    assert_eq!(
        body["closed_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()),
        Some(closed_at.fixed_offset()),
        "{body}"
    );
}

#[tokio::test]
async fn status_with_a_session_id_that_is_no_uuid_is_invalid_request() {
    let resp = Setup::default()
        .serve()
        .get("/api/v1/tunnel/status/not-a-uuid", TECH)
        .send()
        .await;
    let message = assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;
    // The spec's name, not the router's internal `param0`.
    assert!(message.contains("`session_id`"), "{message}");
    assert!(!message.contains("param0"), "{message}");
}

#[tokio::test]
async fn neither_another_technician_nor_an_admin_reads_a_sessions_status() {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    let server = s.serve();
    for actor in [OTHER_TECH, ADMIN] {
        let resp = server.get(&status_path(), actor).send().await;
        assert_error(resp, StatusCode::FORBIDDEN, ApiErrorCode::Forbidden).await;
    }
}

#[tokio::test]
async fn status_of_an_unknown_session_is_session_not_found() {
    let mut s = Setup::default();
    s.no_session();
    let resp = s.serve().get(&status_path(), TECH).send().await;
    assert_error(resp, StatusCode::NOT_FOUND, ApiErrorCode::SessionNotFound).await;
}

#[tokio::test]
async fn a_failing_session_store_on_status_is_a_500() {
    let mut s = Setup::default();
    s.sessions
        .expect_get()
        .returning(|_| Box::pin(async { Err(backend_error()) }));
    let resp = s.serve().get(&status_path(), TECH).send().await;
    assert_internal(resp).await;
}
