//! Running commands in a tunnel and reading their stored output.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Object, OpenApi};
use rmm_application::{CommandRecord, GetCommandError, OutputStream, Ports, RunCommandError};
use rmm_domain::{Actor, CommandId, CommandStatus, SessionId};
use rmm_protocol::api::ApiErrorCode;
use uuid::Uuid;

use crate::auth::TechAuth;
use crate::error::{ErrorBody, error, internal};
use crate::wire_enum::Wire;
use crate::{ApiTags, Commands, Handlers, to_datetime};

mod run;

use run::{CommandBody, CommandStartedDto, RunCommandResponse};

#[OpenApi(prefix_path = "/api/v1")]
impl<P: Ports> Handlers<P, Commands> {
    /// Run a command in the session's tunnel. Answers at once; output streams live on
    /// `GET /api/v1/tunnel/{session_id}/stream` and is kept for
    /// `GET /api/v1/tunnel/{session_id}/commands/{command_id}`.
    #[oai(
        path = "/tunnel/:session_id/command",
        method = "post",
        tag = "ApiTags::Commands",
        operation_id = "runCommand"
    )]
    async fn run_command(
        &self,
        auth: TechAuth,
        /// The tunnel session's id (from `openTunnel`).
        #[oai(name = "session_id", example = "crate::examples::id")]
        session_id: Path<Uuid>,
        body: Json<CommandBody>,
    ) -> RunCommandResponse {
        let session = SessionId::from_uuid(session_id.0);
        match self
            .app
            .run_command_with(
                auth.0.actor,
                session,
                &body.command,
                body.timeout_secs,
                None,
                body.stdin,
            )
            .await
        {
            Ok(record) => RunCommandResponse::Accepted(Json(CommandStartedDto {
                command_id: record.id.as_uuid(),
                channel_id: record.channel.to_string(),
                timeout_secs: record.timeout_secs,
            })),
            Err(e @ RunCommandError::Invalid(_)) => {
                RunCommandResponse::BadRequest(error(ApiErrorCode::InvalidRequest, e.to_string()))
            }
            Err(e @ RunCommandError::NotFound(_)) => {
                RunCommandResponse::NotFound(error(ApiErrorCode::SessionNotFound, e.to_string()))
            }
            Err(e @ RunCommandError::Forbidden(_)) => {
                RunCommandResponse::Forbidden(error(ApiErrorCode::Forbidden, e.to_string()))
            }
            Err(e @ RunCommandError::NotActive(_)) => {
                RunCommandResponse::Conflict(error(ApiErrorCode::SessionNotActive, e.to_string()))
            }
            Err(e @ RunCommandError::AgentOffline(_)) => {
                RunCommandResponse::Conflict(error(ApiErrorCode::AgentNotConnected, e.to_string()))
            }
            Err(e @ RunCommandError::ChannelBusy(_)) => {
                RunCommandResponse::Conflict(error(ApiErrorCode::ChannelBusy, e.to_string()))
            }
            Err(e @ RunCommandError::StdinUnsupported) => {
                RunCommandResponse::Conflict(error(ApiErrorCode::AgentUnsupported, e.to_string()))
            }
            Err(e @ RunCommandError::Overloaded) => {
                RunCommandResponse::Unavailable(error(ApiErrorCode::AgentBusy, e.to_string()))
            }
            Err(e @ (RunCommandError::AuditUnavailable(_) | RunCommandError::Store(_))) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "command refused: the database cannot record it");
                RunCommandResponse::Unavailable(error(
                    ApiErrorCode::DatabaseUnavailable,
                    e.to_string(),
                ))
            }
        }
    }

    /// A command's status and the start of its stored output: at most 1 MiB of each stream
    /// inline, with `stdout_truncated` / `stderr_truncated` true when there is more (read
    /// `.../stdout` and `.../stderr` for every stored byte). With `wait`, holds the request
    /// until the command ends or `wait` seconds pass (at most 300).
    #[oai(
        path = "/tunnel/:session_id/commands/:command_id",
        method = "get",
        tag = "ApiTags::Commands",
        operation_id = "getCommand"
    )]
    async fn get_command(
        &self,
        auth: TechAuth,
        /// The tunnel session's id (from `openTunnel`).
        #[oai(name = "session_id", example = "crate::examples::id")]
        session_id: Path<Uuid>,
        /// The command's id (from `runCommand`).
        #[oai(name = "command_id", example = "crate::examples::id")]
        command_id: Path<Uuid>,
        /// Hold the answer until the command ends or this many seconds pass (at most 300).
        #[oai(
            example = "crate::examples::wait_secs",
            validator(minimum(value = "0"), maximum(value = "300"))
        )]
        wait: Query<Option<u64>>,
    ) -> CommandResponse {
        let wait = wait
            .0
            .map(|secs| Duration::from_secs(secs.min(MAX_WAIT_SECS)));
        let (session, id) = (
            SessionId::from_uuid(session_id.0),
            CommandId::from_uuid(command_id.0),
        );
        let result = self.app.get_command(auth.0.actor, session, id, wait).await;
        self.command_response(auth.0.actor, session, result).await
    }

    /// Cancel a running command: the agent kills its whole process group (TERM, then KILL).
    /// Answers with the command once its end is recorded (or after 10 s).
    #[oai(
        path = "/tunnel/:session_id/commands/:command_id",
        method = "delete",
        tag = "ApiTags::Commands",
        operation_id = "cancelCommand"
    )]
    async fn cancel_command(
        &self,
        auth: TechAuth,
        /// The tunnel session's id (from `openTunnel`).
        #[oai(name = "session_id", example = "crate::examples::id")]
        session_id: Path<Uuid>,
        /// The command's id (from `runCommand`).
        #[oai(name = "command_id", example = "crate::examples::id")]
        command_id: Path<Uuid>,
    ) -> CancelResponse {
        let (session, id) = (
            SessionId::from_uuid(session_id.0),
            CommandId::from_uuid(command_id.0),
        );
        let result = self
            .app
            .cancel_command(auth.0.actor, session, id, Duration::from_secs(10))
            .await;
        match result {
            Err(e @ (GetCommandError::Store(_) | GetCommandError::EndNotRecorded(_))) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "cancel not recorded: database unavailable");
                CancelResponse::Unavailable(error(ApiErrorCode::DatabaseUnavailable, e.to_string()))
            }
            other => self
                .command_response(auth.0.actor, session, other)
                .await
                .into(),
        }
    }

    /// The exact bytes the command wrote to stdout (up to the stored cap).
    #[oai(
        path = "/tunnel/:session_id/commands/:command_id/stdout",
        method = "get",
        tag = "ApiTags::Commands",
        operation_id = "getCommandStdout"
    )]
    async fn command_stdout(
        &self,
        auth: TechAuth,
        /// The tunnel session's id (from `openTunnel`).
        #[oai(name = "session_id", example = "crate::examples::id")]
        session_id: Path<Uuid>,
        /// The command's id (from `runCommand`).
        #[oai(name = "command_id", example = "crate::examples::id")]
        command_id: Path<Uuid>,
    ) -> RawOutputResponse {
        self.raw_output(
            auth.0.actor,
            session_id.0,
            command_id.0,
            OutputStream::Stdout,
        )
        .await
    }

    /// The exact bytes the command wrote to stderr (up to the stored cap).
    #[oai(
        path = "/tunnel/:session_id/commands/:command_id/stderr",
        method = "get",
        tag = "ApiTags::Commands",
        operation_id = "getCommandStderr"
    )]
    async fn command_stderr(
        &self,
        auth: TechAuth,
        /// The tunnel session's id (from `openTunnel`).
        #[oai(name = "session_id", example = "crate::examples::id")]
        session_id: Path<Uuid>,
        /// The command's id (from `runCommand`).
        #[oai(name = "command_id", example = "crate::examples::id")]
        command_id: Path<Uuid>,
    ) -> RawOutputResponse {
        self.raw_output(
            auth.0.actor,
            session_id.0,
            command_id.0,
            OutputStream::Stderr,
        )
        .await
    }
}

