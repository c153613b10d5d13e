//! Requests for an agent connected to another node are served by that node: this node
//! forwards the whole HTTP request (and the WebSocket it upgrades to) over a cross-node
//! stream (a TCP connection to the node's cluster address, [`crate::direct`], or a byte
//! stream over NATS, [`crate::pipe`]), and the other node runs it through its own HTTP
//! stack, with the client's address, as if the client had connected there. Status codes,
//! confirmations and streaming are therefore exactly single-node's.
//!
//! Which requests: the ones that need the agent's live connection, found by their path —
//! everything under `/api/v1/tunnel/{session_id}/`, `GET /api/v1/tunnel/status/{session_id}`,
//! `POST /api/v1/tunnel/open` and `/close` (by the `agent_id` or `session_id` of their JSON
//! body), and `DELETE`/`PATCH /api/v1/agents/{agent_id}` and its `rotate-key` (they end or
//! change a live connection). A session is served where it was opened (its node, in the
//! database) while it is open; a closed one, and everything else, is served here.

use std::io;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use poem::http::{Method, StatusCode};
use poem::{Endpoint, IntoResponse as _, Middleware, Request, Response};
use rmm_application::StoreError;
use rmm_domain::{AgentId, SessionId};
use rmm_protocol::api::ApiErrorCode;
use uuid::Uuid;

use crate::Subjects;
use crate::dial::{Answer, Connection, DIAL_TIMEOUT, Dial};
use crate::direct;
use crate::pipe;
use crate::pool;
use crate::presence::ClusterView;

/// Finds the node of an open session: `None` when it is closed, unknown, or this node's.
pub type SessionNode =
    Arc<dyn Fn(SessionId) -> BoxFuture<'static, Result<Option<String>, StoreError>> + Send + Sync>;

/// The header a forwarded request carries: the node that forwarded it.
const FORWARDED_BY: &str = "x-rmm-forwarded-by";

/// Open sessions whose node is remembered, at most (then the memory starts over).
const SESSION_CACHE: usize = 10_000;

/// Whether an agent is connected to this node.
pub type IsLocal = Arc<dyn Fn(AgentId) -> bool + Send + Sync>;

