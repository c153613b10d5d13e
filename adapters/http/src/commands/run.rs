//! The wire types of `POST /tunnel/{session_id}/command`: its body, its answer and the
//! statuses it documents.

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};
use uuid::Uuid;

use crate::error::ErrorBody;
use crate::rules::{CommandRule, Text};

#[derive(Debug, Object)]
pub(super) struct CommandBody {
    /// Run through the agent's shell (`sh -c` on Unix); stdin closed unless `stdin`. Not
    /// blank, no NUL, at most 65,536 characters.
    pub(super) command: Text<CommandRule>,
    /// Kill the command (its whole process group) after this many seconds (1 to 86400);
    /// default 300.
    #[oai(nullable, validator(minimum(value = "1"), maximum(value = "86400")))]
    pub(super) timeout_secs: Option<u64>,
    /// Keep the command's stdin open: send it with
    /// `PUT /api/v1/tunnel/{session_id}/commands/{command_id}/stdin` (EOF at the body's end).
    /// Default false: stdin is closed.
    #[oai(default)]
    pub(super) stdin: bool,
}

#[derive(Debug, Object)]
pub(super) struct CommandStartedDto {
    pub(super) command_id: Uuid,
    /// The channel its output frames carry on the session stream.
    pub(super) channel_id: String,
    pub(super) timeout_secs: u64,
}

#[derive(ApiResponse)]
pub(super) enum RunCommandResponse {
    /// Sent to the agent.
    #[oai(status = 202)]
    Accepted(Json<CommandStartedDto>),
    /// Empty, too long or otherwise invalid command or timeout.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing, expired or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    /// The session belongs to another user.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such session.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The session is closed (or still pending), or its agent is gone.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The agent is saturated (`agent_busy`), or the database cannot record the command with
    /// its audit entry (`database_unavailable`): it was not sent (commands never run
    /// unaudited). Retry shortly.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
    /// The body is not JSON: send `Content-Type: application/json`.
    #[oai(status = 415)]
    #[allow(dead_code)] // Answered by the body parser; listed for the API docs.
    UnsupportedMediaType(Json<ErrorBody>),
}
