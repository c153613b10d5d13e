//! `GET /audit/export`: the audit log streamed as NDJSON or CSV, with the filters and the
//! visibility of `GET /audit` (the same filter struct and the same use case, page by page,
//! so memory stays bounded whatever the log's size).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::param::Query;
use poem_openapi::payload::{Binary, Json};
use poem_openapi::registry::{MetaMediaType, MetaResponses, MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::ToJSON as _;
use poem_openapi::{ApiResponse, OpenApi};
use rmm_application::{App, ListAuditError, Ports};
use rmm_domain::Actor;
use rmm_protocol::api::ApiErrorCode;
use serde_json::Value;
use uuid::Uuid;

use crate::audit::{AuditEntryDto, AuditFilters};
use crate::auth::TechAuth;
use crate::error::{ErrorBody, error, internal};
use crate::rules::{ExportFormatRule, Text};
use crate::{ApiTags, AuditExport, Handlers};

/// Entries read from the store per page while exporting (the list's largest page).
const EXPORT_PAGE: u32 = 500;

/// The CSV columns, in order: every field of an entry of `GET /audit`.
const CSV_COLUMNS: [&str; 20] = [
    "id",
    "at",
    "event",
    "tech_id",
    "username",
    "agent_id",
    "session_id",
    "detail",
    "command_id",
    "command",
    "status",
    "exit_code",
    "stdout_bytes",
    "stderr_bytes",
    "duration_ms",
    "path",
    "direction",
    "size",
    "sha256",
    "result",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Ndjson,
    Csv,
}

impl Format {
    fn parse(value: &str) -> Option<Self> {
        match value {
            "ndjson" => Some(Self::Ndjson),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }

    const fn content_type(self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }
}

#[OpenApi(prefix_path = "/api/v1")]
impl<P: Ports> Handlers<P, AuditExport> {
    /// The audit log as a file, newest first: every entry `GET /api/v1/audit` would list with
    /// the same filters and visibility (admins and auditors everything, technicians their own
    /// entries), streamed. `ndjson`: one JSON object per line with the fields of the list's
    /// entries. `csv`: a header row, then one row per entry (RFC 4180 quoting; absent fields
    /// are empty).
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/audit/export",
        method = "get",
        tag = "ApiTags::Audit",
        operation_id = "exportAudit"
    )]
    async fn export_audit(
        &self,
        auth: TechAuth,
        /// `ndjson` (one JSON object per line) or `csv` (a header row, then one row per entry).
        #[oai(example = "crate::examples::export_format")]
        format: Query<Text<ExportFormatRule>>,
        /// Only entries about this agent.
        #[oai(example = "crate::examples::some_id")]
        agent_id: Query<Option<Uuid>>,
        /// Only entries of this user (a technician may name only themself).
        #[oai(example = "crate::examples::some_id")]
        tech_id: Query<Option<Uuid>>,
        /// Only entries about this tunnel session.
        #[oai(example = "crate::examples::some_id")]
        session_id: Query<Option<Uuid>>,
        /// Only entries at or after this time (RFC 3339).
        #[oai(example = "crate::examples::since")]
        since: Query<Option<DateTime<Utc>>>,
        /// Only entries before this time (RFC 3339).
        #[oai(example = "crate::examples::until")]
        until: Query<Option<DateTime<Utc>>>,
        /// Only entries older than this entry id (the list's `before`).
        #[oai(
            example = "crate::examples::before",
            validator(minimum(value = "0"), maximum(value = "9007199254740991"))
        )]
        before: Query<Option<i64>>,
    ) -> Export {
        let Some(format) = Format::parse(format.0.as_str()) else {
            return Export(ExportResponse::BadRequest(error(
                ApiErrorCode::InvalidRequest,
                format!("format must be ndjson or csv, not {:?}", format.0.as_str()),
            )));
        };
        let filters = AuditFilters {
            agent_id: agent_id.0,
            tech_id: tech_id.0,
            session_id: session_id.0,
            since: since.0,
            until: until.0,
            before: before.0,
        };
        let actor = auth.0.actor;
        // The first page is read before answering, so a refusal is an error status, not a
        // broken stream.
        let first = match page(&self.app, actor, filters).await {
            Ok(first) => first,
            Err(e @ ListAuditError::Forbidden) => {
                return Export(ExportResponse::Forbidden(error(
                    ApiErrorCode::Forbidden,
                    e.to_string(),
                )));
            }
            Err(e @ ListAuditError::Store(_)) => {
                return Export(ExportResponse::Internal(internal("export_audit", &e)));
            }
        };
        let body = export_stream(Arc::clone(&self.app), actor, filters, format, first);
        Export(ExportResponse::Ok(
            Binary(poem::Body::from_bytes_stream(body)),
            format.content_type().to_owned(),
        ))
    }
}

