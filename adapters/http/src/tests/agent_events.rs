//! `GET /api/v1/agents/events`: 401 without a live token (header or `?access_token=`), the
//! first `agents` event as `GET /api/v1/agents` lists for the caller, a 500 when the store
//! fails before the stream starts, 429 `too_many_requests` for a fifth stream of one user.

use futures_util::StreamExt as _;
use poem::http::StatusCode;
use rmm_application::HostFacts;
use rmm_protocol::api::ApiErrorCode;
use serde_json::Value;

use super::agents::record;
use super::{ADMIN, AGENT, Setup, TECH, assert_error, assert_internal, backend_error};

const PATH: &str = "/api/v1/agents/events";

fn listing(s: &mut Setup) {
    s.agents
        .expect_list_agents()
        .returning(|| Box::pin(async { Ok(vec![record(AGENT, "host-1", HostFacts::default())]) }));
    s.gateway.expect_mode().return_const(None);
}

/// The first event's type and JSON, from a streaming answer.
async fn first_event(resp: poem::test::TestResponse) -> (String, Value) {
    let mut body = resp.0.into_body().into_bytes_stream();
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = body.next().await.expect("an event").expect("bytes");
        text.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
    }
    let block = &text[..text.find("\n\n").expect("an event")];
    let mut lines = block.lines();
    let event = lines.next().and_then(|l| l.strip_prefix("event: "));
    let data = lines.next().and_then(|l| l.strip_prefix("data: "));
    let json = serde_json::from_str(data.expect("a data line")).expect("JSON data");
    (event.expect("an event line").to_owned(), json)
}

#[tokio::test]
async fn no_token_or_a_revoked_one_is_401() {
    let server = Setup::default().serve();
    let resp = server.client.get(PATH).send().await;
    assert_error(
        resp,
        StatusCode::UNAUTHORIZED,
        ApiErrorCode::Unauthenticated,
    )
    .await;
    let revoked = Setup {
        revoked_tokens: true,
        ..Setup::default()
    }
    .serve();
    let resp = revoked.get(PATH, TECH).send().await;
    assert_error(resp, StatusCode::UNAUTHORIZED, ApiErrorCode::TokenRevoked).await;
}

#[tokio::test]
async fn the_first_event_is_the_list_as_get_agents_answers_it() {
    let mut s = Setup::default();
    listing(&mut s);
    let server = s.serve();
    let listed = server.get("/api/v1/agents", TECH).send().await;
    let listed: Value = listed.0.into_body().into_json().await.expect("JSON");
    // The token as a query parameter, as EventSource sends it.
    let token = server.token(TECH);
    let resp = server
        .client
        .get(format!("{PATH}?access_token={token}"))
        .send()
        .await;
    resp.assert_status_is_ok();
    resp.assert_content_type("text/event-stream");
    let (event, data) = first_event(resp).await;
    assert_eq!(event, "agents");
    assert_eq!(data, listed);
    assert_eq!(data[0]["name"], "host-1");
    assert_eq!(data[0]["connected"], false);
}

#[tokio::test]
async fn a_failing_store_before_the_stream_is_a_500() {
    let mut s = Setup::default();
    s.agents
        .expect_list_agents()
        .returning(|| Box::pin(async { Err(backend_error()) }));
    let resp = s.serve().get(PATH, TECH).send().await;
    assert_internal(resp).await;
}

#[tokio::test]
async fn a_fifth_stream_of_one_user_is_429() {
    let mut s = Setup::default();
    listing(&mut s);
    let server = s.serve();
    let mut open = Vec::new();
    for _ in 0..4 {
        let resp = server.get(PATH, TECH).send().await;
        resp.assert_status_is_ok();
        open.push(resp);
    }
    let resp = server.get(PATH, TECH).send().await;
    let message = assert_error(
        resp,
        StatusCode::TOO_MANY_REQUESTS,
        ApiErrorCode::TooManyRequests,
    )
    .await;
    assert!(message.contains("at most 4"), "{message}");
    // Another user is counted apart; a closed stream gives its place back.
    server.get(PATH, ADMIN).send().await.assert_status_is_ok();
    drop(open.pop());
    server.get(PATH, TECH).send().await.assert_status_is_ok();
}
