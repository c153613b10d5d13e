//! `GET /api/v1/tunnel/{id}/files`: 200 with the whole file, 206 for `Range: bytes=N-` or
//! `bytes=N-M`, 416 for a range past the end,
//! each with its headers and audited once the last byte is handed on; and the error rows.

use bytes::Bytes;
use futures_util::StreamExt as _;
use mockall::predicate::eq;
use poem::http::{HeaderMap, StatusCode};
use poem::test::TestResponse;
use rmm_application::{AgentDownload, AuditAction, FileAudit};

use super::super::{AGENT, SESSION, Setup, TECH, active};
use super::{Op, PATH, SHA, files_url, only_file_entry, record_audit};

error_rows!(Op::Download);

/// The file on the agent.
const FILE: &[u8] = b"hello, world";

/// The agent, asked once from `offset`, sends the file from there in chunks of 5 bytes.
fn agent_sends_from(s: &mut Setup, offset: u64) {
    s.gateway
        .expect_download_file()
        .with(eq(AGENT), eq(SESSION), eq(PATH), eq(offset))
        .times(1)
        .returning(|_, _, _, offset| {
            let rest = Bytes::from_static(FILE).slice(usize::try_from(offset).expect("small")..);
            let chunks: Vec<_> = rest.chunks(5).map(Bytes::copy_from_slice).collect();
            let started = AgentDownload {
                size: FILE.len() as u64,
                sha256: SHA.into(),
                body: Box::pin(futures_util::stream::iter(chunks).map(Ok)),
            };
            Box::pin(async move { Ok(started) })
        });
}

/// The answer's status, headers, and body read to its end.
async fn read(resp: TestResponse) -> (StatusCode, HeaderMap, Bytes) {
    let status = resp.0.status();
    let headers = resp.0.headers().clone();
    let body = resp
        .0
        .into_body()
        .into_bytes()
        .await
        .expect("the body streams to its end");
    (status, headers, body)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .map(|v| v.to_str().expect("an ASCII header"))
}

/// The entry of a download of the whole file that succeeded.
fn downloaded_ok() -> FileAudit {
    FileAudit {
        path: PATH.into(),
        direction: "download".into(),
        size: Some(FILE.len() as u64),
        sha256: Some(SHA.into()),
        result: "ok".into(),
    }
}

#[tokio::test]
async fn answers_200_with_the_whole_file_and_its_sha256_audited_ok() {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    agent_sends_from(&mut s, 0);
    let events = record_audit(&mut s);
    let (status, headers, body) = read(Op::Download.send(&s.serve(), TECH, PATH).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, FILE);
    assert_eq!(header(&headers, "X-Content-SHA256"), Some(SHA));
    assert_eq!(header(&headers, "Content-Length"), Some("12"));
    assert_eq!(header(&headers, "Accept-Ranges"), Some("bytes"));
    assert_eq!(header(&headers, "Content-Range"), None);
    let (action, file) = only_file_entry(&events);
    assert_eq!(action, AuditAction::FileDownload);
    assert_eq!(file, downloaded_ok());
}

#[tokio::test]
async fn answers_206_from_the_requested_byte_with_its_content_range() {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    agent_sends_from(&mut s, 7);
    let events = record_audit(&mut s);
    let server = s.serve();
    let resp = server
        .get(&files_url(), TECH)
        .query("path", &PATH)
        .header("Range", "bytes=7-")
        .send()
        .await;
    let (status, headers, body) = read(resp).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, "world");
    assert_eq!(header(&headers, "Content-Range"), Some("bytes 7-11/12"));
    assert_eq!(header(&headers, "Content-Length"), Some("5"));
    // The SHA-256 is the whole file's, so a resumed download can be checked whole.
    assert_eq!(header(&headers, "X-Content-SHA256"), Some(SHA));
    let (action, file) = only_file_entry(&events);
    assert_eq!(action, AuditAction::FileDownload);
    assert_eq!(file, downloaded_ok());
}

/// A closed range answers 206 with exactly its bytes, cut inside the agent's chunk, and is
/// audited `ok` once its last byte is handed on.
#[tokio::test]
async fn a_closed_range_answers_206_with_exactly_its_bytes() {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    agent_sends_from(&mut s, 2);
    let events = record_audit(&mut s);
    let server = s.serve();
    let resp = server
        .get(&files_url(), TECH)
        .query("path", &PATH)
        .header("Range", "bytes=2-7")
        .send()
        .await;
    let (status, headers, body) = read(resp).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, "llo, w");
    assert_eq!(header(&headers, "Content-Range"), Some("bytes 2-7/12"));
    assert_eq!(header(&headers, "Content-Length"), Some("6"));
    let (action, file) = only_file_entry(&events);
    assert_eq!(action, AuditAction::FileDownload);
    assert_eq!(file, downloaded_ok());
}

/// A range starting at the end answers 416 with the size, audited as refused.
#[tokio::test]
async fn a_range_from_the_end_answers_416_with_the_size() {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    agent_sends_from(&mut s, 12);
    let events = record_audit(&mut s);
    let server = s.serve();
    let resp = server
        .get(&files_url(), TECH)
        .query("path", &PATH)
        .header("Range", "bytes=12-20")
        .send()
        .await;
    let (status, headers, body) = read(resp).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&headers, "Content-Range"), Some("bytes */12"));
    let body: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error");
    assert_eq!(body["code"], "range_not_satisfiable");
    let (action, file) = only_file_entry(&events);
    assert_eq!(action, AuditAction::FileDownload);
    assert!(file.result.contains("past the end"), "{}", file.result);
}

/// A suffix range or several ranges are ignored: the whole file, as 200.
#[tokio::test]
async fn other_range_forms_get_the_whole_file() {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    agent_sends_from(&mut s, 0);
    let _events = record_audit(&mut s);
    let server = s.serve();
    let resp = server
        .get(&files_url(), TECH)
        .query("path", &PATH)
        .header("Range", "bytes=0-1,5-6")
        .send()
        .await;
    let (status, headers, body) = read(resp).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, FILE);
    assert_eq!(header(&headers, "Content-Range"), None);
}
