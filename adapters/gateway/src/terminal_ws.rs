//! A terminal's WebSocket, `GET /api/v1/tunnel/{session_id}/terminals/{terminal_id}/ws`:
//! binary frames are the terminal's bytes both ways (no JSON on the hot path), text frames
//! JSON control: `{"type":"resize","cols":C,"rows":R}` from the client,
//! `{"type":"attached","offset":N}` to it first (the output position of the first byte that
//! follows), `{"type":"exit","exit_code":N}` or `{"type":"exit","signal":S}` before the close.
//!
//! The socket's reading and writing run side by side: input the agent holds back (a
//! process that does not read) never stops output, and a client that stops reading slows
//! the agent (through the terminal's credit), not the server's memory.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use poem::http::StatusCode;
use poem::web::websocket::{CloseCode, Message, WebSocket, WebSocketStream};
use poem::web::{Data, Path, Query};
use poem::{IntoResponse, Request, Response, handler};
use rmm_application::{App, Ports, TerminalError, TerminalFrame, TerminalInput};
use rmm_auth::{Jwt, VerifiedToken};
use rmm_domain::{SessionId, TermSize, TerminalId};
use rmm_protocol::api::ApiErrorCode;
use rmm_protocol::limits::STREAM_FRAME_DATA;
use serde::Deserialize;
use uuid::Uuid;

use crate::stream_ws::{Budget, FrameBudget, authenticate, json_error, token_still_live};

/// The owner's client may stop reading this long (its terminal's process waits meanwhile);
/// then its socket is dropped and the terminal waits for a reattach.
const OWNER_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// A watcher that stops reading is dropped sooner: it holds nothing up.
const WATCHER_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the socket's token and access are checked again.
const ACCESS_CHECK: Duration = Duration::from_millis(500);
/// Close code when another attach of the owner took over.
const CLOSE_REPLACED: u16 = 4000;

#[derive(Debug, Deserialize)]
pub struct TerminalQuery {
    access_token: Option<String>,
    /// `watch`: read-only (admins, or the owner).
    mode: Option<String>,
    /// The output position the client already has (from the `attached` frame plus the
    /// bytes since): the replay starts there when the server still holds it.
    offset: Option<u64>,
}

/// A client's control message.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Control {
    Resize { cols: u16, rows: u16 },
}

/// The handler.
#[handler]
pub async fn terminal_socket<P: Ports>(
    req: &Request,
    ws: poem::Result<WebSocket>,
    Path((session_id, terminal_id)): Path<(String, String)>,
    Query(query): Query<TerminalQuery>,
    app: Data<&Arc<App<P>>>,
    jwt: Data<&Arc<Jwt>>,
) -> Response {
    let (Ok(session), Ok(terminal)) = (Uuid::parse_str(&session_id), Uuid::parse_str(&terminal_id))
    else {
        return bad_request("session_id and terminal_id must be UUIDs");
    };
    let (session, terminal) = (
        SessionId::from_uuid(session),
        TerminalId::from_uuid(terminal),
    );
    let watch = match query.mode.as_deref() {
        None | Some("control") => false,
        Some("watch") => true,
        Some(_) => return bad_request("mode must be `watch` (read-only) or absent"),
    };
    let (actor, token) = match authenticate(req, query.access_token, &app, &jwt).await {
        Ok(caller) => caller,
        Err(refusal) => return refusal,
    };
    let Ok(ws) = ws else {
        return bad_request("this endpoint takes a WebSocket upgrade");
    };
    let attachment = match app
        .attach_terminal(actor, session, terminal, watch, query.offset)
        .await
    {
        Ok(attachment) => attachment,
        Err(e) => return refusal(&e),
    };
    let app = Arc::clone(&app);
    let frame = STREAM_FRAME_DATA + 1024;
    let config = poem::web::websocket::WebSocketConfig::default()
        .max_message_size(Some(frame))
        .max_frame_size(Some(frame));
    tracing::info!(terminal_id = %terminal, user_id = %actor.id, watch, "terminal attached");
    ws.config(config)
        .on_upgrade(move |socket| async move {
            let link = Link {
                app,
                token,
                session,
                terminal,
                watch,
            };
            let why = link.serve(attachment, socket).await;
            tracing::info!(terminal_id = %terminal, user_id = %actor.id, watch, reason = why, "terminal socket ended");
        })
        .into_response()
}

fn bad_request(message: &str) -> Response {
    json_error(
        StatusCode::BAD_REQUEST,
        ApiErrorCode::InvalidRequest,
        message,
    )
}

fn refusal(e: &TerminalError) -> Response {
    let text = e.to_string();
    let (status, code) = match e {
        TerminalError::NotFound(_) => (StatusCode::NOT_FOUND, ApiErrorCode::SessionNotFound),
        TerminalError::TerminalNotFound(_) => {
            (StatusCode::NOT_FOUND, ApiErrorCode::TerminalNotFound)
        }
        TerminalError::Forbidden(_) => (StatusCode::FORBIDDEN, ApiErrorCode::Forbidden),
        TerminalError::NotActive(_) => (StatusCode::CONFLICT, ApiErrorCode::SessionNotActive),
        TerminalError::AuditUnavailable(_) | TerminalError::Store(_) => {
            tracing::error!(error = %e, "terminal attach refused: the database is unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                ApiErrorCode::DatabaseUnavailable,
            )
        }
        // Not answers of an attach (they come from opening a terminal).
        _ => {
            tracing::error!(error = %e, "unexpected refusal of a terminal attach");
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                ApiErrorCode::Internal,
                "internal error; see the server log",
            );
        }
    };
    json_error(status, code, &text)
}

