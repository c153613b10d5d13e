//! The agent runtime: one WebSocket to the server, heartbeats every interval in both modes,
//! tunnel state kept by the domain's `AgentMode` (see [`TunnelState`]), redial with
//! exponential backoff and full jitter, dead-peer detection by read deadline, and a clean close
//! on shutdown.
//!
//! It must not know about command-line flags, environment variables or config files (the
//! binary turns those into an [`AgentConfig`]), nor about the server's internals: it speaks
//! only the wire protocol of [`crate::protocol`].

mod backoff;
mod host;
mod tls;
mod tunnel;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, Uri, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

pub use backoff::{Backoff, rejected_delay};
pub use host::facts as host_facts;
pub use tls::TlsError;
pub use tunnel::{COMMANDS_UNSUPPORTED, MAX_CHANNELS, TunnelState};

use crate::protocol::{AgentMessage, DecodeError, ServerMessage, encode};

/// The path of the agents' WebSocket endpoint on the server.
pub const AGENT_WS_PATH: &str = "/api/v1/agent/ws";

/// Server frames are small JSON; anything near this is hostile or a bug.
const MAX_INBOUND_MESSAGE: usize = 1024 * 1024;

/// Why a server URL or key is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("server URL {0:?} is not a URL")]
    BadUrl(String),
    #[error("server URL must start with ws:// or wss:// (got {0:?})")]
    BadScheme(String),
    #[error("server URL {0:?} has no host")]
    NoHost(String),
    #[error("server URL must not carry a query or fragment")]
    QueryOrFragment,
    #[error("the agent key is empty")]
    EmptyKey,
    #[error("the agent key contains characters that cannot go in an HTTP header")]
    BadKey,
}

/// The agents' WebSocket URL of a server: `ws://` or `wss://`, with [`AGENT_WS_PATH`] appended
/// when the given URL does not already end with it (a path prefix of a reverse proxy is kept).
#[derive(Clone, PartialEq, Eq)]
pub struct ServerUrl {
    url: String,
    tls: bool,
}

impl ServerUrl {
    /// # Errors
    /// [`ConfigError`] naming what is wrong with `value`.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let value = value.trim();
        let uri: Uri = value
            .parse()
            .map_err(|_| ConfigError::BadUrl(value.chars().take(200).collect()))?;
        let tls = match uri.scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            other => return Err(ConfigError::BadScheme(other.unwrap_or("").to_owned())),
        };
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .ok_or_else(|| ConfigError::NoHost(value.chars().take(200).collect()))?;
        if uri.query().is_some() || value.contains('#') {
            return Err(ConfigError::QueryOrFragment);
        }
        let path = uri.path().trim_end_matches('/');
        let path = if path.ends_with(AGENT_WS_PATH) {
            path.to_owned()
        } else {
            format!("{path}{AGENT_WS_PATH}")
        };
        let scheme = if tls { "wss" } else { "ws" };
        Ok(Self {
            url: format!("{scheme}://{authority}{path}"),
            tls,
        })
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.url
    }

    #[must_use]
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerUrl({})", self.url)
    }
}

/// The agent's secret key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentKey(String);

impl AgentKey {
    /// # Errors
    /// [`ConfigError::EmptyKey`], or [`ConfigError::BadKey`] when it cannot be sent in a header.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(ConfigError::EmptyKey);
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::BadKey);
        }
        Ok(Self(value.to_owned()))
    }

    fn bearer(&self) -> Result<HeaderValue, ConfigError> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.0))
            .map_err(|_| ConfigError::BadKey)?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentKey([redacted])")
    }
}

/// Timings of the connection loop. Fields so tests (and unusual networks) can shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentTimings {
    /// How often a heartbeat is sent (also once right after connecting).
    pub heartbeat_interval: Duration,
    /// First backoff ceiling after a failure.
    pub backoff_base: Duration,
    /// Largest backoff delay.
    pub backoff_cap: Duration,
    /// A connection up at least this long resets the backoff.
    pub stable_after: Duration,
    /// No inbound frame (pings included) for this long: the peer is dead, redial.
    pub read_idle: Duration,
    /// Roughly how often to retry after the server rejected the key.
    pub rejected_retry: Duration,
    /// Bound on a TCP + TLS + HTTP upgrade.
    pub connect_timeout: Duration,
    /// Bound on one write; longer means the server stopped reading.
    pub write_timeout: Duration,
}

