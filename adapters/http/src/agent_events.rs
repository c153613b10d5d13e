//! `GET /api/v1/agents/events`: the agent list, live, as Server-Sent Events (outside the
//! OpenAPI document, like the WebSockets; documented in docs/protocol.md).
//!
//! Event `agents` carries the JSON array exactly as `GET /api/v1/agents` answers it for the
//! caller (groups scoping applies), at once and again whenever something in it may have
//! changed, at most one every [`COALESCE`]; a `: keep-alive` comment every [`KEEP_ALIVE`].
//! Browsers' `EventSource` cannot set headers, so the token may come as `?access_token=`.
//! It is checked again every [`TOKEN_CHECK`]: a revoked or expired token ends the stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use poem::http::StatusCode;
use poem::web::{Data, Query};
use poem::{Body, Request, Response, handler};
use poem_openapi::types::ToJSON as _;
use rmm_application::{AgentWatch, App, Ports, WatchAgentsError};
use rmm_auth::Jwt;
use rmm_domain::Actor;
use rmm_protocol::api::ApiErrorCode;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::{Instant, Interval};

use crate::agents::agent_dtos;
use crate::auth::{Authenticate, caller_with};
use crate::error::{Failure, json_error};

/// The least time between two `agents` events: changes in between are sent together.
pub const COALESCE: Duration = Duration::from_millis(500);
/// A comment line this often keeps proxies from closing an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often the token is checked again.
pub const TOKEN_CHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    access_token: Option<String>,
}

/// The handler.
#[handler]
pub async fn agent_events<P: Ports>(
    req: &Request,
    Query(query): Query<EventsQuery>,
    app: Data<&Arc<App<P>>>,
) -> Response {
    let header = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let Some(token) = header.or(query.access_token) else {
        return json_error(
            StatusCode::UNAUTHORIZED,
            ApiErrorCode::Unauthenticated,
            "missing token: send Authorization: Bearer <token> or ?access_token=<token>",
        );
    };
    let (Some(jwt), Some(check)) = (req.data::<Arc<Jwt>>(), req.data::<Arc<dyn Authenticate>>())
    else {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiErrorCode::Internal,
            "authentication is not configured",
        );
    };
    let caller = match caller_with(jwt, check.as_ref(), &token).await {
        Ok(caller) => caller,
        Err(failure) => return poem::error::ResponseError::as_response(&failure),
    };
    let watch = match app.watch_agents(caller.actor) {
        Ok(watch) => watch,
        Err(e @ WatchAgentsError::TooMany) => {
            return json_error(
                StatusCode::TOO_MANY_REQUESTS,
                ApiErrorCode::TooManyRequests,
                &e.to_string(),
            );
        }
    };
    let mut live = Live {
        app: Arc::clone(&app),
        jwt: Arc::clone(jwt),
        check: Arc::clone(check),
        token,
        actor: caller.actor,
        watch,
        last_sent: Instant::now(),
        keep_alive: every(KEEP_ALIVE),
        token_check: every(TOKEN_CHECK),
        shutdown: req.data::<watch::Receiver<bool>>().cloned(),
    };
    // The first list before the answer: a store failure is still a 500, not an empty stream.
    let Some(first) = live.event().await else {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiErrorCode::Internal,
            "internal error; see the server log",
        );
    };
    let rest = futures_util::stream::unfold(live, |mut live| async move {
        live.next().await.map(|bytes| (bytes, live))
    });
    let stream = futures_util::StreamExt::map(
        futures_util::StreamExt::chain(futures_util::stream::iter([first]), rest),
        Ok::<_, std::io::Error>,
    );
    Response::builder()
        .content_type("text/event-stream")
        .header("Cache-Control", "no-cache")
        .header("X-Accel-Buffering", "no")
        .body(Body::from_bytes_stream(stream))
}

fn every(period: Duration) -> Interval {
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// One open stream.
struct Live<P: Ports> {
    app: Arc<App<P>>,
    jwt: Arc<Jwt>,
    check: Arc<dyn Authenticate>,
    token: String,
    actor: Actor,
    watch: AgentWatch,
    last_sent: Instant,
    keep_alive: Interval,
    token_check: Interval,
    shutdown: Option<watch::Receiver<bool>>,
}

/// What woke a stream.
enum Wake {
    Changed,
    KeepAlive,
    TokenCheck,
    End(&'static str),
}

impl<P: Ports> Live<P> {
    /// The next bytes to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            let wake = tokio::select! {
                changed = self.watch.changes.changed() => match changed {
                    Ok(()) => Wake::Changed,
                    Err(_) => Wake::End("server stopping"),
                },
                _ = self.keep_alive.tick() => Wake::KeepAlive,
                _ = self.token_check.tick() => Wake::TokenCheck,
                () = stopping(self.shutdown.as_mut()) => Wake::End("server stopping"),
            };
            match wake {
                Wake::Changed => {
                    tokio::time::sleep_until(self.last_sent + COALESCE).await;
                    self.watch.changes.borrow_and_update();
                    if let Some(event) = self.event().await {
                        return Some(event);
                    }
                }
                Wake::KeepAlive => return Some(Bytes::from_static(b": keep-alive\n\n")),
                Wake::TokenCheck => {
                    match caller_with(&self.jwt, self.check.as_ref(), &self.token).await {
                        Ok(caller) => self.actor = caller.actor,
                        Err(Failure { status, .. }) if status == StatusCode::UNAUTHORIZED => {
                            tracing::info!(user_id = %self.actor.id, "live agent list ended: token no longer valid");
                            return None;
                        }
                        // The database cannot say now; checked again next time.
                        Err(_) => {}
                    }
                }
                Wake::End(why) => {
                    tracing::debug!(user_id = %self.actor.id, reason = why, "live agent list ended");
                    return None;
                }
            }
        }
    }

    /// The `agents` event for the caller now; `None` when the store failed (logged).
    async fn event(&mut self) -> Option<Bytes> {
        let agents = match self.app.list_agents_for(self.actor).await {
            Ok(agents) => agents,
            Err(e) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "live agent list: listing failed");
                return None;
            }
        };
        self.last_sent = Instant::now();
        let json = agent_dtos(agents).to_json_string();
        Some(Bytes::from(format!("event: agents\ndata: {json}\n\n")))
    }
}

/// Resolves when the server stops (never without a shutdown signal).
async fn stopping(shutdown: Option<&mut watch::Receiver<bool>>) {
    match shutdown {
        Some(rx) => {
            let _ = rx.wait_for(|stopping| *stopping).await;
        }
        None => std::future::pending().await,
    }
}
