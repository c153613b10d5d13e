//! Reading commands: `GET .../commands/{id}` and `DELETE .../commands/{id}` (200, 400, 403,
//! 404 `command_not_found` vs `session_not_found`, 500 on reads, 503 `database_unavailable` on
//! a cancel) and the raw `.../stdout` and
//! `.../stderr` (200 bytes, 400, 403, 404, 500).

use poem::http::StatusCode;
use rmm_application::{CommandRecord, OutputStream, StoreError};
use rmm_domain::{ChannelId, CloseReason, CommandEndReason, CommandStatus, SessionId};
use rmm_protocol::api::ApiErrorCode;

use super::{
    ADMIN, AGENT, COMMAND, OTHER_SESSION, OTHER_TECH, SESSION, Setup, TECH, active, assert_error,
    assert_internal, assert_ok, assert_unavailable, backend_error, now,
};

fn path() -> String {
    format!(
        "/api/v1/tunnel/{}/commands/{}",
        SESSION.as_uuid(),
        COMMAND.as_uuid()
    )
}

/// `COMMAND` as stored, in `session`, completed with exit code 0.
fn record(session: SessionId) -> CommandRecord {
    CommandRecord {
        id: COMMAND,
        session,
        agent: AGENT,
        owner: TECH.id,
        channel: ChannelId::for_command(COMMAND),
        text: "uptime".into(),
        timeout_secs: 60,
        status: CommandStatus::Completed,
        exit_code: Some(0),
        signal: None,
        end_reason: None,
        started_at: now(),
        finished_at: Some(now()),
        stdout_bytes: 12,
        stderr_bytes: 5,
        stdout_truncated: false,
        stderr_truncated: false,
        output_pruned: false,
    }
}

type Stored = fn() -> Result<Option<CommandRecord>, StoreError>;

/// The owner's active session holds `stored` (read as often as the use case needs).
fn with_command(stored: Stored) -> Setup {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    s.commands
        .expect_get_command()
        .withf(|id| *id == COMMAND)
        .returning(move |_| Box::pin(async move { stored() }));
    s
}

/// The store's chunks of `stream`, read whole (as the JSON answer reads them).
fn output(s: &mut Setup, stream: OutputStream, chunks: &'static [&'static [u8]]) {
    s.commands
        .expect_read_output()
        .withf(move |id, st, from, _| *id == COMMAND && *st == stream && *from == 0)
        .times(1)
        .returning(move |_, _, _, _| {
            let chunks = (0u64..).zip(chunks.iter().map(|c| c.to_vec())).collect();
            Box::pin(async move { Ok(chunks) })
        });
}

fn completed() -> Setup {
    let mut s = with_command(|| Ok(Some(record(SESSION))));
    output(&mut s, OutputStream::Stdout, &[b"hello ", b"world\n"]);
    output(&mut s, OutputStream::Stderr, &[b"warn\n"]);
    s
}

fn assert_completed(body: &serde_json::Value) {
    assert_eq!(body["command_id"], COMMAND.as_uuid().to_string());
    assert_eq!(body["session_id"], SESSION.as_uuid().to_string());
    assert_eq!(body["command"], "uptime");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["exit_code"], 0);
    // A completion has no end reason.
    assert_eq!(body.get("end_reason"), None);
    assert_eq!(body["stdout"], "hello world\n");
    assert_eq!(body["stderr"], "warn\n");
    assert_eq!(body["stdout_bytes"], 12);
    assert_eq!(body["stdout_truncated"], false);
}

#[tokio::test]
async fn the_owner_reads_a_command_with_its_output() {
    let resp = completed().serve().get(&path(), TECH).send().await;
    let body = assert_ok(resp, StatusCode::OK).await;
    assert_completed(&body);
}

#[tokio::test]
async fn a_command_whose_agent_went_away_reads_failed_with_the_reason() {
    let mut s = with_command(|| {
        Ok(Some(CommandRecord {
            status: CommandStatus::Failed,
            exit_code: None,
            end_reason: Some(CommandEndReason::SessionClosed(
                CloseReason::AgentDisconnected,
            )),
            ..record(SESSION)
        }))
    });
    output(&mut s, OutputStream::Stdout, &[]);
    output(&mut s, OutputStream::Stderr, &[]);
    let resp = s.serve().get(&path(), TECH).send().await;
    let body = assert_ok(resp, StatusCode::OK).await;
    assert_eq!(body["status"], "failed");
    assert_eq!(body["end_reason"], "agent_disconnected");
    assert_eq!(body["exit_code"], serde_json::Value::Null);
}

#[tokio::test]
async fn waiting_for_a_command_that_has_ended_answers_at_once() {
    let resp = completed()
        .serve()
        .get(&format!("{}?wait=300", path()), TECH)
        .send()
        .await;
    let body = assert_ok(resp, StatusCode::OK).await;
    assert_completed(&body);
}

#[tokio::test]
async fn cancelling_an_ended_command_answers_it_as_it_is() {
    let mut s = completed();
    s.gateway.expect_cancel_command().never();
    let resp = s.serve().delete(&path(), TECH).send().await;
    let body = assert_ok(resp, StatusCode::OK).await;
    assert_completed(&body);
}

#[tokio::test]
async fn a_command_id_that_is_no_uuid_is_invalid_request() {
    let server = Setup::default().serve();
    let bad = format!("/api/v1/tunnel/{}/commands/42", SESSION.as_uuid());
    for resp in [
        server.get(&bad, TECH).send().await,
        server.delete(&bad, TECH).send().await,
        server.get(&format!("{bad}/stdout"), TECH).send().await,
        server
            .get(&format!("{}?wait=soon", path()), TECH)
            .send()
            .await,
    ] {
        assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;
    }
}

