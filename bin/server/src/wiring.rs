//! Assembles the server: the routes (API, docs, health, the agents' WebSocket), the
//! background maintenance loop, and graceful shutdown. `bin` calls [`serve`] with a store.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use poem::http::StatusCode;
use poem::web::websocket::{WebSocket, WebSocketConfig};
use poem::web::{Data, Json as PoemJson};
use poem::{EndpointExt, IntoEndpoint, IntoResponse, Response, Route, get, handler};
use poem_openapi::{OpenApiService, ServerObject};
use rmm_application::{
    AgentRepository, App, AuditLog, CommandRepository, Config, ConnectAgentError, Deps,
    EnrollmentRepository, GroupRepository, NodeLeases, Ports, RecordingRepository,
    SessionRepository, UserRepository,
};
use rmm_domain::CloseReason;
use tokio::sync::watch;

use crate::admission::{Admission, AdmissionSettings};
use crate::front_door::FrontDoor;
use crate::system::{RandomIds, SystemClock};
use rmm_auth::{Argon2Credentials, Jwt};
use rmm_gateway::agents::{
    Capabilities, ConnectionTimings, Peer, WsAgentGateway, run_agent_connection,
};
use rmm_gateway::streams::BroadcastStreams;
use rmm_http::client_addr::ClientAddr;
use rmm_http::{Api, error_as_json, json_error};
use rmm_protocol::CAPABILITIES_HEADER;
use rmm_protocol::api::ApiErrorCode;

/// Everything the server needs from a database; both SQL stores implement it.
pub trait Store:
    SessionRepository
    + AgentRepository
    + UserRepository
    + GroupRepository
    + AuditLog
    + CommandRepository
    + EnrollmentRepository
    + RecordingRepository
    + NodeLeases
{
}

impl<S> Store for S where
    S: SessionRepository
        + AgentRepository
        + UserRepository
        + GroupRepository
        + AuditLog
        + CommandRepository
        + EnrollmentRepository
        + RecordingRepository
        + NodeLeases
{
}

/// The production ports over one store type `S` (PostgreSQL or SQLite).
#[derive(Debug)]
pub struct Production<S>(PhantomData<fn() -> S>);

impl<S: Store> Ports for Production<S> {
    type Sessions = S;
    type Agents = S;
    type Users = S;
    type Groups = S;
    type Audit = S;
    type Commands = S;
    type Enrollment = S;
    type Recordings = S;
    type Streams = BroadcastStreams;
    type Gateway = WsAgentGateway;
    type Clock = SystemClock;
    type Ids = RandomIds;
    type Credentials = Argon2Credentials;
}

/// Builds the application over `store`, hashing passwords within the default limits.
pub fn build_app<S: Store>(store: Arc<S>, config: Config) -> Arc<App<Production<S>>> {
    build_app_with(store, config, Argon2Credentials::default())
}

/// Builds the application over `store` with these credentials (their hashing limits).
pub fn build_app_with<S: Store>(
    store: Arc<S>,
    config: Config,
    credentials: Argon2Credentials,
) -> Arc<App<Production<S>>> {
    Arc::new(App::new(
        Deps {
            sessions: Arc::clone(&store),
            agents: Arc::clone(&store),
            users: Arc::clone(&store),
            groups: Arc::clone(&store),
            audit: Arc::clone(&store),
            enrollment: Arc::clone(&store),
            recordings: Arc::clone(&store),
            commands: store,
            streams: Arc::new(BroadcastStreams::default()),
            gateway: Arc::new(WsAgentGateway::default()),
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
            credentials: Arc::new(credentials),
        },
        config,
    ))
}

