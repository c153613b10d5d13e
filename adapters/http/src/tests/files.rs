//! The file section: upload (`PUT /api/v1/tunnel/{id}/files`: 201), download (`GET
//! .../files`: 200, 206 with `Range: bytes=N-`), list (`GET .../files/list`: 200) and
//! `GET .../files/upload-status` (200); each with the shared error rows 400, 401, 403, 404,
//! 409, 422, 500, 503, 504 and 507.
//!
//! The error rows are the same for every operation, so they are written once here (one
//! function per row) and instantiated for each operation by [`error_rows!`]. The access
//! check refuses before the agent is asked; the agent's failures come through the gateway
//! port, and a transfer (upload, download) is audited with its failure.

use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use poem::http::{Method, StatusCode};
use poem::test::TestResponse;
use rmm_application::{AuditAction, AuditEvent, FileAudit, FileOpError};
use rmm_domain::{Actor, CloseReason, FileErrorCode};
use rmm_protocol::api::ApiErrorCode;

use super::{
    ADMIN, AGENT, OTHER_TECH, SESSION, Server, Setup, TECH, TOKEN_TTL, active, assert_error,
    assert_internal, backend_error, closed, wall_clock,
};

/// The file every test moves.
const PATH: &str = "/srv/app.conf";
/// SHA-256 of `hello, world`.
const SHA: &str = "09ca7e4eaa6e8ae9c7d261167129184883644d07dfba7cbfbc4c8a2e08360d5b";

fn files_url() -> String {
    format!("/api/v1/tunnel/{}/files", SESSION.as_uuid())
}

/// A file operation, as a client calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Upload,
    Download,
    List,
    Status,
}

impl Op {
    fn url(self) -> String {
        match self {
            Self::Upload | Self::Download => files_url(),
            Self::List => format!("{}/list", files_url()),
            Self::Status => format!("{}/upload-status", files_url()),
        }
    }

    fn method(self) -> Method {
        match self {
            Self::Upload => Method::PUT,
            Self::Download | Self::List | Self::Status => Method::GET,
        }
    }

    /// The operation on `path` with `token` (none: no `Authorization`); an upload sends
    /// `hello, world`.
    async fn send_with(self, server: &Server, token: Option<&str>, path: &str) -> TestResponse {
        let url = self.url();
        let mut req = match self {
            Self::Upload => server.client.put(url).body("hello, world"),
            Self::Download | Self::List | Self::Status => server.client.get(url),
        };
        if let Some(token) = token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        req.query("path", &path).send().await
    }

    /// The operation on `path`, as `actor`.
    async fn send(self, server: &Server, actor: Actor, path: &str) -> TestResponse {
        self.send_with(server, Some(&server.token(actor)), path)
            .await
    }

    /// The audit action of the transfer, when the operation is one.
    fn audited_as(self) -> Option<(AuditAction, &'static str)> {
        match self {
            Self::Upload => Some((AuditAction::FileUpload, "upload")),
            Self::Download => Some((AuditAction::FileDownload, "download")),
            Self::List | Self::Status => None,
        }
    }

    /// The gateway fails the operation on `PATH`, asked once for `AGENT` in `SESSION`,
    /// with `e`. A transfer is audited once with the failure; a list or status is not.
    fn fails(self, s: &mut Setup, e: FileOpError) {
        let why = e.to_string();
        match self {
            Self::Upload => {
                s.gateway
                    .expect_upload_file()
                    .withf(|agent, session, upload, _| {
                        (*agent, *session, upload.path.as_str()) == (AGENT, SESSION, PATH)
                    })
                    .times(1)
                    .returning(move |_, _, _, _| fail(&e));
            }
            Self::Download => {
                s.gateway
                    .expect_download_file()
                    .withf(|agent, session, path, offset| {
                        (*agent, *session, path, *offset) == (AGENT, SESSION, PATH, 0)
                    })
                    .times(1)
                    .returning(move |_, _, _, _| fail(&e));
            }
            Self::List => {
                s.gateway
                    .expect_list_files()
                    .withf(|agent, session, path| {
                        (*agent, *session, path) == (AGENT, SESSION, PATH)
                    })
                    .times(1)
                    .returning(move |_, _, _| fail(&e));
            }
            Self::Status => {
                s.gateway
                    .expect_upload_status()
                    .withf(|agent, session, path| {
                        (*agent, *session, path) == (AGENT, SESSION, PATH)
                    })
                    .times(1)
                    .returning(move |_, _, _| fail(&e));
            }
        }
        self.audits_failure(s, why);
    }