/// How reading a command fails, the same for its record and its raw output.
enum ReadError {
    NotFound(Json<ErrorBody>),
    Forbidden(Json<ErrorBody>),
    /// The output was pruned (only reading the output says so; the record shows
    /// `output_pruned`).
    Gone(Json<ErrorBody>),
    Internal(Json<ErrorBody>),
}

impl ReadError {
    fn of(e: &GetCommandError, operation: &str) -> Self {
        match e {
            GetCommandError::NotFound(_) => {
                Self::NotFound(error(ApiErrorCode::CommandNotFound, e.to_string()))
            }
            GetCommandError::SessionNotFound(_) => {
                Self::NotFound(error(ApiErrorCode::SessionNotFound, e.to_string()))
            }
            GetCommandError::Forbidden(_) => {
                Self::Forbidden(error(ApiErrorCode::Forbidden, e.to_string()))
            }
            GetCommandError::OutputPruned(_) => {
                Self::Gone(error(ApiErrorCode::OutputPruned, e.to_string()))
            }
            GetCommandError::Store(_) | GetCommandError::EndNotRecorded(_) => {
                Self::Internal(internal(operation, e))
            }
        }
    }
}

impl From<ReadError> for CommandResponse {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NotFound(b) => Self::NotFound(b),
            ReadError::Forbidden(b) => Self::Forbidden(b),
            // Reading a record never fails as pruned: it says `output_pruned` instead.
            ReadError::Gone(b) | ReadError::Internal(b) => Self::Internal(b),
        }
    }
}

