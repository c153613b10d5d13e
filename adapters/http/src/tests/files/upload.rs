//! `PUT /api/v1/tunnel/{id}/files`: 201 with what the agent wrote, audited; 400
//! `transfer_aborted` for a body that breaks off; and the error rows.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{FutureExt as _, StreamExt as _};
use poem::http::StatusCode;
use rmm_application::{AuditAction, ByteStream, FileAudit, FileOpError, UploadRequest, Uploaded};
use rmm_domain::FileErrorCode;
use rmm_protocol::api::ApiErrorCode;
use serde_json::json;

use super::super::{AGENT, SESSION, Setup, TECH, active, assert_error, assert_ok};
use super::{Op, PATH, SHA, files_url, only_file_entry, record_audit};

error_rows!(Op::Upload);

/// Reads the whole request body as the gateway would; an in-memory body is ready at once.
fn read_now(body: &mut ByteStream) -> Result<Vec<u8>, std::io::Error> {
    let mut all = Vec::new();
    while let Some(chunk) = body.next().now_or_never().expect("the body is in memory") {
        all.extend_from_slice(&chunk?);
    }
    Ok(all)
}

/// The gateway, asked once with `expected`, takes the whole body and confirms it written;
/// the bytes it received are returned.
fn agent_writes(s: &mut Setup, expected: UploadRequest, size: u64) -> Arc<Mutex<Vec<u8>>> {
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&received);
    s.gateway
        .expect_upload_file()
        .withf(move |agent, session, upload, _| {
            (*agent, *session) == (AGENT, SESSION) && *upload == expected
        })
        .times(1)
        .returning(move |_, _, upload, body| {
            let bytes = read_now(body).expect("the body is whole");
            sink.lock().expect("not poisoned").extend(bytes);
            let done = Uploaded {
                path: upload.path.clone(),
                size,
                sha256: SHA.into(),
            };
            Box::pin(async move { Ok(done) })
        });
    received
}

#[tokio::test]
async fn answers_201_with_the_file_the_agent_wrote_audited_ok() {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    let expected = UploadRequest {
        path: PATH.into(),
        offset: 0,
        sha256: None,
    };
    let received = agent_writes(&mut s, expected, 12);
    let events = record_audit(&mut s);
    let resp = Op::Upload.send(&s.serve(), TECH, PATH).await;
    let body = assert_ok(resp, StatusCode::CREATED).await;
    assert_eq!(body, json!({ "path": PATH, "size": 12, "sha256": SHA }));
    assert_eq!(*received.lock().expect("not poisoned"), b"hello, world");
    let (action, file) = only_file_entry(&events);
    assert_eq!(action, AuditAction::FileUpload);
    assert_eq!(
        file,
        FileAudit {
            path: PATH.into(),
            direction: "upload".into(),
            size: Some(12),
            sha256: Some(SHA.into()),
            result: "ok".into(),
        }
    );
}

/// A resume: `offset` and the whole file's `sha256` reach the agent; the body is the rest.
#[tokio::test]
async fn a_resumed_upload_passes_its_offset_and_sha256_to_the_agent() {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    let expected = UploadRequest {
        path: PATH.into(),
        offset: 7,
        sha256: Some(SHA.into()),
    };
    let received = agent_writes(&mut s, expected, 12);
    s.audit
        .expect_append()
        .times(1)
        .returning(|_| Box::pin(async { Ok(()) }));
    let server = s.serve();
    let resp = server
        .client
        .put(files_url())
        .header("Authorization", format!("Bearer {}", server.token(TECH)))
        .query("path", &PATH)
        .query("offset", &7)
        .query("sha256", &SHA)
        .body("world")
        .send()
        .await;
    let body = assert_ok(resp, StatusCode::CREATED).await;
    assert_eq!(body["size"], 12);
    assert_eq!(*received.lock().expect("not poisoned"), b"world");
}

/// The agent's refusal is audited with its code and message, and nothing of a size or
/// SHA-256.
#[tokio::test]
async fn an_upload_the_agent_refuses_is_audited_with_its_code() {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    s.gateway
        .expect_upload_file()
        .times(1)
        .returning(|_, _, _, _| {
            Box::pin(async {
                Err(FileOpError::Agent {
                    code: FileErrorCode::DiskFull,
                    message: "no space left on /srv".into(),
                })
            })
        });
    let events = record_audit(&mut s);
    let resp = Op::Upload.send(&s.serve(), TECH, PATH).await;
    assert_error(
        resp,
        StatusCode::INSUFFICIENT_STORAGE,
        ApiErrorCode::DiskFull,
    )
    .await;
    let (action, file) = only_file_entry(&events);
    assert_eq!(action, AuditAction::FileUpload);
    assert_eq!(
        file,
        FileAudit {
            path: PATH.into(),
            direction: "upload".into(),
            size: None,
            sha256: None,
            result: "disk_full: no space left on /srv".into(),
        }
    );
}

/// The client's body breaks off after its first chunk: the gateway reports it, the answer
/// is 400 `transfer_aborted`, and the entry says `aborted`. Paused time: what is left of the body
/// is drained within a bounded wait.
#[tokio::test(start_paused = true)]
async fn a_body_that_breaks_off_is_transfer_aborted_and_audited() {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    s.gateway
        .expect_upload_file()
        .times(1)
        .returning(|_, _, _, body| {
            let e = read_now(body).expect_err("the body breaks off");
            Box::pin(async move { Err(FileOpError::ClientAborted(e.to_string())) })
        });
    let events = record_audit(&mut s);
    let server = s.serve();
    let broken = futures_util::stream::iter([
        Ok(Bytes::from_static(b"hello")),
        Err(std::io::Error::other("connection reset")),
    ]);
    let resp = server
        .client
        .put(files_url())
        .header("Authorization", format!("Bearer {}", server.token(TECH)))
        .query("path", &PATH)
        .body(poem::Body::from_bytes_stream(broken))
        .send()
        .await;
    let message = assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::TransferAborted).await;
    assert!(message.contains("connection reset"), "{message}");
    let (_, file) = only_file_entry(&events);
    assert_eq!(file.result, "aborted");
}
