//! File transfers as use cases: the access check, the gateway port asked, and the audit
//! entry of every transfer with its result.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use futures_util::{FutureExt as _, StreamExt as _};
use mockall::predicate::eq;
use rmm_application::*;
use rmm_domain::*;

const PATH: &str = "/srv/app.conf";
const SHA: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

/// A request body of `chunks` chunks of 4 bytes that counts what was read of it.
fn body(chunks: usize) -> (ByteStream, Arc<AtomicUsize>) {
    let read = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&read);
    let stream = futures_util::stream::iter(0..chunks).map(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(Bytes::from_static(b"data"))
    });
    (Box::pin(stream), read)
}

/// Audit entries written, for inspection.
fn record_audit(s: &mut Setup) -> Arc<Mutex<Vec<AuditEvent>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    s.audit.expect_append().returning(move |e| {
        sink.lock().unwrap().push(e.clone());
        Box::pin(async { Ok(()) })
    });
    events
}

fn only_file_entry(events: &Mutex<Vec<AuditEvent>>) -> (AuditAction, FileAudit) {
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(
        (e.user, e.agent, e.session),
        (Some(TECH.id), Some(AGENT), Some(SESSION))
    );
    (e.action, e.file.clone().unwrap())
}

#[tokio::test]
async fn access_is_refused_before_anything_moves_and_the_body_is_drained() {
    let mut s = Setup::default();
    active_session_store(&mut s);
    s.gateway.expect_upload_file().never();
    s.gateway.expect_download_file().never();
    s.gateway.expect_list_files().never();
    s.gateway.expect_upload_status().never();
    s.audit.expect_append().never();
    let app = s.build();

    let (upload, read) = body(3);
    let err = app
        .upload_file(OTHER_TECH, SESSION, PATH, 0, None, upload)
        .await
        .unwrap_err();
    assert!(matches!(err, TransferError::Access(FileAccessError::Forbidden(id)) if id == SESSION));
    // The client's body is read to its end so it is still listening for the answer.
    assert_eq!(read.load(Ordering::SeqCst), 3);

    let err = app
        .download_file(ADMIN, SESSION, PATH, 0)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        TransferError::Access(FileAccessError::Forbidden(_))
    ));
    let err = app.list_files(TECH, SESSION, "etc").await.unwrap_err();
    assert!(
        matches!(err, TransferError::Access(FileAccessError::NotAbsolute(ref p)) if p == "etc")
    );
    let err = app
        .upload_status(OTHER_TECH, SESSION, PATH)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        TransferError::Access(FileAccessError::Forbidden(_))
    ));
}

#[tokio::test]
async fn a_closed_session_moves_no_file() {
    let mut s = Setup::default();
    s.sessions.expect_get().returning(|_| {
        let mut closed = Session::open(SESSION, AGENT, TECH.id, now());
        closed.close(CloseReason::Idle, now()).unwrap();
        Box::pin(async move { Ok(Some(closed)) })
    });
    s.gateway.expect_list_files().never();
    let err = s.build().list_files(TECH, SESSION, "/").await.unwrap_err();
    assert!(matches!(
        err,
        TransferError::Access(FileAccessError::NotActive(_))
    ));
}

#[tokio::test]
async fn an_agent_failure_is_audited_with_its_code_and_answered_with_it() {
    let mut s = Setup::default();
    active_session_store(&mut s);
    let events = record_audit(&mut s);
    s.gateway
        .expect_upload_file()
        .withf(|agent, session, upload, _| {
            *agent == AGENT
                && *session == SESSION
                && *upload
                    == UploadRequest {
                        path: PATH.into(),
                        offset: 4,
                        sha256: Some(SHA.into()),
                    }
        })
        .times(1)
        .returning(|_, _, _, body| {
            // The agent refuses after the first chunk.
            assert!(body.next().now_or_never().flatten().is_some());
            Box::pin(async {
                Err(FileOpError::Agent {
                    code: FileErrorCode::DiskFull,
                    message: "no space left on /srv".into(),
                })
            })
        });
    let (upload, read) = body(5);
    let err = s
        .build()
        .upload_file(TECH, SESSION, PATH, 4, Some(SHA.into()), upload)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        TransferError::Failed(FileOpError::Agent {
            code: FileErrorCode::DiskFull,
            ..
        })
    ));
    assert_eq!(err.to_string(), "no space left on /srv");
    assert_eq!(
        read.load(Ordering::SeqCst),
        5,
        "the rest of the body is drained"
    );
    let (action, file) = only_file_entry(&events);
    assert_eq!(action, AuditAction::FileUpload);
    assert_eq!(
        file,
        FileAudit {
            path: PATH.into(),
            direction: "upload".into(),
            // The bytes moved before the refusal.
            size: Some(4),
            sha256: None,
            result: "disk_full: no space left on /srv".into(),
        }
    );
}