/// How long a node whose cluster address could not be connected to is dialled over NATS.
const DIRECT_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// Dials other nodes; shared by every forwarded request.
#[derive(Clone)]
pub struct Forwarder {
    client: async_nats::Client,
    subjects: Subjects,
    view: Arc<ClusterView>,
    session_node: SessionNode,
    local: IsLocal,
    pool: Arc<pool::Pool>,
    /// Open sessions' nodes, as read from the database (a session never moves).
    sessions: Arc<std::sync::Mutex<std::collections::HashMap<SessionId, String>>>,
    /// The largest JSON body read here to find an open's agent or a close's session.
    max_json_body: usize,
    /// Nodes whose cluster address could not be connected to, and when.
    direct_failed: Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("node", &self.view.me())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("NATS: {0}")]
    Nats(String),
    #[error("cannot connect to the node's cluster address: {0}")]
    Direct(#[source] io::Error),
    #[error("the node did not answer within {DIAL_TIMEOUT:?}")]
    Timeout,
    #[error("the node's answer does not parse: {0}")]
    Answer(#[from] serde_json::Error),
}

impl Forwarder {
    pub(crate) fn new(
        client: async_nats::Client,
        subjects: Subjects,
        view: Arc<ClusterView>,
        session_node: SessionNode,
        local: IsLocal,
        max_json_body: usize,
    ) -> Self {
        Self {
            client,
            subjects,
            view,
            session_node,
            local,
            pool: Arc::default(),
            sessions: Arc::default(),
            max_json_body,
            direct_failed: Arc::default(),
        }
    }

    /// A new stream to `node` for `req`'s client: to its cluster address when it has one
    /// (and it could be connected to lately), else over NATS.
    async fn dial(&self, node: &str, req: &Request) -> Result<Connection, DialError> {
        let mut want_direct = self.direct_ok(node);
        loop {
            let (answer, incoming) = self.ask(node, req, want_direct).await?;
            let Some(direct) = answer.direct else {
                let (user, pump) = pipe::ends();
                pipe::pump(
                    self.client.clone(),
                    incoming,
                    answer.reply_to,
                    pump,
                    Arc::from(node),
                    Arc::clone(&self.view),
                );
                streams(node, "nats");
                return Ok(Box::new(user));
            };
            drop(incoming);
            match direct::connect(&direct, node, &self.view).await {
                Ok(stream) => {
                    streams(node, "direct");
                    return Ok(Box::new(stream));
                }
                Err(e) if want_direct => {
                    tracing::warn!(%node, addr = %direct.addr, error = %e, "cluster: cannot connect to the node's cluster address (its RMM_CLUSTER_ADVERTISE): its streams go over NATS for the next 30 s");
                    self.direct_failures()
                        .insert(node.to_owned(), std::time::Instant::now());
                    want_direct = false;
                }
                // Asked not to, the node answered with its address all the same.
                Err(e) => return Err(DialError::Direct(e)),
            }
        }
    }

    fn direct_failures(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, std::time::Instant>> {
        // Each update is one insert or removal.
        self.direct_failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn direct_ok(&self, node: &str) -> bool {
        let mut failed = self.direct_failures();
        match failed.get(node) {
            Some(at) if at.elapsed() < DIRECT_RETRY_AFTER => false,
            Some(_) => {
                failed.remove(node);
                true
            }
            None => true,
        }
    }

    /// Asks `node` over NATS for a stream: its answer, and this end's subscription (for a
    /// stream over NATS).
    async fn ask(
        &self,
        node: &str,
        req: &Request,
        direct: bool,
    ) -> Result<(Answer, async_nats::Subscriber), DialError> {
        let reply_to = format!(
            "{}.pipe.{}",
            self.subjects.inbox_prefix(),
            Uuid::new_v4().simple()
        );
        let incoming = self
            .client
            .subscribe(reply_to.clone())
            .await
            .map_err(|e| DialError::Nats(e.to_string()))?;
        let dial = Dial {
            reply_to,
            from: self.view.me().to_owned(),
            remote: addr(req.remote_addr()),
            local: addr(req.local_addr()),
            https: req.scheme() == &poem::http::uri::Scheme::HTTPS,
            direct,
        };
        let payload = serde_json::to_vec(&dial)?;
        let answer = tokio::time::timeout(
            DIAL_TIMEOUT,
            self.client
                .request(self.subjects.dial_of(node), payload.into()),
        )
        .await
        .map_err(|_| DialError::Timeout)?
        .map_err(|e| DialError::Nats(e.to_string()))?;
        Ok((serde_json::from_slice(&answer.payload)?, incoming))
    }

    /// Where `req` is to be served: `Some(node)` for another node. A request without a
    /// token is served here (which refuses it): no one without credentials makes a node dial
    /// another, or read the database to find where.
    async fn target(&self, req: &mut Request) -> Result<Option<Target>, Response> {
        // A request another node forwarded is served here, never forwarded again: two nodes
        // whose views of a moving agent disagree for a moment cannot pass it back and forth.
        if !carries_token(req) || req.headers().contains_key(FORWARDED_BY) {
            return Ok(None);
        }
        let path = req.uri().path().to_owned();
        let Some(rest) = path.strip_prefix("/api/v1/") else {
            return Ok(None);
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let method = req.method().clone();
        match parts.as_slice() {
            ["tunnel", "status", id] => Ok(self.session_target(id).await?),
            ["tunnel", "open"] if method == Method::POST => {
                let Some(agent) = self.body_field(req, "agent_id").await? else {
                    return Ok(None);
                };
                Ok(self.agent_target(AgentId::from_uuid(agent)))
            }
            ["tunnel", "close"] if method == Method::POST => {
                let Some(session) = self.body_field(req, "session_id").await? else {
                    return Ok(None);
                };
                Ok(self.session_of(SessionId::from_uuid(session)).await?)
            }
            ["tunnel", id, _, ..] => Ok(self.session_target(id).await?),
            ["agents", id] if method == Method::DELETE || method == Method::PATCH => {
                Ok(parse(id).and_then(|a| self.agent_target(AgentId::from_uuid(a))))
            }
            ["agents", id, "rotate-key"] => {
                Ok(parse(id).and_then(|a| self.agent_target(AgentId::from_uuid(a))))
            }
            _ => Ok(None),
        }
    }

    fn agent_target(&self, agent: AgentId) -> Option<Target> {
        if (self.local)(agent) {
            return None;
        }
        let whereabouts = self.view.whereabouts(agent)?;
        Some(Target {
            node: whereabouts.node.to_string(),
            reachable: whereabouts.reachable,
        })
    }

    async fn session_target(&self, id: &str) -> Result<Option<Target>, Response> {
        match parse(id) {
            Some(id) => self.session_of(SessionId::from_uuid(id)).await,
            None => Ok(None),
        }
    }

    async fn session_of(&self, session: SessionId) -> Result<Option<Target>, Response> {
        // A session's node never changes: while that node is reachable the cached answer is
        // right (were the session closed meanwhile, that node answers as well as any). An
        // unreachable node may have been lost: then the database says whether it still is.
        let cached = self.cached(session);
        if let Some(node) = cached.filter(|n| self.view.reachable(n)) {
            return Ok(Some(Target {
                node,
                reachable: true,
            }));
        }
        match (self.session_node)(session).await {
            Ok(Some(node)) if node != self.view.me() => {
                self.cache(session, &node);
                Ok(Some(Target {
                    reachable: self.view.reachable(&node),
                    node,
                }))
            }
            Ok(_) => Ok(None),
            Err(e) => {
                tracing::warn!(error = %e, %session, "cluster: cannot look up the session's node");
                Err(rmm_http::json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ApiErrorCode::DatabaseUnavailable,
                    "the database does not answer; try again shortly",
                ))
            }
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<SessionId, String>> {
        // Each update is one insert or a clear.
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cached(&self, session: SessionId) -> Option<String> {
        self.sessions().get(&session).cloned()
    }

    fn cache(&self, session: SessionId, node: &str) {
        let mut sessions = self.sessions();
        if sessions.len() >= SESSION_CACHE {
            sessions.clear();
        }
        sessions.insert(session, node.to_owned());
    }

    /// Reads the (small, JSON) body to find `field`, and puts it back for whoever serves the
    /// request. `None` when there is no such UUID field: the request is served here, and its
    /// handler answers what is wrong with it. A body that cannot be read (too large, broken
    /// off) is answered here, as the handler would.
    async fn body_field(&self, req: &mut Request, field: &str) -> Result<Option<Uuid>, Response> {
        let body = req.take_body();
        let bytes = match body.into_bytes_limit(self.max_json_body).await {
            Ok(bytes) => bytes,
            Err(e) => return Err(rmm_http::error_as_json(poem::Error::from(e)).await),
        };
        let found = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes)
            .ok()
            .and_then(|fields| fields.get(field)?.as_str()?.parse().ok());
        req.set_body(bytes);
        Ok(found)
    }

    /// A new cross-node connection to `node` for `req`'s client.
    async fn connect(&self, node: &str, req: &Request) -> Result<pool::Sender, Response> {
        let io = match self.dial(node, req).await {
            Ok(io) => io,
            Err(e) => {
                tracing::warn!(%node, error = %e, "cluster: cannot reach the node that holds the agent");
                return Err(unreachable(node));
            }
        };
        let (sender, connection) =
            match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(%node, error = %e, "cluster: cross-node HTTP handshake failed");
                    return Err(unreachable(node));
                }
            };
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "cluster: cross-node connection ended");
            }
        });
        Ok(sender)
    }

    async fn forward(&self, node: &str, mut req: Request) -> Response {
        let upgrade = if req.headers().contains_key(poem::http::header::UPGRADE) {
            req.take_upgrade().ok()
        } else {
            None
        };
        if self.client.connection_state() != async_nats::connection::State::Connected {
            tracing::warn!(%node, "cluster: NATS is down; cannot reach the node that holds the agent");
            return unreachable(node);
        }
        // By the client's IP address, not its port: a client's next connection (each `rmm`
        // command is one) reuses the cross-node connection of its last. The serving node then
        // logs the port of the connection that dialled it.
        let key = pool::Key {
            node: node.to_owned(),
            remote: ip(req.remote_addr()),
            https: req.scheme() == &poem::http::uri::Scheme::HTTPS,
        };
        let mut sender = match self.pool.take(&key) {
            Some(sender) => sender,
            None => match self.connect(node, &req).await {
                Ok(sender) => sender,
                Err(response) => return response,
            },
        };
        if let Ok(me) = poem::http::HeaderValue::from_str(self.view.me()) {
            req.headers_mut().insert(FORWARDED_BY, me);
        }
        if upgrade.is_none() {
            // Hop-by-hop: the client's wish to close its connection to this node is not one
            // for the cross-node connection, which is kept for the next request.
            req.headers_mut().remove(poem::http::header::CONNECTION);
            req.headers_mut().remove("keep-alive");
        }
        let request: hyper::Request<_> = req.into();
        let Some(client_side) = upgrade else {
            return match pool::exchange(&self.pool, key, sender, request).await {
                Ok(response) => {
                    forwarded("forwarded");
                    let (parts, body) = response.into_parts();
                    Response::from(hyper::Response::from_parts(
                        parts,
                        body.map_err(io::Error::other),
                    ))
                }
                Err(e) => {
                    tracing::warn!(%node, error = %e, "cluster: the node holding the agent broke off the request");
                    unreachable(node)
                }
            };
        };
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(%node, error = %e, "cluster: the node holding the agent broke off the request");
                return unreachable(node);
            }
        };
        forwarded("forwarded");
        joined(client_side, response)
    }
}

