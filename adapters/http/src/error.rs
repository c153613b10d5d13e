//! The error contract of every answer: `{"error": "<for people>", "code": "<for programs>"}`
//! (the shape of [`rmm_protocol::api::ApiError`]), documented in the spec with every code.

use std::borrow::Cow;
use std::sync::OnceLock;

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::Object;
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use rmm_protocol::api::{ApiError, ApiErrorCode};

/// Every error body.
#[derive(Debug, Object)]
pub struct ErrorBody {
    /// What went wrong, and where possible how to fix it.
    pub error: String,
    // What went wrong, as a stable code for programs: the `ErrorCode` schema describes each
    // (a described field would be an `allOf`, which generated clients cannot read for a
    // string enum).
    pub code: ErrorCode,
}

/// [`ApiErrorCode`] as the spec documents it: a string from a closed list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub ApiErrorCode);

impl Type for ErrorCode {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "ErrorCode".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Reference(Self::name().into_owned())
    }

    fn register(registry: &mut Registry) {
        registry.create_schema::<Self, _>(Self::name().into_owned(), |_| MetaSchema {
            description: Some(code_table()),
            enum_items: ApiErrorCode::ALL
                .iter()
                .map(|c| serde_json::Value::from(c.as_str()))
                .collect(),
            ..MetaSchema::new("string")
        });
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ToJSON for ErrorCode {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(self.0.as_str().into())
    }
}

impl ParseFromJSON for ErrorCode {
    fn parse_from_json(value: Option<serde_json::Value>) -> ParseResult<Self> {
        let value = value.unwrap_or_default();
        serde_json::from_value(value.clone())
            .map(Self)
            .map_err(|_| ParseError::expected_type(value))
    }
}

/// The spec's description of the codes: one line per code with its meaning.
fn code_table() -> &'static str {
    static TABLE: OnceLock<String> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut text = String::from("Why a request failed, stable for programs:\n\n");
        for code in ApiErrorCode::ALL {
            text.push_str(&format!("- `{}`: {}\n", code.as_str(), code.description()));
        }
        text
    })
}

/// An error body.
pub fn error(code: ApiErrorCode, message: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody {
        error: message.into(),
        code: ErrorCode(code),
    })
}

/// A 500: the cause goes to the log, never to the client.
pub fn internal(operation: &str, e: &dyn std::error::Error) -> Json<ErrorBody> {
    tracing::error!(operation, error = %e, source = ?e.source(), "request failed");
    error(ApiErrorCode::Internal, "internal error; see the server log")
}

/// An error answered outside an operation's own response enum (the token check), carrying its
/// code to [`error_as_json`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub status: StatusCode,
    pub code: ApiErrorCode,
    pub message: String,
}

impl poem::error::ResponseError for Failure {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn as_response(&self) -> Response {
        json_error(self.status, self.code, &self.message)
    }
}

/// A JSON error response outside poem-openapi (health, the WebSockets, the catch-all).
pub fn json_error(status: StatusCode, code: ApiErrorCode, message: &str) -> Response {
    let body = ApiError {
        error: message.to_owned(),
        code,
    };
    (status, poem::web::Json(body)).into_response()
}

/// Every error the framework produces (bad JSON, a bad path parameter, a missing token, an
/// unknown route) leaves as the same JSON body, with a code that fits its status.
pub async fn error_as_json(err: poem::Error) -> Response {
    if let Some(failure) = err.downcast_ref::<Failure>() {
        return poem::error::ResponseError::as_response(failure);
    }
    let status = err.status();
    let (code, message) = match status {
        s if s.is_server_error() => {
            tracing::error!(error = %err, "request failed");
            (ApiErrorCode::Internal, "internal error; see the server log".to_owned())
        }
        StatusCode::UNAUTHORIZED => (
            ApiErrorCode::Unauthenticated,
            "missing bearer token: log in with POST /api/v1/auth/login and send Authorization: Bearer <token>".to_owned(),
        ),
        StatusCode::NOT_FOUND => (ApiErrorCode::NotFound, err.to_string()),
        StatusCode::METHOD_NOT_ALLOWED => (ApiErrorCode::MethodNotAllowed, err.to_string()),
        _ => (ApiErrorCode::InvalidRequest, err.to_string()),
    };
    json_error(status, code, &message)
}