#[tokio::test]
async fn only_the_owner_reads_or_cancels_a_command() {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    s.commands.expect_get_command().never();
    let server = s.serve();
    for actor in [OTHER_TECH, ADMIN] {
        for resp in [
            server.get(&path(), actor).send().await,
            server.delete(&path(), actor).send().await,
            server
                .get(&format!("{}/stdout", path()), actor)
                .send()
                .await,
        ] {
            assert_error(resp, StatusCode::FORBIDDEN, ApiErrorCode::Forbidden).await;
        }
    }
}

#[tokio::test]
async fn a_command_of_an_unknown_session_is_session_not_found() {
    let mut s = Setup::default();
    s.no_session();
    s.commands.expect_get_command().never();
    let server = s.serve();
    for resp in [
        server.get(&path(), TECH).send().await,
        server.delete(&path(), TECH).send().await,
        server.get(&format!("{}/stderr", path()), TECH).send().await,
    ] {
        assert_error(resp, StatusCode::NOT_FOUND, ApiErrorCode::SessionNotFound).await;
    }
}

#[tokio::test]
async fn an_unknown_command_is_command_not_found() {
    let server = with_command(|| Ok(None)).serve();
    for resp in [
        server.get(&path(), TECH).send().await,
        server.delete(&path(), TECH).send().await,
        server.get(&format!("{}/stdout", path()), TECH).send().await,
    ] {
        assert_error(resp, StatusCode::NOT_FOUND, ApiErrorCode::CommandNotFound).await;
    }
}

/// A command id is only found through its own session.
#[tokio::test]
async fn a_command_of_another_session_is_command_not_found() {
    let mut s = with_command(|| Ok(Some(record(OTHER_SESSION))));
    s.commands.expect_read_output().never();
    let server = s.serve();
    for resp in [
        server.get(&path(), TECH).send().await,
        server.get(&format!("{}/stdout", path()), TECH).send().await,
    ] {
        assert_error(resp, StatusCode::NOT_FOUND, ApiErrorCode::CommandNotFound).await;
    }
}

#[tokio::test]
async fn a_failing_command_store_is_a_500_on_reads_and_database_unavailable_on_cancel() {
    let server = with_command(|| Err(backend_error())).serve();
    for resp in [
        server.get(&path(), TECH).send().await,
        server.get(&format!("{}/stdout", path()), TECH).send().await,
    ] {
        assert_internal(resp).await;
    }
    assert_unavailable(server.delete(&path(), TECH).send().await).await;
}

#[tokio::test]
async fn a_failing_output_read_is_a_500() {
    let mut s = with_command(|| Ok(Some(record(SESSION))));
    s.commands
        .expect_read_output()
        .returning(|_, _, _, _| Box::pin(async { Err(backend_error()) }));
    let server = s.serve();
    for resp in [
        server.get(&path(), TECH).send().await,
        server.get(&format!("{}/stdout", path()), TECH).send().await,
    ] {
        assert_internal(resp).await;
    }
}

/// The raw answer for a stream stored as `chunks`, which the handler must read from the store
/// in exactly `reads` pages.
async fn raw(
    stream: OutputStream,
    chunks: Vec<Vec<u8>>,
    reads: usize,
) -> (StatusCode, Option<String>, Vec<u8>) {
    let mut s = with_command(|| Ok(Some(record(SESSION))));
    s.commands
        .expect_read_output()
        .withf(move |id, st, _, _| *id == COMMAND && *st == stream)
        .times(reads)
        .returning(move |_, _, from, limit| {
            let page: Vec<(u64, Vec<u8>)> = (0u64..)
                .zip(chunks.iter().cloned())
                .skip(usize::try_from(from).unwrap_or(usize::MAX))
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
                .collect();
            Box::pin(async move { Ok(page) })
        });
    let resp = s
        .serve()
        .get(&format!("{}/{}", path(), stream.as_str()), TECH)
        .send()
        .await;
    let status = resp.0.status();
    let content_type = resp.0.content_type().map(str::to_owned);
    let bytes = resp
        .0
        .into_body()
        .into_vec()
        .await
        .expect("the body is read whole");
    (status, content_type, bytes)
}

#[tokio::test]
async fn raw_stdout_is_the_exact_bytes() {
    let (status, content_type, bytes) = raw(
        OutputStream::Stdout,
        vec![vec![0xff, 0x00, b'a'], b"\xc3(\n".to_vec()],
        1,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some("application/octet-stream"));
    assert_eq!(bytes, b"\xff\x00a\xc3(\n");
}

#[tokio::test]
async fn raw_stderr_is_the_exact_bytes() {
    let (status, _, bytes) = raw(OutputStream::Stderr, vec![b"oops\n".to_vec()], 1).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, b"oops\n");
}

/// More chunks than one read takes (16): the handler pages through all of them.
#[tokio::test]
async fn long_raw_output_is_streamed_whole() {
    let chunks: Vec<Vec<u8>> = (0u8..40).map(|i| vec![i; 3]).collect();
    let expected: Vec<u8> = chunks.concat();
    let (status, _, bytes) = raw(OutputStream::Stdout, chunks, 3).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, expected);
}

#[tokio::test]
async fn a_command_without_output_has_an_empty_raw_body() {
    let (status, _, bytes) = raw(OutputStream::Stdout, Vec::new(), 1).await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes.is_empty());
}
