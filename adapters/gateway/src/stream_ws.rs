//! The technicians' WebSocket, `GET /api/v1/tunnel/{session_id}/stream`: every
//! `tunnel_data` / `tunnel_error` frame of the session in the reference format, replaying
//! what is buffered first; a client may send reference `terminal` frames to run commands,
//! at most [`FRAME_RATE`] a second (bursts of [`FRAME_BURST`]); frames over that are answered
//! with a `tunnel_error` and not run.
//!
//! With `?output=binary` (extension `command-binary-output`) command output comes as binary
//! data frames instead (channel `<channel>/stdout` or `/stderr`, offset = position in that
//! stream), and `terminal_output` frames carry only a command's end.
//!
//! Browsers cannot set headers on a WebSocket, so the JWT may come as `?access_token=`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use poem::http::StatusCode;
use poem::web::websocket::{CloseCode, Message, WebSocket, WebSocketStream};
use poem::web::{Data, Json, Path, Query};
use poem::{IntoResponse, Request, Response, handler};
use rmm_application::{App, AuthenticateError, Ports, WatchSessionError};
use rmm_domain::{Actor, ChannelId, SessionId};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::streams::BroadcastStreams;
use rmm_auth::{Jwt, TokenError, VerifiedToken};
use rmm_protocol::api::{ApiError, ApiErrorCode};
use rmm_protocol::{AgentMessage, ServerMessage, TunnelDataPayload, encode};

/// A write to a watcher that takes longer than this means it stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a watcher's token is checked again: a revoked one closes the stream within 1 s,
/// an expired one within 2 s.
const TOKEN_CHECK: Duration = Duration::from_millis(500);
/// Largest frame a watcher may send (a command is at most 64 KiB).
const MAX_CLIENT_FRAME: usize = 128 * 1024;
/// Frames a watcher may send per second, on average, and in a burst: each may run (and
/// store) a command. Frames over the limit are answered with a `tunnel_error` and dropped.
const FRAME_RATE: f64 = 10.0;
const FRAME_BURST: f64 = 20.0;
/// This many frames over the limit in a row close the socket (1008).
const MAX_OVER_LIMIT: u32 = 200;

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    access_token: Option<String>,
    /// `binary`: command output as binary data frames (extension `command-binary-output`);
    /// absent or `json`: the reference `tunnel_data` frames.
    output: Option<String>,
}

/// An answer before the upgrade: the API's error body (`rmm_protocol::api::ApiError`).
pub(crate) fn json_error(status: StatusCode, code: ApiErrorCode, message: &str) -> Response {
    let body = ApiError {
        error: message.to_owned(),
        code,
    };
    (status, Json(body)).into_response()
}

/// The handler.
#[handler]
pub async fn session_stream<P>(
    req: &Request,
    ws: poem::Result<WebSocket>,
    Path(session_id): Path<String>,
    Query(query): Query<StreamQuery>,
    app: Data<&Arc<App<P>>>,
    jwt: Data<&Arc<Jwt>>,
) -> Response
where
    P: Ports<Streams = BroadcastStreams>,
{
    let binary = match query.output.as_deref() {
        None | Some("json") => false,
        Some("binary") => true,
        Some(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                ApiErrorCode::InvalidRequest,
                "output must be `binary` or `json`",
            );
        }
    };
    let (session, actor, token) = match admit(req, &session_id, query, &app, &jwt).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    let Ok(ws) = ws else {
        return json_error(
            StatusCode::BAD_REQUEST,
            ApiErrorCode::InvalidRequest,
            "this endpoint takes a WebSocket upgrade",
        );
    };
    let app = Arc::clone(&app);
    let config = poem::web::websocket::WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .max_message_size(Some(MAX_CLIENT_FRAME))
        .max_frame_size(Some(MAX_CLIENT_FRAME));
    ws.config(config)
        .on_upgrade(move |socket| watch(app, actor, token, session, binary, socket))
        .into_response()
}