    /// A transfer is audited once as failed, its result ending with `why`; anything else is
    /// not audited.
    fn audits_failure(self, s: &mut Setup, why: String) {
        let Some((action, direction)) = self.audited_as() else {
            s.audit.expect_append().never();
            return;
        };
        s.audit
            .expect_append()
            .withf(move |e: &AuditEvent| {
                e.action == action
                    && (e.user, e.agent, e.session) == (Some(TECH.id), Some(AGENT), Some(SESSION))
                    && e.file.as_ref().is_some_and(|f| {
                        f.path == PATH
                            && f.direction == direction
                            && f.result != "ok"
                            && f.result.ends_with(&why)
                    })
            })
            .times(1)
            .returning(|_| Box::pin(async { Ok(()) }));
    }
}

/// Audit entries written, for inspection.
fn record_audit(s: &mut Setup) -> Arc<Mutex<Vec<AuditEvent>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    s.audit.expect_append().returning(move |e| {
        sink.lock().expect("not poisoned").push(e.clone());
        Box::pin(async { Ok(()) })
    });
    events
}

/// The one entry written: `TECH`'s, about `AGENT` in `SESSION`; its action and file part.
fn only_file_entry(events: &Mutex<Vec<AuditEvent>>) -> (AuditAction, FileAudit) {
    let events = events.lock().expect("not poisoned");
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(
        (e.user, e.agent, e.session),
        (Some(TECH.id), Some(AGENT), Some(SESSION))
    );
    (e.action, e.file.clone().expect("a file entry"))
}

/// A gateway answer: `e`.
fn fail<T: Send + 'static>(e: &FileOpError) -> BoxFuture<'static, Result<T, FileOpError>> {
    let e = e.clone();
    Box::pin(async move { Err(e) })
}

/// Nothing reaches the agent and nothing is audited.
fn nothing_moves(s: &mut Setup) {
    s.gateway.expect_upload_file().never();
    s.gateway.expect_download_file().never();
    s.gateway.expect_list_files().never();
    s.gateway.expect_upload_status().never();
    s.audit.expect_append().never();
}

fn agent_error(code: FileErrorCode, message: &str) -> FileOpError {
    FileOpError::Agent {
        code,
        message: message.into(),
    }
}

/// Every failure the agent (or the gateway) reports, with the status and code it is
/// answered with. The same for every operation: the response enums share the mapping.
fn agent_failures() -> Vec<(StatusCode, ApiErrorCode, FileOpError)> {
    use FileErrorCode as F;
    vec![
        (
            StatusCode::CONFLICT,
            ApiErrorCode::NotAbsolute,
            agent_error(F::NotAbsolute, "not absolute on this system"),
        ),
        (
            StatusCode::CONFLICT,
            ApiErrorCode::IsDirectory,
            agent_error(F::IsDirectory, "/srv/app.conf is a directory"),
        ),
        (
            StatusCode::CONFLICT,
            ApiErrorCode::NotADirectory,
            agent_error(F::NotADirectory, "/srv/app.conf is a file"),
        ),
        (
            StatusCode::CONFLICT,
            ApiErrorCode::NotARegularFile,
            agent_error(F::NotARegularFile, "/dev/zero is not a regular file"),
        ),
        (
            StatusCode::CONFLICT,
            ApiErrorCode::NameTooLong,
            agent_error(F::NameTooLong, "a name in /srv/app.conf is too long"),
        ),
        (
            StatusCode::CONFLICT,
            ApiErrorCode::InvalidPath,
            agent_error(F::InvalidPath, "/srv/app.conf contains a NUL byte"),
        ),
        (
            StatusCode::CONFLICT,
            ApiErrorCode::BadOffset,
            agent_error(F::BadOffset, "offset 7 but 4 bytes held"),
        ),
        (
            StatusCode::FORBIDDEN,
            ApiErrorCode::PermissionDenied,
            agent_error(F::PermissionDenied, "permission denied"),
        ),
        (
            StatusCode::NOT_FOUND,
            ApiErrorCode::FileNotFound,
            agent_error(F::NotFound, "no such file"),
        ),
        (
            StatusCode::CONFLICT,
            ApiErrorCode::AgentUnsupported,
            FileOpError::Unsupported,
        ),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            ApiErrorCode::ChecksumMismatch,
            agent_error(F::ChecksumMismatch, "sha256 differs"),
        ),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiErrorCode::FileIo,
            agent_error(F::Io, "input/output error"),
        ),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            ApiErrorCode::AgentGone,
            FileOpError::AgentGone,
        ),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            ApiErrorCode::AgentBusy,
            FileOpError::Busy,
        ),
        (
            StatusCode::GATEWAY_TIMEOUT,
            ApiErrorCode::AgentTimeout,
            FileOpError::Timeout,
        ),
        (
            StatusCode::INSUFFICIENT_STORAGE,
            ApiErrorCode::DiskFull,
            agent_error(F::DiskFull, "no space left on /srv"),
        ),
    ]
}