#[tokio::test]
async fn a_successful_upload_is_audited_with_size_and_sha256() {
    let mut s = Setup::default();
    active_session_store(&mut s);
    let events = record_audit(&mut s);
    s.gateway
        .expect_upload_file()
        .times(1)
        .returning(|_, _, _, _| {
            Box::pin(async {
                Ok(Uploaded {
                    path: "/srv/app.conf".into(),
                    size: 12,
                    sha256: SHA.into(),
                })
            })
        });
    let (upload, _) = body(3);
    let done = s
        .build()
        .upload_file(TECH, SESSION, PATH, 0, None, upload)
        .await
        .unwrap();
    assert_eq!(done.size, 12);
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

#[tokio::test]
async fn a_client_that_breaks_off_an_upload_is_audited_as_aborted_with_the_bytes_moved() {
    let mut s = Setup::default();
    active_session_store(&mut s);
    let events = record_audit(&mut s);
    s.gateway.expect_upload_file().returning(|_, _, _, body| {
        // Two chunks reach the agent, then the body breaks off.
        assert!(body.next().now_or_never().flatten().is_some());
        assert!(body.next().now_or_never().flatten().is_some());
        Box::pin(async { Err(FileOpError::ClientAborted("connection reset".into())) })
    });
    let (upload, _) = body(5);
    let err = s
        .build()
        .upload_file(TECH, SESSION, PATH, 0, None, upload)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        TransferError::Failed(FileOpError::ClientAborted(_))
    ));
    let (_, file) = only_file_entry(&events);
    assert_eq!((file.result.as_str(), file.size), ("aborted", Some(8)));
    let detail = events.lock().unwrap()[0].detail.clone().unwrap();
    assert!(
        detail.contains("after 8 bytes") && detail.contains("connection reset"),
        "{detail}"
    );
}

#[tokio::test]
async fn an_upload_request_dropped_mid_way_is_audited_as_aborted() {
    let mut s = Setup::default();
    active_session_store(&mut s);
    let events = record_audit(&mut s);
    s.gateway.expect_upload_file().returning(|_, _, _, body| {
        assert!(body.next().now_or_never().flatten().is_some());
        // The agent is slow: the request is dropped (client gone) while it waits.
        Box::pin(std::future::pending())
    });
    let (upload, _) = body(5);
    let app = s.build();
    let dropped = tokio::time::timeout(
        std::time::Duration::from_millis(50),
        app.upload_file(TECH, SESSION, PATH, 0, None, upload),
    )
    .await;
    assert!(dropped.is_err());
    // Written in the background: give it its turn.
    tokio::task::yield_now().await;
    let (_, file) = only_file_entry(&events);
    assert_eq!((file.result.as_str(), file.size), ("aborted", Some(4)));
}

#[tokio::test]
async fn a_file_entry_the_store_refuses_is_kept_and_written_by_maintenance() {
    let mut s = Setup::default();
    active_session_store(&mut s);
    let written = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&written);
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&attempts);
    s.audit.expect_append().returning(move |e| {
        let refused = seen.fetch_add(1, Ordering::SeqCst) == 0;
        if !refused {
            sink.lock().unwrap().push(e.clone());
        }
        Box::pin(async move {
            if refused {
                Err(StoreError::backend(std::io::Error::other(
                    "database is locked",
                )))
            } else {
                Ok(())
            }
        })
    });
    s.gateway.expect_upload_file().returning(|_, _, _, _| {
        Box::pin(async {
            Ok(Uploaded {
                path: PATH.into(),
                size: 12,
                sha256: SHA.into(),
            })
        })
    });
    no_open_sessions(&mut s);
    s.sessions
        .expect_close_idle()
        .returning(|_, _, _| Box::pin(async { Ok(vec![]) }));
    s.sessions
        .expect_touch()
        .returning(|_, _| Box::pin(async { Ok(()) }));
    let app = s.build();
    let (upload, _) = body(3);
    app.upload_file(TECH, SESSION, PATH, 0, None, upload)
        .await
        .unwrap();
    assert!(written.lock().unwrap().is_empty());
    app.flush_presence_and_close_idle().await.unwrap();
    let (_, file) = only_file_entry(&written);
    assert_eq!((file.result.as_str(), file.size), ("ok", Some(12)));
    // Written once: the next round finds nothing to write.
    app.flush_presence_and_close_idle().await.unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}

/// A download of `chunks` chunks of 4 bytes from offset 0.
fn download_of(s: &mut Setup, chunks: usize) {
    s.gateway
        .expect_download_file()
        .with(eq(AGENT), eq(SESSION), eq(PATH), eq(0))
        .returning(move |_, _, _, _| {
            let body =
                futures_util::stream::iter(0..chunks).map(|_| Ok(Bytes::from_static(b"data")));
            let started = AgentDownload {
                size: 4 * chunks as u64,
                sha256: SHA.into(),
                body: Box::pin(body),
            };
            Box::pin(async move { Ok(started) })
        });
}