/// The export's bytes: `first` (already read), then each following page as it is read.
fn export_stream<P: Ports>(
    app: Arc<App<P>>,
    actor: Actor,
    filters: AuditFilters,
    format: Format,
    first: (Vec<Value>, Option<i64>),
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(
        Some((first, filters, format == Format::Csv)),
        move |state| {
            let app = Arc::clone(&app);
            async move {
                let ((rows, next), mut filters, header) = state?;
                let mut text = String::new();
                if header {
                    text.push_str(&CSV_COLUMNS.join(","));
                    text.push_str("\r\n");
                }
                for row in &rows {
                    match format {
                        Format::Ndjson => text.push_str(&row.to_string()),
                        Format::Csv => text.push_str(&csv_row(row)),
                    }
                    text.push_str(if format == Format::Csv { "\r\n" } else { "\n" });
                }
                let Some(before) = next else {
                    return Some((Ok(bytes::Bytes::from(text)), None));
                };
                filters.before = Some(before);
                match page(&app, actor, filters).await {
                    Ok(following) => Some((
                        Ok(bytes::Bytes::from(text)),
                        Some((following, filters, false)),
                    )),
                    Err(e) => {
                        tracing::error!(error = %e, "reading the audit log while exporting failed");
                        Some((Err(std::io::Error::other("audit store failed")), None))
                    }
                }
            }
        },
    )
}

/// One page of entries as the list's JSON objects, and the `before` of the next page (`None`
/// on the last).
async fn page<P: Ports>(
    app: &App<P>,
    actor: Actor,
    filters: AuditFilters,
) -> Result<(Vec<Value>, Option<i64>), ListAuditError> {
    let entries = app.list_audit(actor, filters.query(EXPORT_PAGE)).await?;
    let names = app.audit_usernames(&entries).await?;
    let next = entries
        .last()
        .map(|e| e.id)
        .filter(|_| entries.len() >= EXPORT_PAGE as usize);
    let rows = entries
        .iter()
        .filter_map(|entry| AuditEntryDto::new(entry, &names).to_json())
        .collect();
    Ok((rows, next))
}

/// An entry as a CSV row in [`CSV_COLUMNS`] order.
fn csv_row(entry: &Value) -> String {
    CSV_COLUMNS
        .iter()
        .map(|column| match entry.get(column) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text)) => csv_field(&inert(text)),
            Some(other) => csv_field(&other.to_string()),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Text a spreadsheet would run as a formula (it starts with `=`, `+`, `-`, `@`, a tab or a
/// carriage return: a technician's command such as `=HYPERLINK(...)` opened by an auditor)
/// gets a leading `'`, which spreadsheets show as text (OWASP's advice for CSV injection).
fn inert(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}").into()
    } else {
        text.into()
    }
}

/// A field quoted when it holds a comma, a quote or a line break (RFC 4180), quotes doubled.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[derive(ApiResponse)]
enum ExportResponse {
    /// The entries, streamed: `application/x-ndjson` or `text/csv` (as `format` asks).
    #[oai(status = 200)]
    Ok(Binary<poem::Body>, #[oai(header = "Content-Type")] String),
    /// `format` is not `ndjson` or `csv`, or a filter is malformed.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing, expired or invalid token.
    #[oai(status = 401)]
    #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
    Unauthorized(Json<ErrorBody>),
    /// A technician asked for another user's entries.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// The server failed; details are in its log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

/// [`ExportResponse`] as answered, and as documented: its 200 with both media types it can
/// carry (a derived response documents one: `application/octet-stream`, which the export
/// never sends), `Content-Type` being the media type rather than a header of its own.
struct Export(ExportResponse);

impl ApiResponse for Export {
    fn meta() -> MetaResponses {
        let mut meta = ExportResponse::meta();
        for response in &mut meta.responses {
            if response.status == Some(200) {
                response.content = [Format::Ndjson, Format::Csv]
                    .into_iter()
                    .map(|f| MetaMediaType {
                        content_type: f.content_type(),
                        schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format(
                            "string", "binary",
                        ))),
                    })
                    .collect();
                response
                    .headers
                    .retain(|h| !h.name.eq_ignore_ascii_case("content-type"));
            }
        }
        meta
    }

    fn register(registry: &mut Registry) {
        ExportResponse::register(registry);
    }
}

impl poem::IntoResponse for Export {
    fn into_response(self) -> poem::Response {
        self.0.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::{csv_field, csv_row, inert};

    #[test]
    fn csv_quotes_only_what_needs_it() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"\nbye"), "\"say \"\"hi\"\"\nbye\"");
        let row = csv_row(&serde_json::json!({"id": 7, "event": "command", "command": "echo a,b"}));
        assert!(row.starts_with("7,,command,"), "{row}");
        assert!(row.contains(",\"echo a,b\","), "{row}");
    }

    #[test]
    fn text_a_spreadsheet_would_run_is_kept_as_text() {
        assert_eq!(inert("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(inert("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(inert("ls -l"), "ls -l");
        let row = csv_row(&serde_json::json!({"id": 7, "command": "+1+1", "exit_code": -1}));
        assert!(row.contains(",'+1+1,") && row.contains(",-1,"), "{row}");
    }
}