/// One attached socket.
struct Link<P: Ports> {
    app: Arc<App<P>>,
    token: VerifiedToken,
    session: SessionId,
    terminal: TerminalId,
    watch: bool,
}

impl<P: Ports> Link<P> {
    async fn serve(
        &self,
        attachment: rmm_application::Attachment,
        socket: WebSocketStream,
    ) -> &'static str {
        let (mut sink, inbound) = socket.split();
        let rmm_application::Attachment {
            frames,
            input,
            start,
        } = attachment;
        let attached = serde_json::json!({"type": "attached", "offset": start}).to_string();
        if !send(&mut sink, Message::Text(attached), WATCHER_WRITE_TIMEOUT).await {
            return "write failed or timed out";
        }
        tokio::select! {
            why = read_input(inbound, input.as_ref()) => {
                let _ = sink.close().await;
                why
            }
            why = self.write_output(frames, &mut sink) => why,
        }
    }

    /// Output to the client, until the terminal ends, the client must go, or a write fails.
    async fn write_output<S>(
        &self,
        mut frames: tokio::sync::mpsc::Receiver<TerminalFrame>,
        sink: &mut S,
    ) -> &'static str
    where
        S: futures_util::Sink<Message> + Unpin,
    {
        let timeout = if self.watch {
            WATCHER_WRITE_TIMEOUT
        } else {
            OWNER_WRITE_TIMEOUT
        };
        let mut check = tokio::time::interval(ACCESS_CHECK);
        loop {
            let (message, last, why) = tokio::select! {
                _ = check.tick() => match self.still_allowed().await {
                    Ok(()) => continue,
                    Err(reason) => (Message::Close(Some((CloseCode::Policy, reason.into()))), true, reason),
                },
                frame = frames.recv() => match frame {
                    Some(TerminalFrame::Output(bytes)) => (Message::Binary(bytes.to_vec()), false, ""),
                    Some(TerminalFrame::Exit { exit_code, signal }) => {
                        let text = exit_text(exit_code, signal);
                        if !send(sink, Message::Text(text), timeout).await {
                            return "write failed or timed out";
                        }
                        (Message::Close(Some((CloseCode::Normal, "terminal ended".into()))), true, "terminal ended")
                    }
                    Some(TerminalFrame::Ended(end)) => (
                        Message::Close(Some((CloseCode::Normal, format!("terminal closed: {}", end.as_str())))),
                        true,
                        "terminal closed",
                    ),
                    Some(TerminalFrame::Replaced) => (
                        Message::Close(Some((CloseCode::from(CLOSE_REPLACED), "attached elsewhere".into()))),
                        true,
                        "attached elsewhere",
                    ),
                    None => (
                        Message::Close(Some((CloseCode::Policy, "client too slow: reconnect to resume".into()))),
                        true,
                        "client too slow",
                    ),
                },
            };
            if !send(sink, message, timeout).await {
                return "write failed or timed out";
            }
            if last {
                return why;
            }
        }
    }

    /// Whether the socket's token still holds and its user may still use (or watch) the
    /// terminal; a database that cannot say keeps the socket open until the next check.
    async fn still_allowed(&self) -> Result<(), &'static str> {
        let Some(actor) = token_still_live(&self.app, &self.token).await? else {
            return Ok(());
        };
        match self
            .app
            .authorize_terminal(actor, self.session, self.terminal, self.watch)
            .await
        {
            Err(TerminalError::NotFound(_) | TerminalError::Forbidden(_)) => {
                Err("no longer allowed to use this terminal")
            }
            Ok(()) | Err(_) => Ok(()),
        }
    }
}

/// The client's input and resizes (ignored for watchers), until it goes.
async fn read_input<S>(mut inbound: S, input: Option<&TerminalInput>) -> &'static str
where
    S: futures_util::Stream<Item = Result<Message, std::io::Error>> + Unpin,
{
    let mut budget = FrameBudget::new(std::time::Instant::now());
    loop {
        match inbound.next().await {
            Some(Ok(Message::Binary(bytes))) => {
                if let Some(input) = input
                    && !input.input(Bytes::from(bytes)).await
                {
                    return "terminal ended";
                }
            }
            Some(Ok(Message::Text(text))) => {
                let Some(input) = input else { continue };
                match serde_json::from_str::<Control>(&text) {
                    Ok(Control::Resize { cols, rows }) => {
                        let Ok(size) = TermSize::new(cols, rows) else {
                            continue;
                        };
                        match budget.take(std::time::Instant::now()) {
                            Budget::Allowed => {
                                if !input.resize(size).await {
                                    return "terminal ended";
                                }
                            }
                            Budget::Limited => {}
                            Budget::Exhausted => return "over the resize rate limit",
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "unusable terminal control frame ignored")
                    }
                }
            }
            Some(Ok(Message::Close(_))) | None => return "client closed",
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::debug!(error = %e, "terminal socket error");
                return "socket error";
            }
        }
    }
}

fn exit_text(exit_code: Option<i32>, signal: Option<i32>) -> String {
    match (exit_code, signal) {
        (_, Some(signal)) => serde_json::json!({"type": "exit", "signal": signal}),
        (code, None) => serde_json::json!({"type": "exit", "exit_code": code}),
    }
    .to_string()
}

async fn send<S>(sink: &mut S, message: Message, timeout: Duration) -> bool
where
    S: futures_util::Sink<Message> + Unpin,
{
    matches!(
        tokio::time::timeout(timeout, sink.send(message)).await,
        Ok(Ok(()))
    )
}