/// The answer to a forwarded WebSocket upgrade: once the node serving it switched protocols,
/// the client's upgraded connection and the node's are joined, byte for byte, until either
/// ends. Any other answer (401, 404) goes to the client as it is.
fn joined(
    client_side: poem::OnUpgrade,
    response: hyper::Response<hyper::body::Incoming>,
) -> Response {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = response.into_parts();
        let node_side = hyper::upgrade::on(hyper::Response::from_parts(parts.clone(), body));
        tokio::spawn(async move {
            let (Ok(mut client_side), Ok(node_side)) = (client_side.await, node_side.await) else {
                return;
            };
            let mut node_side = TokioIo::new(node_side);
            if let Err(e) = tokio::io::copy_bidirectional_with_sizes(
                &mut client_side,
                &mut node_side,
                COPY_BUFFER,
                COPY_BUFFER,
            )
            .await
            {
                tracing::debug!(error = %e, "cluster: forwarded WebSocket ended");
            }
        });
        let mut out = Response::builder().status(parts.status);
        for (name, value) in &parts.headers {
            out = out.header(name, value);
        }
        return out.finish();
    }
    let (parts, body) = response.into_parts();
    let body = body.map_err(io::Error::other);
    Response::from(hyper::Response::from_parts(parts, body))
}