/// The session and the technician, when the request may watch it; the answer otherwise.
async fn admit<P: Ports>(
    req: &Request,
    session_id: &str,
    query: StreamQuery,
    app: &App<P>,
    jwt: &Jwt,
) -> Result<(SessionId, Actor, VerifiedToken), Response> {
    let Ok(session_uuid) = Uuid::parse_str(session_id) else {
        return Err(json_error(
            StatusCode::BAD_REQUEST,
            ApiErrorCode::InvalidRequest,
            "session_id must be a UUID",
        ));
    };
    let session = SessionId::from_uuid(session_uuid);
    let (actor, token) = authenticate(req, query.access_token, app, jwt).await?;
    let refusal = match app.authorize_stream(actor, session).await {
        Ok(()) => return Ok((session, actor, token)),
        Err(e @ WatchSessionError::Forbidden(_)) => (
            StatusCode::FORBIDDEN,
            ApiErrorCode::Forbidden,
            e.to_string(),
        ),
        Err(e @ WatchSessionError::NotFound(_)) => (
            StatusCode::NOT_FOUND,
            ApiErrorCode::SessionNotFound,
            e.to_string(),
        ),
        Err(e @ WatchSessionError::NotActive(_)) => (
            StatusCode::CONFLICT,
            ApiErrorCode::SessionNotActive,
            e.to_string(),
        ),
        Err(e @ WatchSessionError::Store(_)) => {
            tracing::error!(error = %e, "stream authorization failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                ApiErrorCode::Internal,
                "internal error; see the server log".to_owned(),
            )
        }
    };
    Err(json_error(refusal.0, refusal.1, &refusal.2))
}

/// The technician a request's token names (header or `?access_token=`), checked as every
/// API request is: signature and expiry, then whether it is still live.
pub(crate) async fn authenticate<P: Ports>(
    req: &Request,
    access_token: Option<String>,
    app: &App<P>,
    jwt: &Jwt,
) -> Result<(Actor, VerifiedToken), Response> {
    let header = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let Some(token) = header.or(access_token) else {
        return Err(json_error(
            StatusCode::UNAUTHORIZED,
            ApiErrorCode::Unauthenticated,
            "missing token: send Authorization: Bearer <token> or ?access_token=<token>",
        ));
    };
    let verified = match jwt.verify(&token) {
        Ok(verified) => verified,
        Err(e) => {
            let code = match e {
                TokenError::Expired => ApiErrorCode::TokenExpired,
                TokenError::Invalid => ApiErrorCode::Unauthenticated,
            };
            let message = format!("{e}: log in again");
            return Err(json_error(StatusCode::UNAUTHORIZED, code, &message));
        }
    };
    match app.authenticate(verified.user, verified.id).await {
        Ok(actor) => Ok((actor, verified)),
        Err(e @ AuthenticateError::Revoked) => Err(json_error(
            StatusCode::UNAUTHORIZED,
            ApiErrorCode::TokenRevoked,
            &e.to_string(),
        )),
        Err(e @ AuthenticateError::Store(_)) => {
            tracing::error!(error = %e, "stream token check failed");
            Err(json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                ApiErrorCode::DatabaseUnavailable,
                "the database is unavailable; try again",
            ))
        }
    }
}