/// Settings of the network side.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Largest frame an agent may send; larger closes the socket with 1009.
    pub max_agent_frame: usize,
    pub timings: ConnectionTimings,
    /// How often buffered heartbeats are written, idle sessions closed, and closes and command
    /// ends the database refused made again.
    pub maintenance_interval: Duration,
    /// HTTPS and WSS on the listener; `None`: plain HTTP.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    /// Reverse proxies whose `X-Forwarded-For` names the client (logs, login throttling).
    pub trusted_proxies: rmm_http::client_addr::TrustedProxies,
    /// Request and connection limits.
    pub limits: crate::limits::Limits,
    /// Agent handshakes run and queued at once (beyond: 503 with Retry-After).
    pub admission: AdmissionSettings,
    /// How often the retention sweep runs (when the application's retention prunes anything).
    pub retention_sweep: Duration,
    /// Cluster mode: where requests for agents on other nodes go, and what they forward here.
    pub cluster: Option<ServeCluster>,
}

impl ServeCluster {
    /// The forwarded requests, for the one listener that serves them.
    fn take_accepted(&self) -> Option<tokio::sync::mpsc::Receiver<rmm_cluster::Forwarded>> {
        self.accepted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// A cluster node's HTTP side: requests for other nodes' agents are forwarded, and the ones
/// other nodes forward are served here as connections.
#[derive(Debug, Clone)]
pub struct ServeCluster {
    pub forwarder: rmm_cluster::Forwarder,
    /// Taken by the listener when serving starts.
    pub accepted:
        Arc<std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<rmm_cluster::Forwarded>>>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_agent_frame: 1024 * 1024,
            timings: ConnectionTimings::default(),
            maintenance_interval: Duration::from_secs(5),
            tls: None,
            trusted_proxies: rmm_http::client_addr::TrustedProxies::default(),
            limits: crate::limits::Limits::default(),
            admission: AdmissionSettings::default(),
            retention_sweep: Duration::from_secs(3600),
            cluster: None,
        }
    }
}

/// The OpenAPI service, also used to write the committed spec.
pub fn api_service<P: Ports>(app: Arc<App<P>>, jwt: Arc<Jwt>) -> OpenApiService<Api<P>, ()> {
    OpenApiService::new(rmm_http::api(app, jwt), "rmm-tunnel", env!("CARGO_PKG_VERSION"))
        .description(
            "Remote-access tunnels to managed machines. Authenticate with `POST /api/v1/auth/login` and send \
             the token as `Authorization: Bearer <token>`. Agents connect to `GET /api/v1/agent/ws`; the \
             WebSocket messages are documented in docs/protocol.md.",
        )
        .server(ServerObject::new("/").description(
            "The server that serves this document: every path is absolute (`/api/v1/...`), \
             so clients join it to the base URL they reached the server at.",
        ))
}

/// Health: 200 while serving.
#[handler]
fn healthz() -> PoemJson<serde_json::Value> {
    PoemJson(serde_json::json!({ "status": "ok" }))
}

/// Readiness: 200 when the database answers, 503 otherwise.
#[handler]
async fn readyz<P: Ports>(app: Data<&Arc<App<P>>>) -> Response {
    match app.count_users().await {
        Ok(_) => PoemJson(serde_json::json!({ "status": "ready" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "readiness check failed: database unavailable");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                ApiErrorCode::DatabaseUnavailable,
                "database unavailable",
            )
        }
    }
}

