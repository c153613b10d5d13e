//! `POST /api/v1/tunnel/{id}/command`: 202, 400, 403, 404, 409 (`session_not_active`,
//! `agent_not_connected`, `channel_busy`), 503 (`agent_busy`, `database_unavailable`); and
//! `DELETE .../commands/{id}` (cancel): 200, 503 `database_unavailable`.

use poem::http::StatusCode;
use rmm_application::{AuditAction, GatewayError};
use rmm_domain::{ChannelId, CloseReason, CommandEndReason, CommandStatus};
use rmm_protocol::api::ApiErrorCode;
use serde_json::json;

use super::{
    ADMIN, AGENT, COMMAND, OTHER_TECH, SESSION, Setup, TECH, active, assert_error, assert_ok,
    assert_unavailable, backend_error, closed,
};

fn path() -> String {
    format!("/api/v1/tunnel/{}/command", SESSION.as_uuid())
}

fn body() -> serde_json::Value {
    json!({ "command": "uptime", "timeout_secs": 60 })
}

fn channel() -> ChannelId {
    ChannelId::for_command(COMMAND)
}

/// A command in the owner's active session, stored with its audit entry; the gateway's
/// `send` answers.
fn sending(send: fn() -> Result<(), GatewayError>) -> Setup {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    s.ids.expect_command_id().times(1).return_const(COMMAND);
    s.commands
        .expect_insert_command()
        .withf(|r, e| {
            r.id == COMMAND
                && r.session == SESSION
                && r.text == "uptime"
                && r.timeout_secs == 60
                && r.status == CommandStatus::Running
                && e.action == AuditAction::Command
                && e.session == Some(SESSION)
                && e.command.as_ref().is_some_and(|c| {
                    c.command_id == Some(COMMAND)
                        && c.text.as_deref() == Some("uptime")
                        && c.status.as_deref() == Some("running")
                })
        })
        .times(1)
        .returning(|_, _| Box::pin(async { Ok(()) }));
    s.gateway
        .expect_send_command()
        .withf(|agent, session, ch, text, timeout, stdin| {
            *agent == AGENT
                && *session == SESSION
                && *ch == ChannelId::for_command(COMMAND)
                && text == "uptime"
                && *timeout == 60
                && !*stdin
        })
        .times(1)
        .returning(move |_, _, _, _, _, _| send());
    s
}

/// The gateway could not send: the command ends as failed, stored with its audit entry.
fn ends_failed(s: &mut Setup) {
    s.gateway
        .expect_release_channel()
        .withf(|agent, ch| *agent == AGENT && *ch == ChannelId::for_command(COMMAND))
        .times(1)
        .return_const(());
    s.commands
        .expect_finish_command()
        .withf(|id, outcome, e| {
            *id == COMMAND
                && outcome.status == CommandStatus::Failed
                && outcome.end_reason == Some(CommandEndReason::NotDelivered)
                && e.action == AuditAction::CommandEnd
                && e.detail.as_deref() == Some("not_delivered")
                && e.command.as_ref().and_then(|c| c.status.as_deref()) == Some("failed")
        })
        .times(1)
        .returning(|_, _, _| Box::pin(async { Ok(true) }));
}

#[tokio::test]
async fn a_command_is_accepted_once_audited_stored_and_sent() {
    let resp = sending(|| Ok(()))
        .serve()
        .post(&path(), TECH, &body())
        .send()
        .await;
    let body = assert_ok(resp, StatusCode::ACCEPTED).await;
    assert_eq!(body["command_id"], COMMAND.as_uuid().to_string());
    assert_eq!(body["channel_id"], channel().as_str());
    assert_eq!(body["timeout_secs"], 60);
}

#[tokio::test]
async fn a_command_without_a_timeout_gets_the_default() {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    s.ids.expect_command_id().return_const(COMMAND);
    s.commands
        .expect_insert_command()
        .withf(|r, _| r.timeout_secs == 300)
        .times(1)
        .returning(|_, _| Box::pin(async { Ok(()) }));
    s.gateway
        .expect_send_command()
        .withf(|_, _, _, _, timeout, _| *timeout == 300)
        .times(1)
        .returning(|_, _, _, _, _, _| Ok(()));
    let resp = s
        .serve()
        .post(&path(), TECH, &json!({ "command": "uptime" }))
        .send()
        .await;
    let body = assert_ok(resp, StatusCode::ACCEPTED).await;
    assert_eq!(body["timeout_secs"], 300);
}