/// One watcher's socket: the replay, then live frames (output in binary frames when it
/// asked, `binary`); its `terminal` frames run commands.
async fn watch<P>(
    app: Arc<App<P>>,
    mut actor: Actor,
    token: VerifiedToken,
    session: SessionId,
    binary: bool,
    socket: WebSocketStream,
) where
    P: Ports<Streams = BroadcastStreams>,
{
    let subscription = app.streams().subscribe(session, binary);
    let (mut sink, mut inbound) = socket.split();
    tracing::info!(session_id = %session, tech_id = %actor.id, replay = subscription.replay.len(), binary, "watcher joined");
    for frame in subscription.replay {
        if !send_all(&mut sink, frame.messages(binary)).await {
            return;
        }
    }
    let mut live = subscription.live;
    let mut budget = FrameBudget::new(Instant::now());
    let mut token_check = tokio::time::interval(TOKEN_CHECK);
    let why = loop {
        tokio::select! {
            _ = token_check.tick() => match still_authorized(&app, &token, session).await {
                Ok(now) => actor = now.unwrap_or(actor),
                Err(reason) => {
                    let _ = send(&mut sink, Message::Close(Some((CloseCode::Policy, reason.into())))).await;
                    break reason;
                }
            },
            frame = live.recv() => match frame {
                Ok(frame) => {
                    if !send_all(&mut sink, frame.messages(binary)).await {
                        break "write failed or timed out";
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    let reason = format!("client too slow: fell {missed} frames behind; reconnect to resume");
                    let _ = send(&mut sink, Message::Close(Some((CloseCode::Policy, reason)))).await;
                    break "watcher fell behind";
                }
                Err(RecvError::Closed) => {
                    let _ = send(&mut sink, Message::Close(Some((CloseCode::Normal, "session closed".into())))).await;
                    break "session closed";
                }
            },
            message = inbound.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let reply = match budget.take(Instant::now()) {
                        Budget::Allowed => client_frame(&app, actor, session, &text).await,
                        Budget::Limited => Some(error_frame("client", RATE_LIMITED)),
                        Budget::Exhausted => {
                            tracing::warn!(session_id = %session, tech_id = %actor.id, "watcher kept sending over the frame rate limit; closing");
                            let reason = format!("more than {MAX_OVER_LIMIT} frames in a row over the rate limit");
                            let _ = send(&mut sink, Message::Close(Some((CloseCode::Policy, reason)))).await;
                            break "over the frame rate limit";
                        }
                    };
                    if let Some(reply) = reply
                        && !send(&mut sink, Message::Text(reply)).await
                    {
                        break "write failed or timed out";
                    }
                }
                Some(Ok(Message::Close(_))) | None => break "client closed",
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "watcher socket error");
                    break "socket error";
                }
            },
        }
    };
    tracing::info!(session_id = %session, tech_id = %actor.id, reason = why, "watcher left");
}

/// Whether the stream's token still holds (unexpired, not revoked, its user enabled) and its
/// user may still watch the session (their groups, their role): the actor as they are now,
/// or why the stream must close. A database that cannot say
/// (`Ok(None)`) keeps the stream open, logged: the next check decides, and commands sent
/// meanwhile need the database anyway.
async fn still_authorized<P: Ports>(
    app: &App<P>,
    token: &VerifiedToken,
    session: SessionId,
) -> Result<Option<Actor>, &'static str> {
    let Some(actor) = token_still_live(app, token).await? else {
        return Ok(None);
    };
    match app.authorize_stream(actor, session).await {
        // An agent moved out of the technician's groups, or a changed role.
        Err(WatchSessionError::NotFound(_) | WatchSessionError::Forbidden(_)) => {
            Err("no longer allowed to watch this session")
        }
        Ok(()) | Err(_) => Ok(Some(actor)),
    }
}

/// Whether a socket's token still holds (unexpired, not revoked, its user enabled): the
/// actor as they are now, or why the socket must close. A database that cannot say
/// (`Ok(None)`) keeps the socket open, logged: the next check decides.
pub(crate) async fn token_still_live<P: Ports>(
    app: &App<P>,
    token: &VerifiedToken,
) -> Result<Option<Actor>, &'static str> {
    if rmm_application::Clock::now(app.clock()) >= token.expires_at {
        return Err("token expired: log in again");
    }
    match app.authenticate(token.user, token.id).await {
        Ok(actor) => Ok(Some(actor)),
        Err(AuthenticateError::Revoked) => Err("token revoked: log in again"),
        Err(e @ AuthenticateError::Store(_)) => {
            tracing::warn!(error = %e, user_id = %token.user, "socket token check failed; kept open until the next check");
            Ok(None)
        }
    }
}