/// Every agent failure answered with `status`, through `op`: the status, the code, the
/// agent's message for people, the gateway asked once, a transfer audited with the failure.
async fn agent_fails_with(op: Op, status: StatusCode) {
    let cases: Vec<_> = agent_failures()
        .into_iter()
        .filter(|(s, ..)| *s == status)
        .collect();
    assert!(!cases.is_empty(), "no agent failure is answered {status}");
    for (status, code, e) in cases {
        let mut s = Setup::default();
        s.stored_session(active(TECH));
        op.fails(&mut s, e.clone());
        let resp = op.send(&s.serve(), TECH, PATH).await;
        let message = assert_error(resp, status, code).await;
        assert_eq!(message, e.to_string(), "{op:?} {}", code.as_str());
    }
}

/// A session of `TECH`'s in the store, and nothing moves.
fn refused(session: rmm_domain::Session) -> Setup {
    let mut s = Setup::default();
    s.stored_session(session);
    nothing_moves(&mut s);
    s
}

/// 400: a relative path or one no agent could use (refused before the agent is asked), a
/// missing `path` or a session id that is no UUID (refused by the framework). What the agent
/// refuses of a well-formed request is a 409 (`conflict`).
async fn bad_request(op: Op) {
    let server = refused(active(TECH)).serve();
    let resp = op.send(&server, TECH, "etc/hosts").await;
    let message = assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::NotAbsolute).await;
    assert!(message.contains("etc/hosts"), "{message}");
    bad_path(op, &server).await;

    let token = server.token(TECH);
    let resp = server
        .client
        .request(op.method(), op.url())
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await;
    assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;
    let resp = server
        .client
        .request(
            op.method(),
            op.url().replace(&SESSION.as_uuid().to_string(), "s-1"),
        )
        .header("Authorization", format!("Bearer {token}"))
        .query("path", &PATH)
        .send()
        .await;
    assert_error(resp, StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest).await;
}

/// 400 for a path no agent could use, refused before the agent is asked (nothing moves): a
/// NUL byte, a path over 4096 bytes, a name over 255 characters; the message names which.
async fn bad_path(op: Op, server: &Server) {
    let long_name = format!("/srv/{}", "n".repeat(256));
    let cases = [
        ("/srv/app\0.conf", ApiErrorCode::InvalidPath, "NUL byte"),
        (&*"/a".repeat(2500), ApiErrorCode::NameTooLong, "5000 bytes"),
        (&long_name, ApiErrorCode::NameTooLong, "256 characters"),
    ];
    for (path, code, says) in cases {
        let resp = op.send(server, TECH, path).await;
        let message = assert_error(resp, StatusCode::BAD_REQUEST, code).await;
        assert!(message.contains(says), "{op:?} {path:.20}: {message}");
    }
}

/// 401: no token, or an expired one; nothing moves.
async fn unauthorized(op: Op) {
    let mut s = Setup::default();
    nothing_moves(&mut s);
    let server = s.serve();
    let resp = op.send_with(&server, None, PATH).await;
    assert_error(
        resp,
        StatusCode::UNAUTHORIZED,
        ApiErrorCode::Unauthenticated,
    )
    .await;
    let expired = super::signed(
        &server.jwt,
        TECH,
        wall_clock().minus(TOKEN_TTL + std::time::Duration::from_secs(60)),
    );
    let resp = op.send_with(&server, Some(&expired.token), PATH).await;
    assert_error(resp, StatusCode::UNAUTHORIZED, ApiErrorCode::TokenExpired).await;
}