impl From<ReadError> for RawOutputResponse {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NotFound(b) => Self::NotFound(b),
            ReadError::Forbidden(b) => Self::Forbidden(b),
            ReadError::Gone(b) => Self::Gone(b),
            ReadError::Internal(b) => Self::Internal(b),
        }
    }
}

/// The longest `?wait=` honoured, seconds.
const MAX_WAIT_SECS: u64 = 300;
/// Bytes of each output stream a command's JSON inlines at most (its text is at most this
/// long too); the raw `/stdout` and `/stderr` endpoints stream all that is stored.
const INLINE_OUTPUT_BYTES: usize = 1024 * 1024;
/// Chunks read from the store per round while streaming raw output.
const RAW_CHUNKS_PER_READ: u32 = 16;

impl<P: Ports> Handlers<P, Commands> {
    async fn command_response(
        &self,
        actor: Actor,
        session: SessionId,
        result: Result<CommandRecord, GetCommandError>,
    ) -> CommandResponse {
        let record = match result {
            Ok(record) => record,
            Err(e) => return ReadError::of(&e, "get_command").into(),
        };
        let mut streams = Vec::with_capacity(2);
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            match self
                .app
                .command_output_prefix(actor, session, record.id, stream, INLINE_OUTPUT_BYTES)
                .await
            {
                Ok((prefix, more)) => streams.push(Inline::new(&prefix, more)),
                Err(e) => return CommandResponse::Internal(internal("read_output", &e)),
            }
        }
        let stderr = streams.pop().unwrap_or_default();
        let stdout = streams.pop().unwrap_or_default();
        CommandResponse::Ok(Json(Box::new(CommandDto::new(&record, stdout, stderr))))
    }

    async fn raw_output(
        &self,
        actor: Actor,
        session: Uuid,
        command: Uuid,
        stream: OutputStream,
    ) -> RawOutputResponse {
        let (session, id) = (SessionId::from_uuid(session), CommandId::from_uuid(command));
        // The first read checks access, so errors are answered before any byte is streamed.
        let first = match self
            .app
            .command_output_chunks(actor, session, id, stream, 0, RAW_CHUNKS_PER_READ)
            .await
        {
            Ok(chunks) => chunks,
            Err(e) => return ReadError::of(&e, "read_output").into(),
        };
        let app = Arc::clone(&self.app);
        // Streamed a few chunks at a time: memory stays bounded whatever the output size.
        let body = futures_util::stream::unfold(Some(first), move |state| {
            let app = Arc::clone(&app);
            async move {
                let chunks = state?;
                if chunks.is_empty() {
                    return None;
                }
                let next_seq = chunks.last().map_or(0, |(seq, _)| seq + 1);
                let full = chunks.len() >= RAW_CHUNKS_PER_READ as usize;
                let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, b)| b).collect();
                let next = if full {
                    match app
                        .command_output_chunks(
                            actor,
                            session,
                            id,
                            stream,
                            next_seq,
                            RAW_CHUNKS_PER_READ,
                        )
                        .await
                    {
                        Ok(chunks) => Some(chunks),
                        Err(e) => {
                            tracing::error!(error = %e, "reading output while streaming failed");
                            return Some((Err(std::io::Error::other("output store failed")), None));
                        }
                    }
                } else {
                    Some(Vec::new())
                };
                Some((Ok::<_, std::io::Error>(bytes), next))
            }
        });
        RawOutputResponse::Ok(Binary(poem::Body::from_bytes_stream(
            futures_util::StreamExt::map(body, |r| r.map(bytes::Bytes::from)),
        )))
    }
}

#[derive(Debug, Object)]
struct CommandDto {
    command_id: Uuid,
    channel_id: String,
    session_id: Uuid,
    command: String,
    // `running`, `completed`, `timed_out`, `cancelled` or `failed` (agent gone).
    status: Wire<CommandStatus>,
    /// Null while running; 128 + signal number when killed by a signal.
    #[oai(nullable)]
    exit_code: Option<i32>,
    /// The signal that killed the process, e.g. `SIGKILL`.
    #[oai(skip_serializing_if_is_none)]
    signal: Option<String>,
    /// The start of the stored stdout, decoded as UTF-8 (invalid bytes replaced), at most
    /// 1 MiB (1,048,576 bytes) of text: `.../stdout` streams every stored byte.
    stdout: String,
    /// As `stdout`, for stderr (`.../stderr`).
    stderr: String,
    /// Bytes written in all (stored or not).
    stdout_bytes: u64,
    stderr_bytes: u64,
    /// True when `stdout` shows less than the command wrote: the text stops at its 1 MiB
    /// bound or the stored output stops at the server's cap (`RMM_MAX_COMMAND_OUTPUT`). Read
    /// `GET .../commands/{command_id}/stdout` for all stored bytes.
    stdout_truncated: bool,
    /// As `stdout_truncated`, for stderr (`GET .../commands/{command_id}/stderr`).
    stderr_truncated: bool,
    /// True when the server's retention sweep removed the stored output: `stdout` and
    /// `stderr` are empty because it was pruned, not because the command wrote nothing.
    output_pruned: bool,
    timeout_secs: u64,
    started_at: DateTime<Utc>,
    #[oai(nullable)]
    finished_at: Option<DateTime<Utc>>,
}

