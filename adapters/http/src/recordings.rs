//! Terminal recordings: asciicast v2 files, one per terminal, listed and downloaded with the
//! audit log's visibility (admins and auditors all, technicians their own).

use chrono::{DateTime, Utc};
use futures_util::stream;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Object, OpenApi};
use rmm_application::{App, Ports, RecordingError, RecordingQuery, RecordingRecord};
use rmm_domain::{AgentId, TerminalId, UserId};
use rmm_protocol::api::ApiErrorCode;
use std::sync::Arc;
use uuid::Uuid;

use crate::auth::TechAuth;
use crate::error::{ErrorBody, error, internal};
use crate::{ApiTags, Handlers, Recordings, from_datetime, to_datetime};

#[OpenApi(prefix_path = "/api/v1")]
impl<P: Ports> Handlers<P, Recordings> {
    /// Terminal recordings, newest first (by start). Admins and auditors see every one,
    /// technicians their own.
    #[oai(
        path = "/recordings",
        method = "get",
        tag = "ApiTags::Recordings",
        operation_id = "listRecordings"
    )]
    async fn list_recordings(
        &self,
        auth: TechAuth,
        /// Only recordings of this agent.
        #[oai(example = "crate::examples::some_id")]
        agent_id: Query<Option<Uuid>>,
        /// Only recordings of this user's terminals.
        #[oai(example = "crate::examples::some_id")]
        user_id: Query<Option<Uuid>>,
        /// Started at or after.
        #[oai(example = "crate::examples::since")]
        since: Query<Option<DateTime<Utc>>>,
        /// Started before.
        #[oai(example = "crate::examples::until")]
        until: Query<Option<DateTime<Utc>>>,
        /// At most this many (1 to 500; default 50; fewer or more are taken as 1 or 500).
        #[oai(
            example = "crate::examples::limit",
            validator(minimum(value = "0"), maximum(value = "4294967295"))
        )]
        limit: Query<Option<u32>>,
    ) -> ListRecordingsResponse {
        let query = RecordingQuery {
            agent: agent_id.0.map(AgentId::from_uuid),
            user: user_id.0.map(UserId::from_uuid),
            since: since.0.map(from_datetime),
            until: until.0.map(from_datetime),
            limit: limit.0.unwrap_or(50),
        };
        match self.app.list_recordings(auth.0.actor, query).await {
            Ok(records) => ListRecordingsResponse::Ok(Json(RecordingList {
                recordings: records.iter().map(RecordingDto::from).collect(),
            })),
            Err(e @ RecordingError::Forbidden) => {
                ListRecordingsResponse::Forbidden(error(ApiErrorCode::Forbidden, e.to_string()))
            }
            Err(e) => ListRecordingsResponse::Internal(internal("list_recordings", &e)),
        }
    }

    /// A recording: the asciicast v2 file (`application/x-asciicast`), streamed. It plays in
    /// `asciinema play` as it is. A live terminal's recording grows until it ends. One the
    /// retention sweep pruned answers 410 `recording_pruned`.
    #[oai(
        path = "/recordings/:recording_id",
        method = "get",
        tag = "ApiTags::Recordings",
        operation_id = "getRecording"
    )]
    async fn get_recording(
        &self,
        auth: TechAuth,
        /// The recording's id (from `listRecordings`).
        #[oai(name = "recording_id", example = "crate::examples::id")]
        recording_id: Path<Uuid>,
    ) -> RecordingResponse {
        let id = TerminalId::from_uuid(recording_id.0);
        match self.app.recording(auth.0.actor, id).await {
            Ok(record) if record.pruned => RecordingResponse::Gone(error(
                ApiErrorCode::RecordingPruned,
                format!("recording {id} was pruned by the retention sweep"),
            )),
            Ok(_) => RecordingResponse::Ok(Binary(poem::Body::from_bytes_stream(chunks(
                Arc::clone(&self.app),
                id,
            )))),
            Err(e @ RecordingError::NotFound(_)) => {
                RecordingResponse::NotFound(error(ApiErrorCode::RecordingNotFound, e.to_string()))
            }
            Err(e) => RecordingResponse::Internal(internal("get_recording", &e)),
        }
    }
}

/// The cast file's chunks, read one at a time.
fn chunks<P: Ports>(
    app: Arc<App<P>>,
    id: TerminalId,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    stream::try_unfold(0u32, move |seq| {
        let app = Arc::clone(&app);
        async move {
            match app.recording_chunk(id, seq).await {
                Ok(Some(data)) => Ok(Some((bytes::Bytes::from(data), seq + 1))),
                Ok(None) => Ok(None),
                Err(e) => {
                    tracing::error!(recording_id = %id, seq, error = %e, "could not read a recording chunk");
                    Err(std::io::Error::other("the recording could not be read"))
                }
            }
        }
    })
}

#[derive(Debug, Object)]
struct RecordingDto {
    recording_id: Uuid,
    terminal_id: Uuid,
    session_id: Uuid,
    agent_id: Uuid,
    /// Whose terminal it was.
    user_id: Uuid,
    started_at: DateTime<Utc>,
    /// Null while the terminal lives.
    #[oai(nullable)]
    ended_at: Option<DateTime<Utc>>,
    cols: u16,
    rows: u16,
    term: String,
    /// Null: the login shell.
    #[oai(nullable)]
    command: Option<String>,
    /// Size of the cast file, bytes.
    size: u64,
    /// The size cap was reached: the cast ends with a marker saying so.
    truncated: bool,
    /// The retention sweep removed its content (`RMM_RECORDING_RETENTION_SECS`): its
    /// download answers 410 `recording_pruned`.
    pruned: bool,
}

impl From<&RecordingRecord> for RecordingDto {
    fn from(r: &RecordingRecord) -> Self {
        Self {
            recording_id: r.id.as_uuid(),
            terminal_id: r.id.as_uuid(),
            session_id: r.session.as_uuid(),
            agent_id: r.agent.as_uuid(),
            user_id: r.user.as_uuid(),
            started_at: to_datetime(r.started_at),
            ended_at: r.ended_at.map(to_datetime),
            cols: r.cols,
            rows: r.rows,
            term: r.term.clone(),
            command: r.command.clone(),
            size: r.size,
            truncated: r.truncated,
            pruned: r.pruned,
        }
    }
}

#[derive(Debug, Object)]
struct RecordingList {
    recordings: Vec<RecordingDto>,
}

#[derive(ApiResponse)]
enum ListRecordingsResponse {
    #[oai(status = 200)]
    Ok(Json<RecordingList>),
    /// A parameter that does not parse (`invalid_request`).
    #[oai(status = 400)]
    #[allow(dead_code)] // Answered by the parameter parser; listed for the API docs.
    BadRequest(Json<ErrorBody>),
    /// Missing, expired or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    /// A technician asked for another user's recordings.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum RecordingResponse {
    /// The cast file.
    #[oai(status = 200, content_type = "application/x-asciicast")]
    Ok(Binary<poem::Body>),
    /// A parameter that does not parse (`invalid_request`).
    #[oai(status = 400)]
    #[allow(dead_code)] // Answered by the parameter parser; listed for the API docs.
    BadRequest(Json<ErrorBody>),
    /// Missing, expired or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    /// No such recording, or not one the caller may see.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The retention sweep pruned the recording (`recording_pruned`).
    #[oai(status = 410)]
    Gone(Json<ErrorBody>),
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}