impl Default for AgentTimings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
            // The server pings every 20 s by default: 90 s is four missed pings.
            read_idle: Duration::from_secs(90),
            rejected_retry: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(20),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything the runtime needs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub server: ServerUrl,
    pub key: AgentKey,
    /// Extra PEM CA certificates to trust for `wss://` (self-signed deployments).
    pub ca_file: Option<PathBuf>,
    /// One connection only: fail instead of retrying, and end when it ends.
    pub once: bool,
    pub timings: AgentTimings,
}

impl AgentConfig {
    /// A configuration with the default timings, retrying forever, system roots only.
    #[must_use]
    pub fn new(server: ServerUrl, key: AgentKey) -> Self {
        Self {
            server,
            key,
            ca_file: None,
            once: false,
            timings: AgentTimings::default(),
        }
    }
}

/// Why [`run`] stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// `--once`: the server refused the key (HTTP 401).
    #[error("server rejected the agent key")]
    KeyRejected,
    /// `--once`: the first connection attempt failed.
    #[error("cannot connect to {server}: {reason}")]
    Unreachable { server: String, reason: String },
    /// `--once`: the connection was established and then lost.
    #[error("connection to {server} lost: {reason}")]
    Disconnected { server: String, reason: String },
}

/// Runs the agent until `shutdown` resolves (then closes the socket with a close frame and
/// returns `Ok`) or, with `once`, until its single connection fails or ends.
///
/// # Errors
/// [`AgentError::Tls`] at start-up when the TLS configuration cannot be built; with `once`,
/// [`AgentError::KeyRejected`], [`AgentError::Unreachable`] or [`AgentError::Disconnected`].
/// Without `once` every connection failure is logged and retried, never returned.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let connector = if config.server.is_tls() {
        Some(Connector::Rustls(tls::client_config(
            config.ca_file.as_deref(),
        )?))
    } else {
        None
    };
    let timings = config.timings;
    let mut backoff = Backoff::new(
        timings.backoff_base,
        timings.backoff_cap,
        timings.stable_after,
    );
    let mut shutdown = std::pin::pin!(shutdown);
    tracing::info!(server = %config.server, version = env!("CARGO_PKG_VERSION"), "agent starting");

    loop {
        let dialled = tokio::select! {
            dialled = dial(&config, connector.clone()) => dialled,
            () = &mut shutdown => return Ok(()),
        };
        let delay = match dialled {
            Ok(socket) => {
                let up_since = Instant::now();
                tracing::info!(server = %config.server, "connected");
                let end = drive(socket, &timings, shutdown.as_mut()).await;
                let up = up_since.elapsed();
                match end {
                    End::Shutdown => {
                        tracing::info!("shut down: connection closed");
                        return Ok(());
                    }
                    End::Lost(reason) => {
                        tracing::info!(reason = %reason, up_secs = up.as_secs(), "disconnected");
                        if config.once {
                            return Err(AgentError::Disconnected {
                                server: config.server.to_string(),
                                reason,
                            });
                        }
                        backoff.connection_lasted(up);
                        let delay = backoff.next_delay(backoff::random_unit());
                        tracing::info!(
                            retry_in_secs = format_args!("{:.1}", delay.as_secs_f64()),
                            "reconnecting"
                        );
                        delay
                    }
                }
            }
            Err(DialError::Rejected) => {
                if config.once {
                    return Err(AgentError::KeyRejected);
                }
                let delay = rejected_delay(timings.rejected_retry, backoff::random_unit());
                tracing::error!(server = %config.server, retry_in_secs = delay.as_secs(), "server rejected the agent key (HTTP 401): check --key / RMM_AGENT_KEY; retrying slowly");
                delay
            }
            Err(DialError::Failed(reason)) => {
                if config.once {
                    return Err(AgentError::Unreachable {
                        server: config.server.to_string(),
                        reason,
                    });
                }
                let delay = backoff.next_delay(backoff::random_unit());
                tracing::warn!(server = %config.server, reason = %reason, retry_in_secs = format_args!("{:.1}", delay.as_secs_f64()), "cannot connect");
                delay
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = &mut shutdown => return Ok(()),
        }
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

enum DialError {
    /// HTTP 401 on the upgrade: retrying soon cannot help.
    Rejected,
    Failed(String),
}

async fn dial(config: &AgentConfig, connector: Option<Connector>) -> Result<Socket, DialError> {
    let mut request = config
        .server
        .as_str()
        .into_client_request()
        .map_err(|e| DialError::Failed(e.to_string()))?;
    let bearer = config
        .key
        .bearer()
        .map_err(|e| DialError::Failed(e.to_string()))?;
    request.headers_mut().insert(header::AUTHORIZATION, bearer);
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_INBOUND_MESSAGE))
        .max_frame_size(Some(MAX_INBOUND_MESSAGE));
    let attempt =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(ws_config), true, connector);
    match tokio::time::timeout(config.timings.connect_timeout, attempt).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(WsError::Http(response))) if response.status() == StatusCode::UNAUTHORIZED => {
            Err(DialError::Rejected)
        }
        Ok(Err(WsError::Http(response))) => Err(DialError::Failed(format!(
            "the server answered the upgrade with HTTP {}",
            response.status()
        ))),
        Ok(Err(e)) => Err(DialError::Failed(e.to_string())),
        Err(_) => Err(DialError::Failed(format!(
            "no answer within {}s",
            config.timings.connect_timeout.as_secs()
        ))),
    }
}