#[tokio::test]
async fn a_download_is_audited_ok_once_its_last_byte_is_handed_on() {
    let mut s = Setup::default();
    active_session_store(&mut s);
    let events = record_audit(&mut s);
    download_of(&mut s, 2);
    let mut download = s
        .build()
        .download_file(TECH, SESSION, PATH, 0)
        .await
        .unwrap();
    assert_eq!((download.size, download.offset), (8, 0));
    assert_eq!(download.body.next().await.unwrap().unwrap(), "data");
    assert!(
        events.lock().unwrap().is_empty(),
        "not settled before the last byte"
    );
    assert_eq!(download.body.next().await.unwrap().unwrap(), "data");
    // Settled with the last byte, without waiting for the client to ask for more.
    let (action, file) = only_file_entry(&events);
    assert_eq!(action, AuditAction::FileDownload);
    assert_eq!(
        (file.size, file.sha256.as_deref(), file.result.as_str()),
        (Some(8), Some(SHA), "ok")
    );
    assert!(download.body.next().await.is_none());
    drop(download);
    assert_eq!(events.lock().unwrap().len(), 1, "audited once");
}

#[tokio::test]
async fn a_client_that_stops_reading_a_download_is_audited() {
    let mut s = Setup::default();
    active_session_store(&mut s);
    let events = record_audit(&mut s);
    download_of(&mut s, 3);
    let mut download = s
        .build()
        .download_file(TECH, SESSION, PATH, 0)
        .await
        .unwrap();
    download.body.next().await.unwrap().unwrap();
    drop(download);
    // Written in the background: give it its turn.
    tokio::task::yield_now().await;
    let (_, file) = only_file_entry(&events);
    assert_eq!(file.result, "aborted");
    assert_eq!((file.size, file.sha256), (Some(4), None), "the bytes moved");
    assert_eq!(
        events.lock().unwrap()[0].detail.as_deref(),
        Some("the client stopped reading after byte 4 of 12 (from offset 0)")
    );
}

#[tokio::test]
async fn a_download_the_agent_refuses_is_audited_with_its_code() {
    let mut s = Setup::default();
    active_session_store(&mut s);
    let events = record_audit(&mut s);
    s.gateway.expect_download_file().returning(|_, _, _, _| {
        Box::pin(async {
            Err(FileOpError::Agent {
                code: FileErrorCode::NotFound,
                message: "no such file".into(),
            })
        })
    });
    let err = s
        .build()
        .download_file(TECH, SESSION, PATH, 0)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        TransferError::Failed(FileOpError::Agent {
            code: FileErrorCode::NotFound,
            ..
        })
    ));
    let (_, file) = only_file_entry(&events);
    assert_eq!(file.result, "not_found: no such file");
}

#[tokio::test]
async fn a_download_that_breaks_midway_is_audited_with_the_failure() {
    let mut s = Setup::default();
    active_session_store(&mut s);
    let events = record_audit(&mut s);
    s.gateway.expect_download_file().returning(|_, _, _, _| {
        let body = futures_util::stream::iter([
            Ok(Bytes::from_static(b"data")),
            Err(FileOpError::AgentGone),
        ]);
        let started = AgentDownload {
            size: 8,
            sha256: SHA.into(),
            body: Box::pin(body),
        };
        Box::pin(async move { Ok(started) })
    });
    let mut download = s
        .build()
        .download_file(TECH, SESSION, PATH, 0)
        .await
        .unwrap();
    download.body.next().await.unwrap().unwrap();
    let err = download.body.next().await.unwrap().unwrap_err();
    assert_eq!(
        err.to_string(),
        "the agent of this session is not connected"
    );
    assert!(download.body.next().await.is_none());
    drop(download);
    let (_, file) = only_file_entry(&events);
    assert_eq!(file.result, "the agent of this session is not connected");
}

#[tokio::test]
async fn listing_and_upload_status_ask_the_agent_of_the_session() {
    let mut s = Setup::default();
    active_session_store(&mut s);
    s.gateway
        .expect_list_files()
        .with(eq(AGENT), eq(SESSION), eq("/srv"))
        .returning(|_, _, _| {
            let entry = FileEntry {
                name: "app.conf".into(),
                kind: "file".into(),
                size: 12,
                mode: Some(0o644),
                modified: None,
            };
            Box::pin(async move { Ok(vec![entry]) })
        });
    s.gateway
        .expect_upload_status()
        .with(eq(AGENT), eq(SESSION), eq(PATH))
        .returning(|_, _, _| Box::pin(async { Ok(4096) }));
    let app = s.build();
    let entries = app.list_files(TECH, SESSION, "/srv").await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].name, "app.conf");
    assert_eq!(app.upload_status(TECH, SESSION, PATH).await.unwrap(), 4096);
}