/// A bearer token in the header, or `access_token` in the query (WebSockets from browsers).
fn carries_token(req: &Request) -> bool {
    req.headers()
        .contains_key(poem::http::header::AUTHORIZATION)
        || req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("access_token=")))
}

struct Target {
    node: String,
    reachable: bool,
}

fn parse(id: &str) -> Option<Uuid> {
    id.parse().ok()
}

fn addr(addr: &poem::Addr) -> String {
    match addr {
        poem::Addr::SocketAddr(a) => a.to_string(),
        _ => String::new(),
    }
}

fn ip(addr: &poem::Addr) -> String {
    match addr {
        poem::Addr::SocketAddr(a) => a.ip().to_string(),
        _ => String::new(),
    }
}

fn unreachable(node: &str) -> Response {
    forwarded("unreachable");
    rmm_http::json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        ApiErrorCode::NodeUnreachable,
        &format!(
            "the agent is connected to node {node}, which cannot be reached now; try again shortly"
        ),
    )
}

/// The buffer of each direction of a forwarded WebSocket: output streams in bulk.
const COPY_BUFFER: usize = 64 * 1024;

/// Counts a new cross-node stream this node dialled, by path (`rmm_cluster_streams_total`).
fn streams(node: &str, path: &'static str) {
    tracing::debug!(%node, path, "cluster: new cross-node stream");
    metrics::counter!("rmm_cluster_streams_total", "path" => path).increment(1);
}

/// Counts a request this node forwarded, or could not (`rmm_cluster_forwarded_total`).
fn forwarded(result: &'static str) {
    metrics::counter!("rmm_cluster_forwarded_total", "result" => result).increment(1);
}

/// The middleware: forwards what another node serves, passes the rest on. Without a
/// forwarder (a single node) it passes everything on.
#[derive(Debug, Clone, Default)]
pub struct Forward(pub Option<Forwarder>);

impl<E: Endpoint> Middleware<E> for Forward {
    type Output = ForwardEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        ForwardEndpoint {
            inner: ep,
            forwarder: self.0.clone(),
        }
    }
}

#[derive(Debug)]
pub struct ForwardEndpoint<E> {
    inner: E,
    forwarder: Option<Forwarder>,
}

impl<E: Endpoint> Endpoint for ForwardEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let Some(forwarder) = &self.forwarder else {
            return self
                .inner
                .call(req)
                .await
                .map(poem::IntoResponse::into_response);
        };
        match forwarder.target(&mut req).await {
            Err(response) => Ok(response),
            Ok(Some(target)) if !target.reachable => Ok(unreachable(&target.node)),
            Ok(Some(target)) => Ok(forwarder.forward(&target.node, req).await),
            Ok(None) => self.inner.call(req).await.map(|r| r.into_response()),
        }
    }
}
