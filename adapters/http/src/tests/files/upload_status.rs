//! `GET /api/v1/tunnel/{id}/files/upload-status`: 200 with the bytes held, and the error
//! rows.

use poem::http::StatusCode;
use serde_json::json;

use super::super::{AGENT, SESSION, Setup, TECH, active, assert_ok};
use super::{Op, PATH};

error_rows!(Op::Status);

#[tokio::test]
async fn answers_200_with_the_bytes_the_agent_holds_unaudited() {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    s.gateway
        .expect_upload_status()
        .withf(|agent, session, path| (*agent, *session, path) == (AGENT, SESSION, PATH))
        .times(1)
        .returning(|_, _, _| Box::pin(async { Ok(4096) }));
    s.audit.expect_append().never();
    let resp = Op::Status.send(&s.serve(), TECH, PATH).await;
    let body = assert_ok(resp, StatusCode::OK).await;
    assert_eq!(body, json!({ "path": PATH, "received": 4096 }));
}