/// What a command's JSON shows of one stream: text of at most [`INLINE_OUTPUT_BYTES`]
/// bytes, and whether it stops short of what is stored.
#[derive(Debug, Default)]
struct Inline {
    text: String,
    short: bool,
}

impl Inline {
    /// `prefix` (the start of the stored bytes; `more` when more is stored) as text: invalid
    /// UTF-8 is replaced, which can lengthen it, so the text is cut again at a character
    /// boundary within the bound.
    fn new(mut prefix: &[u8], more: bool) -> Self {
        // A character the bound cut in two is left out rather than shown as U+FFFD.
        if more
            && let Err(e) = std::str::from_utf8(prefix)
            && e.error_len().is_none()
        {
            prefix = &prefix[..e.valid_up_to()];
        }
        let mut text = String::from_utf8_lossy(prefix).into_owned();
        let mut short = more;
        if text.len() > INLINE_OUTPUT_BYTES {
            let mut end = INLINE_OUTPUT_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            short = true;
        }
        Self { text, short }
    }
}

impl CommandDto {
    fn new(r: &CommandRecord, stdout: Inline, stderr: Inline) -> Self {
        Self {
            command_id: r.id.as_uuid(),
            channel_id: r.channel.to_string(),
            session_id: r.session.as_uuid(),
            command: r.text.clone(),
            status: Wire(r.status),
            exit_code: r.exit_code,
            signal: r.signal.clone(),
            stdout: stdout.text,
            stderr: stderr.text,
            stdout_bytes: r.stdout_bytes,
            stderr_bytes: r.stderr_bytes,
            stdout_truncated: r.stdout_truncated || stdout.short,
            stderr_truncated: r.stderr_truncated || stderr.short,
            output_pruned: r.output_pruned,
            timeout_secs: r.timeout_secs,
            started_at: to_datetime(r.started_at),
            finished_at: r.finished_at.map(to_datetime),
        }
    }
}

#[derive(ApiResponse)]
enum CommandResponse {
    /// The command.
    #[oai(status = 200)]
    Ok(Json<Box<CommandDto>>),
    /// A path parameter is not a UUID.
    #[oai(status = 400)]
    #[allow(dead_code)] // Answered by the path parser; listed for the API docs.
    BadRequest(Json<ErrorBody>),
    /// Missing, expired or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    /// The session belongs to another user.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such session, or no such command in it.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The server failed; details are in its log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum CancelResponse {
    /// The command, ended unless the agent took longer than 10 s to stop it.
    #[oai(status = 200)]
    Ok(Json<Box<CommandDto>>),
    /// A path parameter is not a UUID.
    #[oai(status = 400)]
    #[allow(dead_code)] // Answered by the path parser; listed for the API docs.
    BadRequest(Json<ErrorBody>),
    /// Missing, expired or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    /// The session belongs to another user.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such session, or no such command in it.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// Reading the command's output failed; details are in the server's log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The database cannot record the command's end (`database_unavailable`): as stored it is
    /// still running; the server records the end once the database is back.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

impl From<CommandResponse> for CancelResponse {
    fn from(response: CommandResponse) -> Self {
        match response {
            CommandResponse::Ok(body) => Self::Ok(body),
            CommandResponse::BadRequest(body) => Self::BadRequest(body),
            CommandResponse::Unauthorized(body) => Self::Unauthorized(body),
            CommandResponse::Forbidden(body) => Self::Forbidden(body),
            CommandResponse::NotFound(body) => Self::NotFound(body),
            CommandResponse::Internal(body) => Self::Internal(body),
        }
    }
}

#[derive(ApiResponse)]
enum RawOutputResponse {
    /// The bytes, streamed.
    #[oai(status = 200)]
    Ok(Binary<poem::Body>),
    /// A path parameter is not a UUID.
    #[oai(status = 400)]
    #[allow(dead_code)] // Answered by the path parser; listed for the API docs.
    BadRequest(Json<ErrorBody>),
    /// Missing, expired or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    /// The session belongs to another user.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such session, or no such command in it.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The retention sweep removed the command's stored output (`output_pruned`); its record
    /// stays.
    #[oai(status = 410)]
    Gone(Json<ErrorBody>),
    /// The server failed; details are in its log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}