async fn send<S>(sink: &mut S, message: Message) -> bool
where
    S: futures_util::Sink<Message> + Unpin,
{
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, sink.send(message)).await,
        Ok(Ok(()))
    )
}

/// Sends `messages` in order; false as soon as one fails.
async fn send_all<S>(sink: &mut S, messages: Vec<Message>) -> bool
where
    S: futures_util::Sink<Message> + Unpin,
{
    for message in messages {
        if !send(sink, message).await {
            return false;
        }
    }
    true
}

/// A frame from a watcher: a reference `terminal` frame runs a command on the channel it
/// names. Returns a `tunnel_error` to send back when it cannot.
async fn client_frame<P: Ports>(
    app: &App<P>,
    actor: Actor,
    session: SessionId,
    text: &str,
) -> Option<String> {
    let (channel_id, command, timeout_secs) = match ServerMessage::decode(text) {
        Ok(ServerMessage::TunnelData {
            channel_id,
            data:
                TunnelDataPayload::Terminal {
                    command,
                    timeout_secs,
                    ..
                },
        }) => (channel_id, command, timeout_secs),
        Ok(_) => {
            return Some(error_frame(
                "client",
                "only tunnel_data terminal frames may be sent on this stream",
            ));
        }
        Err(e) => return Some(error_frame("client", &e.to_string())),
    };
    let channel = match ChannelId::parse(&channel_id) {
        Ok(channel) => channel,
        Err(e) => return Some(error_frame("client", &e.to_string())),
    };
    match app
        .run_command(
            actor,
            session,
            &command,
            timeout_secs,
            Some(channel.clone()),
        )
        .await
    {
        Ok(_) => None,
        Err(e) => Some(error_frame(channel.as_str(), &e.to_string())),
    }
}

/// The error text of a frame over the rate limit.
const RATE_LIMITED: &str =
    "rate limited: at most 10 command frames per second (burst 20); this frame was not run";

/// What the frame budget says about one more frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Budget {
    Allowed,
    /// Over the limit: not run, not stored.
    Limited,
    /// Over the limit [`MAX_OVER_LIMIT`] times in a row: close the socket.
    Exhausted,
}

/// A token bucket over one socket's frames: [`FRAME_BURST`] tokens, refilled at
/// [`FRAME_RATE`] a second.
#[derive(Debug)]
pub(crate) struct FrameBudget {
    tokens: f64,
    last: Instant,
    /// Frames over the limit since the last one allowed.
    over: u32,
}

impl FrameBudget {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            tokens: FRAME_BURST,
            last: now,
            over: 0,
        }
    }

    pub(crate) fn take(&mut self, now: Instant) -> Budget {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * FRAME_RATE).min(FRAME_BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.over = 0;
            return Budget::Allowed;
        }
        self.over += 1;
        if self.over >= MAX_OVER_LIMIT {
            Budget::Exhausted
        } else {
            Budget::Limited
        }
    }
}

fn error_frame(channel: &str, error: &str) -> String {
    encode(&AgentMessage::TunnelError {
        channel_id: channel.to_owned(),
        error: error.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_budget_allows_a_burst_then_the_rate_then_closes() {
        let start = Instant::now();
        let mut budget = FrameBudget::new(start);
        for _ in 0..20 {
            assert_eq!(budget.take(start), Budget::Allowed);
        }
        assert_eq!(budget.take(start), Budget::Limited);
        // A tenth of a second buys one more frame.
        let later = start + Duration::from_millis(100);
        assert_eq!(budget.take(later), Budget::Allowed);
        assert_eq!(budget.take(later), Budget::Limited);
        for _ in 2..MAX_OVER_LIMIT {
            assert_eq!(budget.take(later), Budget::Limited);
        }
        assert_eq!(budget.take(later), Budget::Exhausted);
        // Refilled, but never beyond the burst.
        let much_later = later + Duration::from_secs(60);
        for _ in 0..20 {
            assert_eq!(budget.take(much_later), Budget::Allowed);
        }
        assert_eq!(budget.take(much_later), Budget::Limited);
    }
}
