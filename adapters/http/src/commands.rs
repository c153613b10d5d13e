//! Running commands in a tunnel and reading their stored output.

mod dto;

use std::sync::Arc;
use std::time::Duration;

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, OpenApi};
use rmm_application::{CommandRecord, GetCommandError, OutputStream, Ports, RunCommandError};
use rmm_domain::{Actor, CommandId, SessionId};
use rmm_protocol::api::ApiErrorCode;
use uuid::Uuid;

use crate::auth::TechAuth;
use crate::error::{ErrorBody, error, internal};
use crate::{ApiTags, Commands, Handlers};
use dto::{CommandDto, Inline};

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