/// The agent key of `Authorization: Bearer <key>`, when not empty.
fn bearer_key(req: &poem::Request) -> Option<&str> {
    req.headers()
        .get(poem::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// The agents' WebSocket. The key is checked before the upgrade, so a bad key is a plain 401.
#[handler]
async fn agent_ws<P>(
    req: &poem::Request,
    ws: poem::Result<WebSocket>,
    app: Data<&Arc<App<P>>>,
    options: Data<&Arc<ServeOptions>>,
    shutdown: Data<&watch::Receiver<bool>>,
    admission: Data<&Arc<Admission>>,
) -> Response
where
    P: Ports<Gateway = WsAgentGateway, Streams = BroadcastStreams>,
{
    let Some(key) = bearer_key(req) else {
        return json_error(
            StatusCode::UNAUTHORIZED,
            ApiErrorCode::Unauthenticated,
            "missing agent key: send Authorization: Bearer <agent_key>",
        );
    };
    // Held until the connection is registered (or the handshake fails): bounds the key
    // digests, lookups and registrations a reconnecting fleet makes at once.
    let admitted = match admission.enter().await {
        Ok(permit) => permit,
        Err(shed) => return busy(shed.retry_after_secs),
    };
    let agent = match app.authenticate_agent(key).await {
        Ok(agent) => agent,
        Err(ConnectAgentError::UnknownKey) => {
            tracing::warn!(remote = %ClientAddr::of(req), peer = %req.remote_addr(), "agent connection with an unknown key rejected");
            return json_error(
                StatusCode::UNAUTHORIZED,
                ApiErrorCode::Unauthenticated,
                "unknown agent key",
            );
        }
        Err(e @ ConnectAgentError::Store(_)) => {
            tracing::error!(error = %e, source = ?std::error::Error::source(&e), "agent authentication failed");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                ApiErrorCode::DatabaseUnavailable,
                "server cannot authenticate agents right now",
            );
        }
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                ApiErrorCode::InvalidRequest,
                "this endpoint takes a WebSocket upgrade",
            );
        }
    };
    let capabilities = Capabilities::parse(
        req.headers()
            .get(CAPABILITIES_HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    let remote = ClientAddr::of(req).to_string();
    let app = Arc::clone(&app);
    let options = Arc::clone(&options);
    let shutdown = shutdown.clone();
    ws.config(agent_ws_config(options.max_agent_frame))
        .on_upgrade(move |socket| {
            run_agent_connection(
                app,
                agent,
                capabilities,
                socket,
                options.timings,
                shutdown,
                Peer { remote, admitted },
            )
        })
        .into_response()
}

/// The agents' WebSocket settings. Small buffers: most agents idle, and tungstenite's defaults
/// (128 KiB read buffer, 64 MiB messages) would cost memory per connection and let one agent
/// make us buffer a lot. The read buffer grows to a frame's length as that frame arrives
/// (tungstenite reserves it from the frame's header), so it only bounds idle memory.
fn agent_ws_config(max_frame: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(AGENT_READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame))
}

/// The read buffer of an agent's WebSocket, allocated when it connects and held while it
/// idles (tungstenite zero-fills all of it on its first read, so every byte is resident).
/// tungstenite also reads at most this much per call; on plain connections
/// [`crate::read_ahead::ReadAhead`] below it makes a streaming agent's reads 64 KiB
/// system calls all the same. 1 KiB holds a heartbeat frame whole.
const AGENT_READ_BUFFER: usize = 512;

/// `503 server_busy` with `Retry-After`: the agent handshake was shed (see [`Admission`]).
fn busy(retry_after_secs: u64) -> Response {
    let mut response = json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        ApiErrorCode::ServerBusy,
        "too many agents connecting at once; retry after Retry-After seconds",
    );
    response.headers_mut().insert(
        poem::http::header::RETRY_AFTER,
        poem::http::HeaderValue::from(retry_after_secs),
    );
    response
}

/// The web console (`/` and `/ui/*path`); its errors are the API's JSON errors.
fn console() -> rmm_web::Console {
    rmm_web::Console::new(Arc::new(|status, message| {
        let code = if status == StatusCode::METHOD_NOT_ALLOWED {
            ApiErrorCode::MethodNotAllowed
        } else {
            ApiErrorCode::NotFound
        };
        json_error(status, code, message)
    }))
}