enum End {
    Shutdown,
    Lost(String),
}

/// One connection: heartbeats, server frames through [`TunnelState`], read deadline, shutdown.
/// Everything is in one task, so the tunnel state needs no lock; whatever the exit, the state
/// dies with this call (a new connection starts in heartbeat mode with no channels).
async fn drive<S>(
    socket: Socket,
    timings: &AgentTimings,
    mut shutdown: std::pin::Pin<&mut S>,
) -> End
where
    S: Future<Output = ()> + ?Sized,
{
    let (mut sink, mut stream) = socket.split();
    let mut state = TunnelState::default();
    // The first tick is immediate: the server learns our facts as soon as we connect.
    let mut heartbeat = tokio::time::interval(timings.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut deadline = Instant::now() + timings.read_idle;

    let end = loop {
        let outgoing: Vec<AgentMessage> = tokio::select! {
            frame = stream.next() => {
                deadline = Instant::now() + timings.read_idle;
                match frame {
                    Some(Ok(Message::Text(text))) => match ServerMessage::decode(&text) {
                        Ok(message) => state.handle(message),
                        Err(DecodeError::UnknownType(kind)) => {
                            tracing::debug!(kind = %kind, "unknown message type from the server ignored");
                            Vec::new()
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "malformed frame from the server ignored");
                            Vec::new()
                        }
                    },
                    Some(Ok(Message::Binary(_))) => {
                        tracing::warn!("binary frame from the server ignored: the protocol is JSON text");
                        Vec::new()
                    }
                    // tungstenite queues the pong itself and flushes it on the next read/write.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Vec::new(),
                    Some(Ok(Message::Close(frame))) => {
                        break End::Lost(match frame {
                            Some(f) => format!("server closed the connection ({}: {})", f.code, f.reason),
                            None => "server closed the connection".to_owned(),
                        });
                    }
                    None => break End::Lost("connection closed".to_owned()),
                    Some(Err(e)) => break End::Lost(format!("socket error: {e}")),
                }
            }
            _ = heartbeat.tick() => vec![AgentMessage::Heartbeat(host::facts())],
            () = tokio::time::sleep_until(deadline) => {
                break End::Lost(format!(
                    "no traffic from the server for {}s (dead peer)",
                    timings.read_idle.as_secs()
                ));
            }
            () = &mut shutdown => {
                let close = Message::Close(Some(CloseFrame {
                    code: CloseCode::Away,
                    reason: "agent shutting down".into(),
                }));
                // Best effort, bounded: a dead server must not keep the service from stopping.
                let _ = tokio::time::timeout(timings.write_timeout, sink.send(close)).await;
                break End::Shutdown;
            }
        };
        for message in outgoing {
            let sent = tokio::time::timeout(
                timings.write_timeout,
                sink.send(Message::text(encode(&message))),
            )
            .await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return finish(&mut state, End::Lost(format!("write failed: {e}"))),
                Err(_) => {
                    return finish(
                        &mut state,
                        End::Lost("write timed out (server not reading)".to_owned()),
                    );
                }
            }
        }
    };
    finish(&mut state, end)
}