/// 403: another technician's session (admins included: they may close sessions, not use
/// them), and the agent's `permission_denied`.
async fn forbidden(op: Op) {
    let server = refused(active(TECH)).serve();
    for actor in [OTHER_TECH, ADMIN] {
        let resp = op.send(&server, actor, PATH).await;
        assert_error(resp, StatusCode::FORBIDDEN, ApiErrorCode::Forbidden).await;
    }
    agent_fails_with(op, StatusCode::FORBIDDEN).await;
}

/// 404: no such session, and the agent's `not_found`.
async fn not_found(op: Op) {
    let mut s = Setup::default();
    s.no_session();
    nothing_moves(&mut s);
    let resp = op.send(&s.serve(), TECH, PATH).await;
    assert_error(resp, StatusCode::NOT_FOUND, ApiErrorCode::SessionNotFound).await;
    agent_fails_with(op, StatusCode::NOT_FOUND).await;
}

/// 409: a closed session, and an agent too old for file transfer.
async fn conflict(op: Op) {
    let server = refused(closed(TECH, CloseReason::ClosedByOwner)).serve();
    let resp = op.send(&server, TECH, PATH).await;
    assert_error(resp, StatusCode::CONFLICT, ApiErrorCode::SessionNotActive).await;
    agent_fails_with(op, StatusCode::CONFLICT).await;
}

/// 500: a session store that cannot be read (`internal`, nothing leaks), the agent's other
/// I/O failures (`file_io`), and an agent that broke the protocol (`internal`).
async fn internal(op: Op) {
    let mut s = Setup::default();
    s.sessions
        .expect_get()
        .returning(|_| Box::pin(async { Err(backend_error()) }));
    nothing_moves(&mut s);
    assert_internal(op.send(&s.serve(), TECH, PATH).await).await;

    agent_fails_with(op, StatusCode::INTERNAL_SERVER_ERROR).await;

    let mut s = Setup::default();
    s.stored_session(active(TECH));
    op.fails(&mut s, FileOpError::Protocol("frame 7 out of order".into()));
    let resp = op.send(&s.serve(), TECH, PATH).await;
    let message = assert_error(
        resp,
        StatusCode::INTERNAL_SERVER_ERROR,
        ApiErrorCode::Internal,
    )
    .await;
    assert!(!message.contains("frame 7"), "the cause leaked: {message}");
}

/// One test per row of an operation's error statuses; the success rows are in the
/// operation's module.
macro_rules! error_rows {
    ($op:expr) => {
        #[tokio::test]
        async fn answers_400_for_a_relative_path_or_a_malformed_request() {
            super::bad_request($op).await;
        }

        #[tokio::test]
        async fn answers_401_without_a_valid_token() {
            super::unauthorized($op).await;
        }

        #[tokio::test]
        async fn answers_403_for_another_users_session_or_a_denied_agent() {
            super::forbidden($op).await;
        }

        #[tokio::test]
        async fn answers_404_for_an_unknown_session_or_file() {
            super::not_found($op).await;
        }

        #[tokio::test]
        async fn answers_409_for_a_closed_session_an_old_agent_or_the_agents_refusal() {
            super::conflict($op).await;
        }

        #[tokio::test]
        async fn answers_422_checksum_mismatch() {
            super::agent_fails_with($op, poem::http::StatusCode::UNPROCESSABLE_ENTITY).await;
        }

        #[tokio::test]
        async fn answers_500_for_a_failed_store_an_agent_io_error_or_a_protocol_breach() {
            super::internal($op).await;
        }

        #[tokio::test]
        async fn answers_503_for_a_gone_or_busy_agent() {
            super::agent_fails_with($op, poem::http::StatusCode::SERVICE_UNAVAILABLE).await;
        }

        #[tokio::test]
        async fn answers_504_when_the_agent_does_not_answer_in_time() {
            super::agent_fails_with($op, poem::http::StatusCode::GATEWAY_TIMEOUT).await;
        }

        #[tokio::test]
        async fn answers_507_when_the_agents_disk_is_full() {
            super::agent_fails_with($op, poem::http::StatusCode::INSUFFICIENT_STORAGE).await;
        }
    };
}

// After the macro, which they use.
mod download;
mod list;
mod upload;
mod upload_status;