/// The whole HTTP surface.
pub fn routes<P>(
    app: Arc<App<P>>,
    jwt: Arc<Jwt>,
    options: Arc<ServeOptions>,
    shutdown: watch::Receiver<bool>,
) -> impl poem::Endpoint
where
    P: Ports<Gateway = WsAgentGateway, Streams = BroadcastStreams>,
{
    let api = api_service(Arc::clone(&app), Arc::clone(&jwt));
    let front_door = FrontDoor {
        max_json_body: options.limits.max_json_body,
        body_timeout: options.limits.header_read_timeout,
        trusted_proxies: options.trusted_proxies.clone(),
        jwt: Arc::clone(&jwt),
    };
    let spec_json = api.spec();
    let path_param_names = rmm_http::PathParamNames::from_spec(&spec_json);
    let allow = rmm_http::AllowHeader::from_spec(&spec_json)
        .route("/api/v1/openapi.json", &["GET"])
        .route("/api/v1/agent/ws", &["GET"])
        .route("/api/v1/agents/events", &["GET"])
        .route("/api/v1/tunnel/{session_id}/stream", &["GET"])
        .route(
            "/api/v1/tunnel/{session_id}/terminals/{terminal_id}/ws",
            &["GET"],
        )
        .route("/healthz", &["GET"])
        .route("/readyz", &["GET"]);
    let access_log = crate::access_log::AccessLog {
        routes: Arc::new(crate::access_log::Routes::from_spec(&spec_json)),
        jwt: Arc::clone(&jwt),
    };
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    let console = console();
    let admission = Arc::new(Admission::new(options.admission));
    let forward = rmm_cluster::Forward(options.cluster.as_ref().map(|c| c.forwarder.clone()));
    Route::new()
        .nest("/", api.into_endpoint().with(path_param_names))
        .at("/api/v1/openapi.json", spec)
        .nest("/docs", docs)
        .at("/api/v1/agent/ws", get(agent_ws::<P>::default()))
        .at(
            "/api/v1/agents/events",
            get(rmm_http::agent_events::agent_events::<P>::default()),
        )
        .at(
            "/api/v1/tunnel/:session_id/stream",
            get(rmm_gateway::stream_ws::session_stream::<P>::default()),
        )
        .at(
            "/api/v1/tunnel/:session_id/terminals/:terminal_id/ws",
            get(rmm_gateway::terminal_ws::terminal_socket::<P>::default()),
        )
        .at("/healthz", get(healthz))
        .at("/readyz", get(readyz::<P>::default()))
        .data(rmm_http::authenticator(Arc::clone(&app)))
        .data(app)
        .data(jwt)
        .data(options)
        .data(shutdown)
        .data(admission)
        .with(console)
        .catch_all_error(error_as_json)
        .with(allow)
        .with(forward)
        .with(front_door)
        .with(access_log)
}

/// The spec as served at `/api/v1/openapi.json`.
pub fn openapi_spec<P: Ports>(app: Arc<App<P>>, jwt: Arc<Jwt>) -> String {
    api_service(app, jwt).spec()
}

