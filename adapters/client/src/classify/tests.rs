#![allow(clippy::unwrap_used)]

use rmm_domain::{AgentId, CommandId, SessionId};
use rmm_protocol::api::{ApiError, ApiErrorCode as Code};
use uuid::Uuid;

use super::*;
use crate::error::MAX_ECHOED;

const S: SessionId = SessionId::from_uuid(Uuid::from_u128(1));
const A: AgentId = AgentId::from_uuid(Uuid::from_u128(2));
const C: CommandId = CommandId::from_uuid(Uuid::from_u128(3));

/// The error a server that sends codes answers with.
fn coded(status: u16, code: Code, message: &str, about: About) -> ClientError {
    let body = serde_json::to_vec(&ApiError {
        error: message.to_owned(),
        code,
    })
    .unwrap();
    ErrorReply::parse(status, &body).into_error(about)
}

/// The error a server that predates codes answers with.
fn uncoded(status: u16, message: &str, about: About) -> ClientError {
    let body = serde_json::json!({ "error": message }).to_string();
    ErrorReply::parse(status, body.as_bytes()).into_error(about)
}

fn file(op: FileOp, path: &str) -> About {
    About::File {
        session: S,
        op,
        path: path.to_owned(),
    }
}

#[test]
fn bodies_are_read_with_their_code_without_one_or_as_text() {
    let reply = ErrorReply::parse(
        404,
        br#"{"error":"no such session","code":"session_not_found"}"#,
    );
    assert_eq!(reply.code, Some(Code::SessionNotFound));
    assert_eq!(reply.message, "no such session");
    let older = ErrorReply::parse(404, br#"{"error":"no such session"}"#);
    assert_eq!(
        (older.code, older.message.as_str()),
        (None, "no such session")
    );
    let newer = ErrorReply::parse(429, br#"{"error":"slow down","code":"quota_exceeded"}"#);
    assert_eq!(newer.code, None, "an unknown code reads as none");
    let text = ErrorReply::parse(502, b"Bad Gateway from the proxy");
    assert_eq!(
        (text.code, text.message.as_str()),
        (None, "Bad Gateway from the proxy")
    );
    assert_eq!(ErrorReply::parse(503, b"").message, "Service Unavailable");
}

#[test]
fn expired_tokens_are_told_apart_from_rejected_ones_and_from_bad_passwords() {
    assert!(matches!(
        coded(
            401,
            Code::TokenExpired,
            "token expired: log in again",
            About::Agents
        ),
        ClientError::TokenExpired
    ));
    assert!(matches!(
        coded(
            401,
            Code::TokenExpired,
            "whatever it says",
            About::Session(S)
        ),
        ClientError::TokenExpired
    ));
    assert!(matches!(
        coded(
            401,
            Code::Unauthenticated,
            "invalid token: log in again",
            About::Agents
        ),
        ClientError::TokenRejected(_)
    ));
    assert!(matches!(
        coded(
            401,
            Code::InvalidCredentials,
            "invalid username or password",
            About::Login
        ),
        ClientError::InvalidCredentials
    ));
    assert_eq!(
        ClientError::TokenExpired.to_string(),
        "your login expired: run `rmm login`"
    );
}

#[test]
fn without_a_code_a_401_reads_by_status_whatever_the_message_says() {
    assert!(matches!(
        uncoded(401, "token expired: log in again", About::Agents),
        ClientError::TokenRejected(m) if m == "token expired: log in again"
    ));
    assert!(matches!(
        uncoded(401, "invalid username or password", About::Login),
        ClientError::InvalidCredentials
    ));
    assert!(matches!(
        uncoded(401, "token expired", file(FileOp::Download, "/x")),
        ClientError::TokenRejected(_)
    ));
}

#[test]
fn the_code_tells_the_session_from_the_command_not_the_message() {
    assert!(matches!(
        coded(404, Code::CommandNotFound, "session x not found", About::Command(S, C)),
        ClientError::CommandNotFound(c) if c == C
    ));
    assert!(matches!(
        coded(404, Code::SessionNotFound, "command x not found", About::Command(S, C)),
        ClientError::SessionNotFound(s) if s == S
    ));
    assert!(matches!(
        coded(404, Code::SessionNotFound, "gone", About::Session(S)),
        ClientError::SessionNotFound(s) if s == S
    ));
    assert!(matches!(
        coded(403, Code::Forbidden, "owned by another", About::Command(S, C)),
        ClientError::SessionForbidden(s) if s == S
    ));
    assert!(matches!(
        coded(429, Code::TooManySessions, "close one first", About::Open(A)),
        ClientError::Conflict(m) if m == "close one first"
    ));
    assert!(matches!(
        coded(403, Code::Forbidden, "admins only", About::Audit),
        ClientError::Forbidden(m) if m == "admins only"
    ));
    assert!(matches!(
        coded(409, Code::SessionNotActive, "closed", About::Session(S)),
        ClientError::SessionNotUsable { session, .. } if session == S
    ));
    // Without a code, a 404 on a command reads as the command's, whatever the text.
    assert!(matches!(
        uncoded(404, "session x not found", About::Command(S, C)),
        ClientError::CommandNotFound(c) if c == C
    ));
}

#[test]
fn opening_tells_a_held_tunnel_from_a_refusal_and_an_offline_agent() {
    let held = coded(
        409,
        Code::SessionExists,
        "agent web-01 already has an active session, held by alice",
        About::Open(A),
    )
    .naming_agent("web-01");
    assert!(matches!(held, ClientError::AgentBusy { .. }));
    let shown = held.to_string();
    assert!(
        shown.starts_with(
            "cannot open a session to agent web-01: agent web-01 already has an active session, held by alice; "
        ),
        "{shown}"
    );
    assert!(!shown.contains("close yours"), "{shown}");
    assert!(
        shown.contains("an admin with `rmm close SESSION`"),
        "{shown}"
    );
    assert!(matches!(
        coded(409, Code::AgentRefused, "busy with an update", About::Open(A)),
        ClientError::AgentRefused { reason, .. } if reason == "busy with an update"
    ));
    for code in [Code::AgentNotConnected, Code::AgentNotFound] {
        assert_eq!(
            coded(404, code, "x", About::Open(A))
                .naming_agent("web-01")
                .to_string(),
            "agent web-01 is offline: it is not connected to the server; check `rmm agents`"
        );
    }
    assert!(matches!(
        coded(504, Code::AgentTimeout, "late", About::Open(A)),
        ClientError::OpenTimedOut { .. }
    ));
    assert!(matches!(
        coded(503, Code::AgentBusy, "saturated", About::Open(A)),
        ClientError::Unavailable(_)
    ));
    // A server without codes: a 409 on open is a held tunnel, named with its own message.
    assert!(matches!(
        uncoded(409, "agent already has an active session", About::Open(A)),
        ClientError::AgentBusy { reason, .. } if reason == "agent already has an active session"
    ));
}

#[test]
fn statuses_without_a_code_read_according_to_what_was_asked() {
    let offline = uncoded(404, "agent x is not connected", About::Open(A));
    assert_eq!(
        offline.naming_agent("web-01").to_string(),
        "agent web-01 is offline: it is not connected to the server; check `rmm agents`"
    );
    assert!(matches!(
        uncoded(403, "owned by another", About::Command(S, C)),
        ClientError::SessionForbidden(s) if s == S
    ));
    assert!(matches!(
        uncoded(409, "session x is not active", About::Session(S)),
        ClientError::SessionNotUsable { .. }
    ));
    assert!(matches!(
        uncoded(504, "late", About::Open(A)),
        ClientError::OpenTimedOut { .. }
    ));
    assert!(matches!(
        uncoded(400, "bad limit", About::Audit),
        ClientError::BadRequest(_)
    ));
    assert!(matches!(
        uncoded(503, "audit log down", About::Session(S)),
        ClientError::Unavailable(_)
    ));
    assert!(matches!(
        uncoded(500, "boom", About::Agents),
        ClientError::Server(_)
    ));
    assert!(matches!(
        uncoded(418, "teapot", About::Audit),
        ClientError::Protocol(_)
    ));
    // A code that does not fit the request reads as its status.
    assert!(matches!(
        coded(404, Code::CommandNotFound, "x", About::Session(S)),
        ClientError::SessionNotFound(s) if s == S
    ));
}

#[test]
fn file_errors_tell_the_session_from_the_file_by_code_and_name_the_agent() {
    let missing = coded(
        404,
        Code::FileNotFound,
        "cannot open /x: No such file or directory (os error 2)",
        file(FileOp::Download, "/x"),
    );
    assert_eq!(
        missing.naming_agent("web-01").to_string(),
        "no such file on web-01: /x (404); check the path"
    );
    let no_dir = coded(
        404,
        Code::FileNotFound,
        "cannot create /a/b/.c.rmm-partial: No such file or directory",
        file(FileOp::Upload, "/a/b/c"),
    );
    assert_eq!(
        no_dir.naming_agent("web-01").to_string(),
        "no such directory on web-01: /a/b (404); create it first, or check the path"
    );
    assert!(matches!(
        coded(404, Code::SessionNotFound, "cannot open /x", file(FileOp::Download, "/x")),
        ClientError::SessionNotFound(s) if s == S
    ));
    assert!(matches!(
        coded(403, Code::Forbidden, "Permission denied", file(FileOp::Upload, "/x")),
        ClientError::SessionForbidden(s) if s == S
    ));
    assert!(matches!(
        coded(
            403,
            Code::PermissionDenied,
            "session: cannot create /sys/x: Permission denied",
            file(FileOp::Upload, "/sys/x")
        ),
        ClientError::RemotePermissionDenied { verb: "write", .. }
    ));
    assert!(matches!(
        coded(
            403,
            Code::PermissionDenied,
            "denied",
            file(FileOp::Download, "/root/x")
        ),
        ClientError::RemotePermissionDenied { verb: "read", .. }
    ));
    assert!(matches!(
        coded(
            409,
            Code::AgentUnsupported,
            "session is not active",
            file(FileOp::Upload, "/x")
        ),
        ClientError::FilesUnsupported { .. }
    ));
    assert!(matches!(
        coded(
            409,
            Code::SessionNotActive,
            "the agent does not support file transfer",
            file(FileOp::Download, "/x")
        ),
        ClientError::SessionInactive { session, .. } if session == S
    ));
    assert_eq!(
        coded(
            422,
            Code::ChecksumMismatch,
            "sha differs",
            file(FileOp::Upload, "/x")
        )
        .to_string(),
        "checksum mismatch: the file changed during transfer; run again"
    );
    assert_eq!(
        coded(507, Code::DiskFull, "no space", file(FileOp::Upload, "/x"))
            .naming_agent("web-01")
            .to_string(),
        "the agent's disk is full: free some space on web-01 and run again"
    );
    assert_eq!(
        coded(
            400,
            Code::IsDirectory,
            "is a folder",
            file(FileOp::Download, "/tmp")
        )
        .naming_agent("web-01")
        .to_string(),
        "/tmp is a directory on web-01: name a file"
    );
    for code in [
        Code::NotAbsolute,
        Code::NotADirectory,
        Code::BadOffset,
        Code::TransferAborted,
    ] {
        assert!(
            matches!(
                coded(400, code, "refused", file(FileOp::Download, "/x")),
                ClientError::TransferRefused { .. }
            ),
            "{code:?}"
        );
    }
    assert!(matches!(
        coded(
            503,
            Code::AgentGone,
            "went away",
            file(FileOp::Download, "/x")
        ),
        ClientError::TransferStopped(_)
    ));
    assert!(matches!(
        coded(
            504,
            Code::AgentTimeout,
            "late",
            file(FileOp::Download, "/x")
        ),
        ClientError::AgentTimedOut { .. }
    ));
    assert!(matches!(
        coded(
            401,
            Code::TokenExpired,
            "token expired",
            file(FileOp::Download, "/x")
        ),
        ClientError::TokenExpired
    ));
}

#[test]
fn file_errors_without_a_code_read_by_status_alone() {
    // 404: the file (the session was just opened or checked), whatever the text says.
    assert!(matches!(
        uncoded(404, &format!("session {S} not found"), file(FileOp::Download, "/x")),
        ClientError::RemoteFileNotFound { path, .. } if path == "/x"
    ));
    assert!(matches!(
        uncoded(404, "no such directory", file(FileOp::Upload, "/a/b")),
        ClientError::RemoteDirNotFound { dir, .. } if dir == "/a"
    ));
    // 403: the session's or the file's; only the server's words are shown.
    assert!(matches!(
        uncoded(403, "cannot create /sys/x: Permission denied", file(FileOp::Upload, "/sys/x")),
        ClientError::Forbidden(m) if m == "cannot create /sys/x: Permission denied"
    ));
    // 409: the session, with the server's reason; never "unsupported" from the text.
    assert!(matches!(
        uncoded(
            409,
            "the agent does not support file transfer (upgrade the agent)",
            file(FileOp::Upload, "/x")
        ),
        ClientError::SessionInactive { .. }
    ));
    assert!(matches!(
        uncoded(400, "/tmp is a directory", file(FileOp::Download, "/tmp")),
        ClientError::TransferRefused { .. }
    ));
    assert!(matches!(
        uncoded(422, "sha differs", file(FileOp::Upload, "/x")),
        ClientError::ChecksumMismatch
    ));
    assert!(matches!(
        uncoded(507, "no space", file(FileOp::Upload, "/x")),
        ClientError::AgentDiskFull { .. }
    ));
    assert!(matches!(
        uncoded(503, "agent gone", file(FileOp::Upload, "/x")),
        ClientError::TransferStopped(_)
    ));
    assert!(matches!(
        uncoded(504, "late", file(FileOp::Upload, "/x")),
        ClientError::AgentTimedOut { .. }
    ));
}

#[test]
fn the_parent_of_a_remote_path_is_its_directory() {
    assert_eq!(parent_dir("/a/b/c"), "/a/b");
    assert_eq!(parent_dir("/c"), "/");
    assert_eq!(parent_dir("/a/b/"), "/a");
    assert_eq!(parent_dir(r"C:\dir\f"), r"C:\dir");
    assert_eq!(parent_dir("f"), "f");
}

#[test]
fn echoed_server_text_stays_on_one_bounded_line() {
    let message = |body: &[u8]| ErrorReply::parse(400, body).message;
    assert_eq!(message(br#"{"error":"a\nb\tc"}"#), "a b c");
    assert_eq!(
        message(br#"{"error":"a\nb","code":"invalid_request"}"#),
        "a b"
    );
    assert_eq!(message(b"plain\r\ntext"), "plain text");
    let long = message("x".repeat(1000).as_bytes());
    assert!(long.chars().count() <= MAX_ECHOED + 1);
}

#[test]
fn refused_paths_name_the_cause_and_the_fix_in_one_line() {
    let device = coded(
        400,
        Code::NotARegularFile,
        "/dev/zero is not a regular file (a device, FIFO or socket); name a regular file",
        file(FileOp::Download, "/dev/zero"),
    );
    assert_eq!(
        device.naming_agent("web-01").to_string(),
        "/dev/zero on web-01 is not a regular file (a device, FIFO or socket): name a regular file"
    );
    let long = coded(
        400,
        Code::NameTooLong,
        "the path is 5000 bytes long; at most 4096 are allowed",
        file(FileOp::Upload, "/a"),
    );
    assert_eq!(
        long.naming_agent("web-01").to_string(),
        "the path is too long for web-01: the path is 5000 bytes long; at most 4096 are allowed; use a shorter path"
    );
    let nul = coded(
        400,
        Code::InvalidPath,
        "the path contains a NUL byte (at byte 4); no file name can hold one",
        file(FileOp::UploadStatus, "/tmp\0x"),
    );
    let line = nul.naming_agent("web-01").to_string();
    assert!(
        line.starts_with("the path cannot name a file on web-01: the path contains a NUL byte")
            && line.ends_with("remove the stray character")
            && !line.contains('\n'),
        "{line}"
    );
}

#[test]
fn terminal_and_recording_errors_name_what_to_do() {
    let e = coded(409, Code::AgentUnsupported, "no pty", About::Terminal(S));
    assert!(
        matches!(&e, ClientError::TerminalsUnsupported { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("rmm exec"), "{e}");
    let e = coded(409, Code::AgentUnsupported, "no stdin", About::Session(S));
    assert!(matches!(&e, ClientError::StdinUnsupported { .. }), "{e:?}");
    assert!(matches!(
        coded(504, Code::AgentTimeout, "slow", About::Terminal(S)),
        ClientError::TerminalTimedOut
    ));
    // A terminal's other errors are its session's.
    assert!(matches!(
        coded(404, Code::SessionNotFound, "gone", About::Terminal(S)),
        ClientError::SessionNotFound(s) if s == S
    ));
    assert!(matches!(
        uncoded(409, "closed", About::Terminal(S)),
        ClientError::SessionNotUsable { session, .. } if session == S
    ));
    // 404 on a recording, whatever code a server gives it (one this client does not know
    // reads as none).
    let id = Uuid::from_u128(9);
    let body = br#"{"error":"no such recording","code":"some_newer_code"}"#;
    let e = ErrorReply::parse(404, body).into_error(About::Recording(id));
    assert_eq!(
        e.to_string(),
        format!("no recording {id}; list them with `rmm recordings`")
    );
}