fn finish(state: &mut TunnelState, end: End) -> End {
    // Nothing runs in channels yet; when commands land, stopping them hangs off this list.
    let _closed = state.reset();
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_get_the_agent_path_when_missing() {
        let cases = [
            ("ws://127.0.0.1:8080", "ws://127.0.0.1:8080/api/v1/agent/ws"),
            ("ws://h:1/", "ws://h:1/api/v1/agent/ws"),
            (
                "wss://rmm.example.com",
                "wss://rmm.example.com/api/v1/agent/ws",
            ),
            (
                "wss://rmm.example.com/api/v1/agent/ws",
                "wss://rmm.example.com/api/v1/agent/ws",
            ),
            (
                "wss://proxy.example.com/rmm/",
                "wss://proxy.example.com/rmm/api/v1/agent/ws",
            ),
            (" ws://[::1]:9000 ", "ws://[::1]:9000/api/v1/agent/ws"),
        ];
        for (given, want) in cases {
            assert_eq!(ServerUrl::parse(given).unwrap().as_str(), want, "{given}");
        }
        assert!(ServerUrl::parse("wss://x").unwrap().is_tls());
        assert!(!ServerUrl::parse("ws://x").unwrap().is_tls());
    }

    #[test]
    fn server_urls_other_than_ws_or_wss_are_refused() {
        assert!(
            matches!(ServerUrl::parse("http://h"), Err(ConfigError::BadScheme(s)) if s == "http")
        );
        assert!(matches!(
            ServerUrl::parse("h:8080"),
            Err(ConfigError::BadScheme(_))
        ));
        assert!(matches!(
            ServerUrl::parse("not a url"),
            Err(ConfigError::BadUrl(_))
        ));
        assert!(matches!(
            ServerUrl::parse("ws://h/?a=1"),
            Err(ConfigError::QueryOrFragment)
        ));
        assert!(ServerUrl::parse("").is_err());
    }

    #[test]
    fn keys_are_redacted_in_debug_and_must_fit_a_header() {
        let key = AgentKey::parse("s3cret-key").unwrap();
        assert_eq!(format!("{key:?}"), "AgentKey([redacted])");
        let config = AgentConfig::new(ServerUrl::parse("ws://h").unwrap(), key.clone());
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(key.bearer().unwrap().is_sensitive());
        assert_eq!(AgentKey::parse("  "), Err(ConfigError::EmptyKey));
        assert_eq!(AgentKey::parse("a b"), Err(ConfigError::BadKey));
        assert_eq!(AgentKey::parse("é"), Err(ConfigError::BadKey));
    }

    /// Timings short enough for tests; the read deadline is generous unless a test shortens it.
    fn fast() -> AgentTimings {
        AgentTimings {
            heartbeat_interval: Duration::from_secs(30),
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(50),
            stable_after: Duration::from_secs(60),
            read_idle: Duration::from_secs(30),
            rejected_retry: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
        }
    }

    async fn listener() -> (tokio::net::TcpListener, ServerUrl) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = ServerUrl::parse(&format!("ws://{}", listener.local_addr().unwrap())).unwrap();
        (listener, url)
    }

    /// Accepts one WebSocket, checking the agent's path and bearer key.
    // The callback's error type is tungstenite's (an HTTP response); its size is not ours.
    #[allow(clippy::result_large_err)]
    async fn accept(listener: &tokio::net::TcpListener) -> WebSocketStream<TcpStream> {
        use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
        let (tcp, _) = listener.accept().await.unwrap();
        tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, res: Response| {
            assert_eq!(req.uri().path(), AGENT_WS_PATH);
            assert_eq!(req.headers()[header::AUTHORIZATION], "Bearer k");
            Ok(res)
        })
        .await
        .unwrap()
    }

    async fn next_json(ws: &mut WebSocketStream<TcpStream>) -> serde_json::Value {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .unwrap()
            {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a JSON frame, got {other:?}"),
            }
        }
    }

    fn config(server: ServerUrl, timings: AgentTimings, once: bool) -> AgentConfig {
        let mut config = AgentConfig::new(server, AgentKey::parse("k").unwrap());
        config.timings = timings;
        config.once = once;
        config
    }

    #[tokio::test]
    async fn the_agent_heartbeats_at_once_serves_a_tunnel_and_closes_cleanly_on_shutdown() {
        let (listener, url) = listener().await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let agent = tokio::spawn(run(config(url, fast(), false), async {
            let _ = stopped.await;
        }));
        let mut ws = accept(&listener).await;
        let hb = next_json(&mut ws).await;
        assert_eq!(hb["type"], "heartbeat");
        assert_eq!(hb["payload"]["agent_version"], env!("CARGO_PKG_VERSION"));
        let s1 = "550e8400-e29b-41d4-a716-446655440000";
        ws.send(Message::text(format!(
            r#"{{"type":"tunnel_open","payload":{{"session_id":"{s1}","tech_id":"7c9e6679-7425-40de-944b-e07fc1f90ae7"}}}}"#
        )))
        .await
        .unwrap();
        assert_eq!(
            next_json(&mut ws).await,
            serde_json::json!({"type":"tunnel_ready","payload":{"session_id": s1}})
        );
        // Garbage and unknown types are ignored; the connection stays.
        ws.send(Message::text("{nope")).await.unwrap();
        ws.send(Message::text(r#"{"type":"file_chunk","payload":{}}"#))
            .await
            .unwrap();
        ws.send(Message::text(
            r#"{"type":"tunnel_data","payload":{"channel_id":"terminal-1","data":{"type":"terminal","payload":{"command":"id"}}}}"#,
        ))
        .await
        .unwrap();
        assert_eq!(
            next_json(&mut ws).await,
            serde_json::json!({"type":"tunnel_error","payload":{"channel_id":"terminal-1","error": COMMANDS_UNSUPPORTED}})
        );
        stop.send(()).unwrap();
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected a close frame, got {other:?}"),
        }
        assert!(agent.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_silent_server_is_detected_as_a_dead_peer() {
        let (listener, url) = listener().await;
        let timings = AgentTimings {
            read_idle: Duration::from_millis(300),
            ..fast()
        };
        let agent = tokio::spawn(run(config(url, timings, true), std::future::pending()));
        // Accept and then never send anything (a half-open connection).
        let _ws = accept(&listener).await;
        let result = tokio::time::timeout(Duration::from_secs(5), agent)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(&result, Err(AgentError::Disconnected { reason, .. }) if reason.contains("dead peer")),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_dropped_connection_is_redialled_with_a_fresh_tunnel_state() {
        let (listener, url) = listener().await;
        let agent = tokio::spawn(run(config(url, fast(), false), std::future::pending()));
        let mut first = accept(&listener).await;
        assert_eq!(next_json(&mut first).await["type"], "heartbeat");
        let s1 = "550e8400-e29b-41d4-a716-446655440000";
        first
            .send(Message::text(format!(
                r#"{{"type":"tunnel_open","payload":{{"session_id":"{s1}","tech_id":"7c9e6679-7425-40de-944b-e07fc1f90ae7"}}}}"#
            )))
            .await
            .unwrap();
        assert_eq!(next_json(&mut first).await["type"], "tunnel_ready");
        drop(first);
        let mut second = accept(&listener).await;
        assert_eq!(next_json(&mut second).await["type"], "heartbeat");
        // The old tunnel did not survive the disconnect: the same session opens again.
        second
            .send(Message::text(format!(
                r#"{{"type":"tunnel_open","payload":{{"session_id":"{s1}","tech_id":"7c9e6679-7425-40de-944b-e07fc1f90ae7"}}}}"#
            )))
            .await
            .unwrap();
        assert_eq!(next_json(&mut second).await["type"], "tunnel_ready");
        agent.abort();
    }

    #[tokio::test]
    async fn a_401_on_the_upgrade_is_a_rejected_key() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (listener, url) = listener().await;
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await.unwrap();
            tcp.write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        let result = run(config(url, fast(), true), std::future::pending()).await;
        assert!(matches!(result, Err(AgentError::KeyRejected)), "{result:?}");
        assert_eq!(
            AgentError::KeyRejected.to_string(),
            "server rejected the agent key"
        );
        server.await.unwrap();
    }

    #[test]
    fn the_default_timings_are_the_documented_ones() {
        let t = AgentTimings::default();
        assert_eq!(t.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(
            (t.backoff_base, t.backoff_cap),
            (Duration::from_secs(1), Duration::from_secs(60))
        );
        assert_eq!(t.stable_after, Duration::from_secs(60));
        assert_eq!(t.read_idle, Duration::from_secs(90));
    }
}
