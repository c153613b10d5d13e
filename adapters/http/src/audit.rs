//! The append-only audit log.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use rmm_application::{AuditAction, AuditEntry, AuditQuery, ListAuditError, Ports};
use rmm_domain::{AgentId, SessionId, UserId};
use rmm_protocol::api::ApiErrorCode;
use uuid::Uuid;

use crate::auth::TechAuth;
use crate::error::{ErrorBody, error, internal};
use crate::wire_enum::Wire;
use crate::{ApiTags, Audit, Handlers, from_datetime, to_datetime};

#[OpenApi(prefix_path = "/api/v1")]
impl<P: Ports> Handlers<P, Audit> {
    /// The audit log, newest first. Admins read everything; technicians their own entries.
    /// Page with `before` = the `next_before` of the previous page.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/audit",
        method = "get",
        tag = "ApiTags::Audit",
        operation_id = "listAudit"
    )]
    async fn audit(
        &self,
        auth: TechAuth,
        /// Only entries about this agent.
        #[oai(example = "crate::examples::some_id")]
        agent_id: Query<Option<Uuid>>,
        /// Only entries of this user (technicians see only their own anyway).
        #[oai(example = "crate::examples::some_id")]
        tech_id: Query<Option<Uuid>>,
        /// Only entries of this tunnel session.
        #[oai(example = "crate::examples::some_id")]
        session_id: Query<Option<Uuid>>,
        /// Only entries at or after this time (RFC 3339).
        #[oai(example = "crate::examples::since")]
        since: Query<Option<DateTime<Utc>>>,
        /// Only entries before this time (RFC 3339).
        #[oai(example = "crate::examples::until")]
        until: Query<Option<DateTime<Utc>>>,
        /// At most this many entries (1 to 500; default 50; fewer or more are taken as 1 or
        /// 500).
        #[oai(
            example = "crate::examples::limit",
            validator(minimum(value = "0"), maximum(value = "4294967295"))
        )]
        limit: Query<Option<u32>>,
        /// Only entries older than this entry id: the previous page's `next_before` (at most
        /// 2^53 - 1, the largest integer JSON numbers carry exactly).
        #[oai(
            example = "crate::examples::before",
            validator(minimum(value = "0"), maximum(value = "9007199254740991"))
        )]
        before: Query<Option<i64>>,
    ) -> AuditResponse {
        let query = AuditFilters {
            agent_id: agent_id.0,
            tech_id: tech_id.0,
            session_id: session_id.0,
            since: since.0,
            until: until.0,
            before: before.0,
        }
        .query(limit.0.unwrap_or(50));
        let listed = match self.app.list_audit(auth.0.actor, query).await {
            Ok(entries) => self
                .app
                .audit_usernames(&entries)
                .await
                .map(|names| (entries, names)),
            Err(e) => Err(e),
        };
        match listed {
            Ok((entries, names)) => {
                let next_before = entries.last().map(|e| e.id).filter(|_| {
                    entries.len()
                        >= usize::try_from(limit.0.unwrap_or(50).clamp(1, 500))
                            .unwrap_or(usize::MAX)
                });
                AuditResponse::Ok(Json(AuditPage {
                    entries: entries
                        .iter()
                        .map(|entry| AuditEntryDto::new(entry, &names))
                        .collect(),
                    next_before,
                }))
            }
            Err(e @ ListAuditError::Forbidden) => {
                AuditResponse::Forbidden(error(ApiErrorCode::Forbidden, e.to_string()))
            }
            Err(e @ ListAuditError::Store(_)) => {
                AuditResponse::Internal(internal("list_audit", &e))
            }
        }
    }
}

/// The filters of `GET /audit`, shared with `GET /audit/export`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AuditFilters {
    pub agent_id: Option<Uuid>,
    pub tech_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub before: Option<i64>,
}

