//! Moving files to and from the agent, streamed both ways.

use poem::Request;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Object, OpenApi};
use rmm_application::{ByteRange, ByteStream, FileAccessError, FileOpError, Ports, TransferError};
use rmm_domain::SessionId;
use rmm_protocol::FileErrorCode;
use rmm_protocol::api::ApiErrorCode;
use uuid::Uuid;

use crate::auth::TechAuth;
use crate::error::{ErrorBody, error, internal};
use crate::rules::{AgentPathRule, Text};
use crate::{ApiTags, Files, Handlers};

#[OpenApi(prefix_path = "/api/v1")]
impl<P: Ports> Handlers<P, Files> {
    /// Upload the request body to `path` on the agent (any size, streamed). The agent writes
    /// a temporary file beside the target and renames it into place only when every byte has
    /// arrived and the SHA-256 matches: an interrupted upload leaves no file at `path`. Resume
    /// with `offset` = the size `files/upload-status` reports (pass `sha256` of the whole file
    /// so the resumed result is verified).
    #[oai(
        path = "/tunnel/:session_id/files",
        method = "put",
        tag = "ApiTags::Files",
        operation_id = "uploadFile"
    )]
    async fn upload_file(
        &self,
        auth: TechAuth,
        /// The tunnel session's id (from `openTunnel`).
        #[oai(name = "session_id", example = "crate::examples::id")]
        session_id: Path<Uuid>,
        /// Absolute path of the file on the agent.
        #[oai(example = "crate::examples::file_path")]
        path: Query<Text<AgentPathRule>>,
        /// Resume from this byte (the bytes before it are already on the agent).
        #[oai(
            example = "crate::examples::offset",
            validator(minimum(value = "0"), maximum(value = "9007199254740991"))
        )]
        offset: Query<Option<u64>>,
        /// Expected SHA-256 (hex) of the whole file.
        #[oai(example = "crate::examples::sha256")]
        sha256: Query<Option<String>>,
        body: RawBody,
    ) -> UploadResponse {
        let stream: ByteStream = Box::pin(body.0.into_bytes_stream());
        let session = SessionId::from_uuid(session_id.0);
        let offset = offset.0.unwrap_or(0);
        match self
            .app
            .upload_file(auth.0.actor, session, &path.0, offset, sha256.0, stream)
            .await
        {
            Ok(done) => UploadResponse::Created(Json(UploadedDto {
                path: done.path,
                size: done.size,
                sha256: done.sha256,
            })),
            Err(e) => UploadResponse::from(FileErrorResponse::from(e)),
        }
    }

    /// Download `path` from the agent, streamed, with its SHA-256 (of the whole file) in
    /// `X-Content-SHA256`. A single byte range (`Range: bytes=N-` to resume from byte N, or
    /// `bytes=N-M`) answers 206 with `Content-Range`; a range starting at or past the end
    /// answers 416. Other range forms (suffix `bytes=-N`, several ranges) are ignored and
    /// the whole file is sent (200), as RFC 9110 allows.
    #[oai(
        path = "/tunnel/:session_id/files",
        method = "get",
        tag = "ApiTags::Files",
        operation_id = "downloadFile"
    )]
    async fn download_file(
        &self,
        auth: TechAuth,
        /// The tunnel session's id (from `openTunnel`).
        #[oai(name = "session_id", example = "crate::examples::id")]
        session_id: Path<Uuid>,
        /// Absolute path of the file on the agent.
        #[oai(example = "crate::examples::file_path")]
        path: Query<Text<AgentPathRule>>,
        /// `bytes=N-` (from byte N to the end) or `bytes=N-M` (bytes N to M inclusive).
        #[oai(name = "Range", example = "crate::examples::range")]
        range: Header<Option<String>>,
    ) -> DownloadResponse {
        let range = byte_range(range.0.as_deref());
        let session = SessionId::from_uuid(session_id.0);
        let actor = auth.0.actor;
        let started = match range {
            Some(range) => {
                self.app
                    .download_range(actor, session, &path.0, range)
                    .await
            }
            None => self.app.download_file(actor, session, &path.0, 0).await,
        };
        match started {
            Ok(d) => {
                let length = d.end - d.offset;
                let body = Binary(poem::Body::from_bytes_stream(d.body));
                if range.is_none() {
                    return DownloadResponse::Ok(body, d.sha256, length, "bytes".into());
                }
                let last = d.end.saturating_sub(1);
                let content_range = format!("bytes {}-{last}/{}", d.offset, d.size);
                DownloadResponse::Partial(body, d.sha256, length, content_range, "bytes".into())
            }
            Err(TransferError::Failed(FileOpError::RangeNotSatisfiable { size })) => {
                unsatisfiable(Some(size))
            }
            // The agent refuses an offset past the end before it says the size.
            Err(TransferError::Failed(FileOpError::Agent {
                code: FileErrorCode::BadOffset,
                ..
            })) if range.is_some() => unsatisfiable(None),
            Err(e) => DownloadResponse::from(FileErrorResponse::from(e)),
        }
    }

    /// List a directory on the agent: name, type, size, mode and modification time.
    #[oai(
        path = "/tunnel/:session_id/files/list",
        method = "get",
        tag = "ApiTags::Files",
        operation_id = "listFiles"
    )]
    async fn list_files(
        &self,
        auth: TechAuth,
        /// The tunnel session's id (from `openTunnel`).
        #[oai(name = "session_id", example = "crate::examples::id")]
        session_id: Path<Uuid>,
        /// Absolute path of the directory on the agent.
        #[oai(example = "crate::examples::dir_path")]
        path: Query<Text<AgentPathRule>>,
    ) -> ListFilesResponse {
        let session = SessionId::from_uuid(session_id.0);
        match self.app.list_files(auth.0.actor, session, &path.0).await {
            Ok(entries) => ListFilesResponse::Ok(Json(DirectoryDto {
                path: path.0.into_string(),
                entries: entries
                    .into_iter()
                    .map(|e| FileEntryDto {
                        name: e.name,
                        kind: e.kind,
                        size: e.size,
                        mode: e.mode,
                        modified: e.modified,
                    })
                    .collect(),
            })),
            Err(e) => ListFilesResponse::from(FileErrorResponse::from(e)),
        }
    }

    /// How many bytes of an interrupted upload to `path` the agent holds (0 when none): the
    /// `offset` to resume from.
    #[oai(
        path = "/tunnel/:session_id/files/upload-status",
        method = "get",
        tag = "ApiTags::Files",
        operation_id = "getUploadStatus"
    )]
    async fn upload_status(
        &self,
        auth: TechAuth,
        /// The tunnel session's id (from `openTunnel`).
        #[oai(name = "session_id", example = "crate::examples::id")]
        session_id: Path<Uuid>,
        /// Absolute path of the file being uploaded.
        #[oai(example = "crate::examples::file_path")]
        path: Query<Text<AgentPathRule>>,
    ) -> UploadStatusResponse {
        let session = SessionId::from_uuid(session_id.0);
        match self.app.upload_status(auth.0.actor, session, &path.0).await {
            Ok(size) => UploadStatusResponse::Ok(Json(UploadStatusDto {
                path: path.0.into_string(),
                received: size,
            })),
            Err(e) => UploadStatusResponse::from(FileErrorResponse::from(e)),
        }
    }
}