/// Checked before any port is called (no mock expects a call).
#[tokio::test]
async fn an_invalid_command_or_timeout_is_invalid_request() {
    let server = Setup::default().serve();
    for body in [
        json!({ "command": "   " }),
        json!({ "command": "a\u{0}b" }),
        json!({ "command": "x".repeat(64 * 1024 + 1) }),
        json!({ "command": "uptime", "timeout_secs": 0 }),
        json!({ "command": "uptime", "timeout_secs": 24 * 3600 + 1 }),
        json!({ "command": "uptime", "timeout_secs": -1 }),
        json!({ "timeout_secs": 5 }),
    ] {
        let resp = server.post(&path(), TECH, &body).send().await;
        assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;
    }
    let resp = server
        .post("/api/v1/tunnel/not-a-uuid/command", TECH, &body())
        .send()
        .await;
    let message = assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;
    assert!(message.contains("`session_id`"), "{message}");
}

#[tokio::test]
async fn only_the_owner_runs_commands_in_a_session() {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    s.audit.expect_append().never();
    let server = s.serve();
    for actor in [OTHER_TECH, ADMIN] {
        let resp = server.post(&path(), actor, &body()).send().await;
        assert_error(resp, StatusCode::FORBIDDEN, ApiErrorCode::Forbidden).await;
    }
}

#[tokio::test]
async fn a_command_in_an_unknown_session_is_session_not_found() {
    let mut s = Setup::default();
    s.no_session();
    let resp = s.serve().post(&path(), TECH, &body()).send().await;
    assert_error(resp, StatusCode::NOT_FOUND, ApiErrorCode::SessionNotFound).await;
}

#[tokio::test]
async fn a_command_in_a_closed_session_is_session_not_active() {
    let mut s = Setup::default();
    s.stored_session(closed(TECH, CloseReason::ClosedByOwner));
    s.audit.expect_append().never();
    let resp = s.serve().post(&path(), TECH, &body()).send().await;
    assert_error(resp, StatusCode::CONFLICT, ApiErrorCode::SessionNotActive).await;
}

#[tokio::test]
async fn a_command_to_a_gone_agent_is_agent_not_connected_and_ends_failed() {
    let mut s = sending(|| Err(GatewayError::NotConnected));
    ends_failed(&mut s);
    let resp = s.serve().post(&path(), TECH, &body()).send().await;
    assert_error(resp, StatusCode::CONFLICT, ApiErrorCode::AgentNotConnected).await;
}

#[tokio::test]
async fn a_command_on_a_taken_channel_is_channel_busy_and_ends_failed() {
    let mut s = sending(|| Err(GatewayError::Busy));
    ends_failed(&mut s);
    let resp = s.serve().post(&path(), TECH, &body()).send().await;
    assert_error(resp, StatusCode::CONFLICT, ApiErrorCode::ChannelBusy).await;
}

#[tokio::test]
async fn a_session_store_that_cannot_be_read_is_database_unavailable_and_nothing_is_sent() {
    let mut s = Setup::default();
    s.sessions
        .expect_get()
        .returning(|_| Box::pin(async { Err(backend_error()) }));
    s.commands.expect_insert_command().never();
    s.gateway.expect_send_command().never();
    let resp = s.serve().post(&path(), TECH, &body()).send().await;
    assert_unavailable(resp).await;
}

#[tokio::test]
async fn a_command_to_a_saturated_agent_is_agent_busy() {
    let mut s = sending(|| Err(GatewayError::Overloaded));
    ends_failed(&mut s);
    let resp = s.serve().post(&path(), TECH, &body()).send().await;
    assert_error(
        resp,
        StatusCode::SERVICE_UNAVAILABLE,
        ApiErrorCode::AgentBusy,
    )
    .await;
}

#[tokio::test]
async fn a_command_that_cannot_be_recorded_with_its_entry_is_refused_as_database_unavailable() {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    s.ids.expect_command_id().return_const(COMMAND);
    s.commands
        .expect_insert_command()
        .times(1)
        .returning(|_, _| Box::pin(async { Err(backend_error()) }));
    s.gateway.expect_send_command().never();
    let resp = s.serve().post(&path(), TECH, &body()).send().await;
    assert_unavailable(resp).await;
}