impl AuditFilters {
    /// The store query for one page of at most `limit` entries (the use case applies the
    /// access rule and bounds the limit).
    pub(crate) fn query(self, limit: u32) -> AuditQuery {
        AuditQuery {
            user: self.tech_id.map(UserId::from_uuid),
            agent: self.agent_id.map(AgentId::from_uuid),
            session: self.session_id.map(SessionId::from_uuid),
            since: self.since.map(from_datetime),
            until: self.until.map(from_datetime),
            before: self.before,
            limit,
        }
    }
}

#[derive(Debug, Object)]
pub(crate) struct AuditEntryDto {
    /// Increasing position in the log; pass as `before` to page.
    id: i64,
    at: DateTime<Utc>,
    // What happened: `tunnel_open`, `tunnel_close`, `tunnel_refused`, `tunnel_timeout`,
    // `command`, `command_end`, `command_stdin`, `file_upload`, `file_download`,
    // `terminal_open`, `terminal_close`, `terminal_watch`, `user_created`, `user_updated`,
    // `user_deleted`, `password_changed`, `logout`, `group_created`, `group_deleted`,
    // `enrollment_created`, `enrollment_revoked`, `agent_enrolled`, `agent_revoked`,
    // `agent_key_rotated`, `agent_updated`, `agent_replaced`, `retention_sweep`.
    event: Wire<AuditAction>,
    /// The user who acted (technician, admin or auditor), when one did.
    #[oai(nullable)]
    tech_id: Option<Uuid>,
    /// That user's username; absent when no user acted or the user was deleted.
    #[oai(skip_serializing_if_is_none)]
    username: Option<String>,
    #[oai(nullable)]
    agent_id: Option<Uuid>,
    #[oai(nullable)]
    session_id: Option<Uuid>,
    #[oai(skip_serializing_if_is_none)]
    detail: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    command_id: Option<Uuid>,
    #[oai(skip_serializing_if_is_none)]
    command: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    status: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    exit_code: Option<i32>,
    #[oai(skip_serializing_if_is_none)]
    stdout_bytes: Option<u64>,
    #[oai(skip_serializing_if_is_none)]
    stderr_bytes: Option<u64>,
    #[oai(skip_serializing_if_is_none)]
    duration_ms: Option<u64>,
    #[oai(skip_serializing_if_is_none)]
    path: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    direction: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    size: Option<u64>,
    #[oai(skip_serializing_if_is_none)]
    sha256: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    result: Option<String>,
}

impl AuditEntryDto {
    pub(crate) fn new(entry: &AuditEntry, names: &HashMap<UserId, String>) -> Self {
        let e = &entry.event;
        let command = e.command.clone().unwrap_or_default();
        let file = e.file.as_ref();
        Self {
            id: entry.id,
            at: to_datetime(e.at),
            event: Wire(e.action),
            tech_id: e.user.map(|u| u.as_uuid()),
            username: e.user.and_then(|u| names.get(&u).cloned()),
            agent_id: e.agent.map(|a| a.as_uuid()),
            session_id: e.session.map(|s| s.as_uuid()),
            detail: e.detail.clone(),
            command_id: command.command_id.map(|c| c.as_uuid()),
            command: command.text,
            status: command.status,
            exit_code: command.exit_code,
            stdout_bytes: command.stdout_bytes,
            stderr_bytes: command.stderr_bytes,
            duration_ms: command.duration_ms,
            path: file.map(|f| f.path.clone()),
            direction: file.map(|f| f.direction.clone()),
            size: file.and_then(|f| f.size),
            sha256: file.and_then(|f| f.sha256.clone()),
            result: file.map(|f| f.result.clone()),
        }
    }
}

#[derive(Debug, Object)]
struct AuditPage {
    entries: Vec<AuditEntryDto>,
    /// Pass as `before` for the next (older) page; null on the last page.
    #[oai(nullable)]
    next_before: Option<i64>,
}

#[derive(ApiResponse)]
enum AuditResponse {
    /// A page of entries, newest first.
    #[oai(status = 200)]
    Ok(Json<AuditPage>),
    /// A query parameter is malformed.
    #[oai(status = 400)]
    #[allow(dead_code)] // Answered by the query parser; listed for the API docs.
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