/// Runs the server on `listener` until `shutdown` resolves: reconciles sessions a previous
/// process left open before accepting anything, runs maintenance, and on shutdown stops
/// accepting, closes sessions (telling agents) and returns.
///
/// # Errors
/// When binding or serving fails, or the start-up reconciliation cannot reach the store.
pub async fn serve<P>(
    app: Arc<App<P>>,
    jwt: Arc<Jwt>,
    options: ServeOptions,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()>
where
    P: Ports<Gateway = WsAgentGateway, Streams = BroadcastStreams>,
{
    let (closed, _) = app.reconcile_after_restart().await?;
    if closed > 0 {
        tracing::warn!(
            count = closed,
            "closed sessions a previous server process left open"
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let background = background(&app, &options, &stop_rx);
    let addr = listener.local_addr()?;
    let options = Arc::new(options);
    let endpoint = routes(Arc::clone(&app), jwt, Arc::clone(&options), stop_rx.clone());
    let scheme = crate::tls::scheme(options.tls.as_ref());
    tracing::info!(%addr, "listening; API docs at {scheme}://{addr}/docs");

    let app_for_stop = Arc::clone(&app);
    let acceptor = crate::tls::acceptor(listener, options.tls.as_ref())?.with_forwarded(
        options
            .cluster
            .as_ref()
            .and_then(ServeCluster::take_accepted),
    );
    crate::http_server::run(acceptor, endpoint, options.limits, async move {
        shutdown.await;
        tracing::info!("shutting down: closing sessions and telling agents");
        if let Err(e) = app_for_stop
            .close_all_sessions(CloseReason::ServerShutdown)
            .await
        {
            tracing::error!(error = %e, "could not close sessions at shutdown");
        }
        // Terminals end with their sessions: give them the time to write the rest of their
        // recordings and audit their ends (the agents report their exits meanwhile).
        let deadline = tokio::time::Instant::now() + TERMINALS_AT_SHUTDOWN;
        while app_for_stop.live_terminals() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if app_for_stop.live_terminals() > 0 {
            tracing::warn!(
                count = app_for_stop.live_terminals(),
                "terminals still open at shutdown; the next start closes their recordings"
            );
        }
        let _ = stop_tx.send(true);
    })
    .await?;
    for task in background {
        task.abort();
    }
    if let Err(e) = app.flush_presence_and_close_idle().await {
        tracing::warn!(error = %e, "final presence flush failed");
    }
    tracing::info!("stopped");
    Ok(())
}

/// The periodic work beside serving: maintenance, revocations, token pruning, retention.
fn background<P: Ports>(
    app: &Arc<App<P>>,
    options: &ServeOptions,
    stop_rx: &watch::Receiver<bool>,
) -> [tokio::task::JoinHandle<()>; 4] {
    [
        tokio::spawn(every(options.maintenance_interval, stop_rx.clone(), {
            let app = Arc::clone(app);
            move || maintain(Arc::clone(&app))
        })),
        tokio::spawn(every(REVOCATION_CHECK, stop_rx.clone(), {
            let app = Arc::clone(app);
            move || enforce_revocations(Arc::clone(&app))
        })),
        tokio::spawn(every(TOKEN_PRUNE, stop_rx.clone(), {
            let app = Arc::clone(app);
            move || {
                let app = Arc::clone(&app);
                async move { app.prune_tokens().await }
            }
        })),
        tokio::spawn(every(options.retention_sweep, stop_rx.clone(), {
            let app = Arc::clone(app);
            move || sweep_retention(Arc::clone(&app))
        })),
    ]
}

/// How long shutdown waits for terminals to end (the agent's HUP, TERM, KILL takes 4 s).
const TERMINALS_AT_SHUTDOWN: Duration = Duration::from_secs(10);

/// Runs `round` every `period` (a late round delays the next, never bunches them) until
/// `stop` changes.
async fn every<F, R>(period: Duration, mut stop: watch::Receiver<bool>, mut round: F)
where
    F: FnMut() -> R,
    R: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => round().await,
            _ = stop.changed() => return,
        }
    }
}

async fn maintain<P: Ports>(app: Arc<App<P>>) {
    if let Err(e) = app.flush_presence_and_close_idle().await {
        tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "maintenance (presence flush, command ends, idle close, sweep of unheld sessions) failed");
    }
}

async fn sweep_retention<P: Ports>(app: Arc<App<P>>) {
    if !app.config().retention.prunes() {
        return;
    }
    if let Err(e) = app.retention_sweep().await {
        tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "retention sweep failed; retried at the next one");
    }
}

/// How often open sessions are checked against their owners' state: a disabled or deleted
/// user's tunnels close within 2 s, whichever process disabled them.
const REVOCATION_CHECK: Duration = Duration::from_millis(500);
/// How often long-expired tokens are forgotten.
const TOKEN_PRUNE: Duration = Duration::from_secs(3600);

async fn enforce_revocations<P: Ports>(app: Arc<App<P>>) {
    if let Err(e) = app.close_sessions_of_revoked_users().await {
        tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "closing sessions of disabled users failed; retried shortly");
    }
}