/// A request body taken as raw bytes, streamed, whatever its `Content-Type` (or none: `curl
/// -T` sends none, and a file's bytes need no media type).
pub struct RawBody(poem::Body);

impl RawBody {
    pub(crate) fn into_inner(self) -> poem::Body {
        self.0
    }
}

impl std::fmt::Debug for RawBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawBody(..)")
    }
}

impl<'a> poem_openapi::ApiExtractor<'a> for RawBody {
    const TYPES: &'static [poem_openapi::ApiExtractorType] =
        &[poem_openapi::ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut poem_openapi::registry::Registry) {
        <Binary<poem::Body> as poem_openapi::payload::Payload>::register(registry);
    }

    fn request_meta() -> Option<poem_openapi::registry::MetaRequest> {
        Some(poem_openapi::registry::MetaRequest {
            description: Some("The file's bytes, any Content-Type."),
            content: vec![poem_openapi::registry::MetaMediaType {
                content_type: "application/octet-stream",
                schema: <Binary<poem::Body> as poem_openapi::payload::Payload>::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        _request: &'a Request,
        body: &mut poem::RequestBody,
        _param_opts: poem_openapi::ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        Ok(Self(body.take()?))
    }
}

#[derive(Debug, Object)]
struct UploadedDto {
    path: String,
    size: u64,
    /// SHA-256 (hex) of the whole file as written.
    sha256: String,
}

#[derive(Debug, Object)]
struct UploadStatusDto {
    path: String,
    /// Bytes of the interrupted upload on the agent: resume with `offset` = this.
    received: u64,
}

#[derive(Debug, Object)]
struct FileEntryDto {
    name: String,
    /// `file`, `dir`, `symlink` or `other`.
    #[oai(rename = "type")]
    kind: String,
    size: u64,
    /// Unix permission bits.
    #[oai(skip_serializing_if_is_none)]
    mode: Option<u32>,
    /// Seconds since the Unix epoch.
    #[oai(skip_serializing_if_is_none)]
    modified: Option<i64>,
}

#[derive(Debug, Object)]
struct DirectoryDto {
    path: String,
    entries: Vec<FileEntryDto>,
}

/// The error statuses shared by every file operation.
enum FileErrorResponse {
    BadRequest(Json<ErrorBody>),
    Forbidden(Json<ErrorBody>),
    NotFound(Json<ErrorBody>),
    Conflict(Json<ErrorBody>),
    Unprocessable(Json<ErrorBody>),
    Internal(Json<ErrorBody>),
    Unavailable(Json<ErrorBody>),
    Timeout(Json<ErrorBody>),
    InsufficientStorage(Json<ErrorBody>),
}

impl From<TransferError> for FileErrorResponse {
    fn from(e: TransferError) -> Self {
        let body = |code: ApiErrorCode| error(code, e.to_string());
        match &e {
            TransferError::Access(FileAccessError::NotAbsolute(_)) => {
                Self::BadRequest(body(ApiErrorCode::NotAbsolute))
            }
            // The agent's code for such a path; a 400: the server saw the form is wrong.
            TransferError::Access(FileAccessError::InvalidPath(problem)) => {
                Self::BadRequest(body(ApiErrorCode::from(problem.code())))
            }
            TransferError::Access(FileAccessError::NotFound(_)) => {
                Self::NotFound(body(ApiErrorCode::SessionNotFound))
            }
            TransferError::Access(FileAccessError::Forbidden(_)) => {
                Self::Forbidden(body(ApiErrorCode::Forbidden))
            }
            TransferError::Access(FileAccessError::NotActive(_)) => {
                Self::Conflict(body(ApiErrorCode::SessionNotActive))
            }
            TransferError::Failed(FileOpError::Unsupported) => {
                Self::Conflict(body(ApiErrorCode::AgentUnsupported))
            }
            TransferError::Access(FileAccessError::Store(_)) => {
                Self::Internal(internal("file_access", &e))
            }
            TransferError::Failed(FileOpError::Agent { code, .. }) => {
                Self::of_agent_code(*code, body(ApiErrorCode::from(*code)))
            }
            TransferError::Failed(FileOpError::AgentGone) => {
                Self::Unavailable(body(ApiErrorCode::AgentGone))
            }
            TransferError::Failed(FileOpError::Busy) => {
                Self::Unavailable(body(ApiErrorCode::AgentBusy))
            }
            TransferError::Failed(FileOpError::ClientAborted(_)) => {
                Self::BadRequest(body(ApiErrorCode::TransferAborted))
            }
            TransferError::Failed(FileOpError::Timeout) => {
                Self::Timeout(body(ApiErrorCode::AgentTimeout))
            }
            TransferError::Failed(FileOpError::Protocol(_)) => {
                Self::Internal(internal("file_transfer", &e))
            }
            // Only a download with a range can meet it, and it answers 416 itself.
            TransferError::Failed(FileOpError::RangeNotSatisfiable { .. }) => {
                Self::BadRequest(body(ApiErrorCode::RangeNotSatisfiable))
            }
        }
    }
}

impl FileErrorResponse {
    /// The status of an agent's `file_error` code. Every refusal of the path the client
    /// named is a 4xx; only `io` (any other failure) is a 500. The server has checked the
    /// path's form before asking (a 400 when it is wrong), so what the agent refuses is a
    /// well-formed request its machine does not take (409): a path its system does not
    /// call absolute (`C:\x` on Linux) or valid, the wrong kind of file, an offset that
    /// does not match what is held.
    fn of_agent_code(code: FileErrorCode, body: Json<ErrorBody>) -> Self {
        match code {
            FileErrorCode::NotFound => Self::NotFound(body),
            FileErrorCode::PermissionDenied => Self::Forbidden(body),
            FileErrorCode::NotAbsolute
            | FileErrorCode::NameTooLong
            | FileErrorCode::InvalidPath
            | FileErrorCode::IsDirectory
            | FileErrorCode::NotADirectory
            | FileErrorCode::NotARegularFile
            | FileErrorCode::BadOffset => Self::Conflict(body),
            FileErrorCode::ChecksumMismatch => Self::Unprocessable(body),
            FileErrorCode::DiskFull => Self::InsufficientStorage(body),
            FileErrorCode::Io => Self::Internal(body),
        }
    }
}

/// Parses `Range`. Any other form (a suffix range, several ranges, another unit, M < N) is
/// `None`: the header is ignored and the whole file sent, as RFC 9110 allows.
fn byte_range(header: Option<&str>) -> Option<ByteRange> {
    let spec = header?.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let end = end.trim();
    if end.is_empty() {
        return Some(ByteRange { start, last: None });
    }
    let last = end.parse().ok()?;
    (last >= start).then_some(ByteRange {
        start,
        last: Some(last),
    })
}

/// 416, with the file's size when known (`bytes */SIZE`).
fn unsatisfiable(size: Option<u64>) -> DownloadResponse {
    DownloadResponse::RangeNotSatisfiable(
        error(
            ApiErrorCode::RangeNotSatisfiable,
            match size {
                Some(size) => {
                    format!("the range starts at or past the end of the file ({size} bytes)")
                }
                None => "the range starts past the end of the file".to_owned(),
            },
        ),
        size.map(|size| format!("bytes */{size}")),
    )
}

/// One response enum per file operation, all with the shared error statuses.
macro_rules! file_response {
    ($name:ident { $($(#[$meta:meta])* $variant:ident($($(#[$fmeta:meta])* $ty:ty),+ $(,)?)),+ $(,)? }) => {
        #[derive(ApiResponse)]
        enum $name {
            $($(#[$meta])* $variant($($(#[$fmeta])* $ty),+),)+
            /// Path not absolute (`not_absolute`), with a NUL byte (`invalid_path`) or too
            /// long (`name_too_long`), or an interrupted request body.
            #[oai(status = 400)]
            BadRequest(Json<ErrorBody>),
            /// Missing, expired or invalid token.
            #[oai(status = 401)]
            #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
            Unauthorized(Json<ErrorBody>),
            /// The session belongs to another user, or the agent was denied access (its
            /// reason is in the message).
            #[oai(status = 403)]
            Forbidden(Json<ErrorBody>),
            /// No such session, file or directory.
            #[oai(status = 404)]
            NotFound(Json<ErrorBody>),
            /// The session is not active, or its agent does not support file transfer; a
            /// directory where a file is needed (`is_directory`) or the reverse
            /// (`not_a_directory`); a device, FIFO or socket (`not_a_regular_file`); an offset
            /// the agent cannot resume from (`bad_offset`); a path the agent's system does
            /// not take (`not_absolute`, `name_too_long`, `invalid_path`).
            #[oai(status = 409)]
            Conflict(Json<ErrorBody>),
            /// The file's SHA-256 does not match the expected one (nothing was written).
            #[oai(status = 422)]
            Unprocessable(Json<ErrorBody>),
            /// The server or agent failed; details are in the server log.
            #[oai(status = 500)]
            Internal(Json<ErrorBody>),
            /// The agent is gone or too busy; try again.
            #[oai(status = 503)]
            Unavailable(Json<ErrorBody>),
            /// The agent did not answer in time.
            #[oai(status = 504)]
            Timeout(Json<ErrorBody>),
            /// The agent's disk is full.
            #[oai(status = 507)]
            InsufficientStorage(Json<ErrorBody>),
        }

        impl From<FileErrorResponse> for $name {
            fn from(e: FileErrorResponse) -> Self {
                match e {
                    FileErrorResponse::BadRequest(b) => Self::BadRequest(b),
                    FileErrorResponse::Forbidden(b) => Self::Forbidden(b),
                    FileErrorResponse::NotFound(b) => Self::NotFound(b),
                    FileErrorResponse::Conflict(b) => Self::Conflict(b),
                    FileErrorResponse::Unprocessable(b) => Self::Unprocessable(b),
                    FileErrorResponse::Internal(b) => Self::Internal(b),
                    FileErrorResponse::Unavailable(b) => Self::Unavailable(b),
                    FileErrorResponse::Timeout(b) => Self::Timeout(b),
                    FileErrorResponse::InsufficientStorage(b) => Self::InsufficientStorage(b),
                }
            }
        }
    };
}

file_response!(UploadResponse {
    /// Every byte arrived, the SHA-256 matched, and the file is in place.
    #[oai(status = 201)]
    Created(Json<UploadedDto>),
});

file_response!(DownloadResponse {
    /// The whole file.
    #[oai(status = 200)]
    Ok(
        Binary<poem::Body>,
        #[oai(header = "X-Content-SHA256")] String,
        #[oai(header = "Content-Length")] u64,
        #[oai(header = "Accept-Ranges")] String,
    ),
    /// The requested range (`Range: bytes=N-` or `bytes=N-M`); `X-Content-SHA256` is
    /// still the whole file's.
    #[oai(status = 206)]
    Partial(
        Binary<poem::Body>,
        #[oai(header = "X-Content-SHA256")] String,
        #[oai(header = "Content-Length")] u64,
        #[oai(header = "Content-Range")] String,
        #[oai(header = "Accept-Ranges")] String,
    ),
    /// The range starts at or past the end of the file (`range_not_satisfiable`).
    #[oai(status = 416)]
    RangeNotSatisfiable(
        Json<ErrorBody>,
        #[oai(header = "Content-Range")] Option<String>,
    ),
});

file_response!(ListFilesResponse {
    /// The directory's entries, by name.
    #[oai(status = 200)]
    Ok(Json<DirectoryDto>),
});

file_response!(UploadStatusResponse {
    /// Bytes held of an interrupted upload.
    #[oai(status = 200)]
    Ok(Json<UploadStatusDto>),
});

#[cfg(test)]
mod tests {
    use rmm_application::ByteRange;

    use super::byte_range;

    fn range(start: u64, last: Option<u64>) -> Option<ByteRange> {
        Some(ByteRange { start, last })
    }

    #[test]
    fn single_byte_ranges_with_a_first_byte_are_understood_and_others_ignored() {
        assert_eq!(byte_range(Some("bytes=100-")), range(100, None));
        assert_eq!(byte_range(Some("bytes=0-")), range(0, None));
        assert_eq!(byte_range(Some("bytes=1000-1999")), range(1000, Some(1999)));
        assert_eq!(byte_range(Some(" bytes=5-5 ")), range(5, Some(5)));
        assert_eq!(byte_range(Some("bytes=9-5")), None);
        assert_eq!(byte_range(Some("bytes=-5")), None);
        assert_eq!(byte_range(Some("bytes=0-1,5-6")), None);
        assert_eq!(byte_range(Some("items=1-")), None);
        assert_eq!(byte_range(None), None);
    }
}