fn command_path() -> String {
    format!(
        "/api/v1/tunnel/{}/commands/{}",
        SESSION.as_uuid(),
        COMMAND.as_uuid()
    )
}

/// After the run, the store answers `COMMAND` as `status` (for `end_reason`), with no output.
fn stored_as(s: &mut Setup, status: CommandStatus, end_reason: Option<CommandEndReason>) {
    s.commands
        .expect_get_command()
        .withf(|id| *id == COMMAND)
        .returning(move |_| {
            let record = rmm_application::CommandRecord {
                id: COMMAND,
                session: SESSION,
                agent: AGENT,
                owner: TECH.id,
                channel: ChannelId::for_command(COMMAND),
                text: "uptime".into(),
                timeout_secs: 60,
                status,
                exit_code: None,
                signal: None,
                end_reason,
                started_at: super::now(),
                finished_at: None,
                stdout_bytes: 0,
                stderr_bytes: 0,
                stdout_truncated: false,
                stderr_truncated: false,
                output_pruned: false,
            };
            Box::pin(async move { Ok(Some(record)) })
        });
    s.commands
        .expect_read_output()
        .returning(|_, _, _, _| Box::pin(async { Ok(Vec::new()) }));
}

/// An agent that cannot cancel (too old, or gone): the server ends the command as cancelled.
#[tokio::test]
async fn cancelling_a_running_command_the_agent_cannot_cancel_ends_it_as_cancelled() {
    let mut s = sending(|| Ok(()));
    s.gateway
        .expect_cancel_command()
        .withf(|agent, ch| *agent == AGENT && *ch == ChannelId::for_command(COMMAND))
        .times(1)
        .return_const(false);
    s.gateway.expect_release_channel().times(1).return_const(());
    s.commands
        .expect_finish_command()
        .withf(|id, outcome, e| {
            *id == COMMAND
                && outcome.status == CommandStatus::Cancelled
                && outcome.end_reason == Some(CommandEndReason::CancelledByUser)
                && e.action == AuditAction::CommandEnd
                && e.command.as_ref().and_then(|c| c.status.as_deref()) == Some("cancelled")
        })
        .times(1)
        .returning(|_, _, _| Box::pin(async { Ok(true) }));
    stored_as(
        &mut s,
        CommandStatus::Cancelled,
        Some(CommandEndReason::CancelledByUser),
    );
    let server = s.serve();
    let resp = server.post(&path(), TECH, &body()).send().await;
    assert_ok(resp, StatusCode::ACCEPTED).await;
    let resp = server.delete(&command_path(), TECH).send().await;
    let body = assert_ok(resp, StatusCode::OK).await;
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["end_reason"], "cancelled_by_user");
}

/// The agent is asked and never reports the end: the answer comes after the 10 s wait (paused
/// time), with the command as stored.
#[tokio::test(start_paused = true)]
async fn cancelling_a_command_whose_agent_stays_silent_answers_after_the_wait() {
    let mut s = sending(|| Ok(()));
    s.gateway
        .expect_cancel_command()
        .times(1)
        .return_const(true);
    s.commands.expect_finish_command().never();
    stored_as(&mut s, CommandStatus::Running, None);
    let server = s.serve();
    let resp = server.post(&path(), TECH, &body()).send().await;
    assert_ok(resp, StatusCode::ACCEPTED).await;
    let started = tokio::time::Instant::now();
    let resp = server.delete(&command_path(), TECH).send().await;
    let body = assert_ok(resp, StatusCode::OK).await;
    assert_eq!(body["status"], "running");
    assert_eq!(body.get("end_reason"), None);
    assert!(started.elapsed() >= std::time::Duration::from_secs(10));
}

/// The agent cannot cancel and the store refuses the end: 503, and the command is not
/// answered as cancelled.
#[tokio::test]
async fn a_cancel_whose_end_cannot_be_recorded_is_database_unavailable() {
    let mut s = sending(|| Ok(()));
    s.gateway
        .expect_cancel_command()
        .times(1)
        .return_const(false);
    s.gateway.expect_release_channel().times(1).return_const(());
    s.commands
        .expect_finish_command()
        .times(1)
        .returning(|_, _, _| Box::pin(async { Err(backend_error()) }));
    let server = s.serve();
    let resp = server.post(&path(), TECH, &body()).send().await;
    assert_ok(resp, StatusCode::ACCEPTED).await;
    let resp = server.delete(&command_path(), TECH).send().await;
    assert_unavailable(resp).await;
}
