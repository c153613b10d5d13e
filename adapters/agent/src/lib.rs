//! The agent runtime: one WebSocket to the server, heartbeats every interval in both modes,
//! tunnel state kept by the domain's `AgentMode` (see [`TunnelState`]), commands run on the
//! tunnel's channels with live output (see `exec`), files moved and listed on File channels
//! (see `files`), redial with exponential backoff and full jitter, dead-peer detection by read
//! deadline, and a clean close on shutdown.
//!
//! It must not know about command-line flags, environment variables or config files (the
//! binary turns those into an [`AgentConfig`]), nor about the server's internals: it speaks
//! only the wire protocol of [`rmm_protocol`].

mod backoff;
mod chunker;
mod exec;
mod files;
mod host;
mod tls;
mod tunnel;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, StatusCode, Uri, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

pub use backoff::{Backoff, rejected_delay};
pub use chunker::CHUNK;
pub use exec::{KillTimings, StopReason};
pub use files::{ACK_EVERY, FRAME_DATA, MAX_ENTRIES, PARTIAL_SUFFIX, WINDOW};
pub use host::facts as host_facts;
pub use tls::TlsError;
pub use tunnel::{Action, FileInput, FileOp, MAX_CHANNELS, NO_TUNNEL, TunnelState};

use exec::{CommandSpec, Commands, RunId};
use files::{PathLocks, TransferId, Transfers};

use rmm_protocol::{
    AgentMessage, CAP_COMMAND_CANCEL, CAP_COMMAND_TIMEOUT, CAP_FILE_TRANSFER, CAPABILITIES_HEADER,
    DataFrame, DecodeError, ServerMessage, encode,
};

pub use rmm_protocol::limits::AGENT_WS_PATH;

/// Server frames are small JSON or upload data frames (256 KiB of data from our server);
/// anything near this is hostile or a bug.
const MAX_INBOUND_MESSAGE: usize = 1024 * 1024;

/// The extensions this agent speaks, sent in [`CAPABILITIES_HEADER`] on the upgrade: the server
/// sends `timeout_secs`, `command_cancel` and file transfers only to agents that list them.
const CAPABILITIES: [&str; 3] = [CAP_COMMAND_TIMEOUT, CAP_COMMAND_CANCEL, CAP_FILE_TRANSFER];

/// Frames the tasks of one connection (commands, file operations) may queue before they wait;
/// the wait is their backpressure. A command frame holds one [`CHUNK`] of output (about
/// 45 KiB queued for text, under 150 KiB for the worst binary: lossy text plus base64), a
/// download frame at most [`FRAME_DATA`] (256 KiB), so queued frames cost at most ~8 MiB
/// whatever runs, plus a chunk buffer or two per running command or download. The queue is
/// first come, first served, so a download cannot starve a command's output or the reverse.
const OUTBOUND_QUEUE: usize = 32;

/// What the tasks of a connection hand to it, through one bounded queue, in order.
#[derive(Debug)]
enum Event {
    /// A frame to send.
    Frame(AgentMessage),
    /// A binary data frame to send (a download's bytes).
    Data(DataFrame),
    /// The command's last frame has been queued: its channel may be released.
    CommandEnded(RunId),
    /// The file operation's last frame (if any) has been queued: its channel may be released.
    TransferEnded(TransferId),
}

/// After SIGKILL, how long a command's pipes may stay open (held by a process that left its
/// group) before its end is reported anyway.
const KILL_DRAIN: Duration = Duration::from_secs(2);

/// Why a server URL or key is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("server URL {0:?} is not a URL")]
    BadUrl(String),
    #[error("server URL must start with ws://, wss://, http:// or https:// (got {0:?})")]
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
/// The server's `http://` and `https://` URL (the `rmm` CLI's `RMM_SERVER`) are accepted too
/// and become `ws://` and `wss://`: one setting serves both programs.
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
            Some("wss" | "https") => true,
            Some("ws" | "http") => false,
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
    /// A killed command's time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
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
            kill_grace: Duration::from_secs(2),
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
    /// The limit on a command whose frame carries no `timeout_secs` (a server that predates
    /// the extension); `None`: no limit.
    pub command_timeout: Option<Duration>,
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
            command_timeout: None,
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
    // Shared by every connection: an upload stopped with a lost connection may still be
    // finishing a write when the next connection resumes it.
    let locks = PathLocks::default();
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
                let end = drive(socket, &config, &locks, shutdown.as_mut()).await;
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
    let capabilities = HeaderValue::from_str(&CAPABILITIES.join(", "))
        .map_err(|e| DialError::Failed(e.to_string()))?;
    request
        .headers_mut()
        .insert(HeaderName::from_static(CAPABILITIES_HEADER), capabilities);
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

/// One connection: heartbeats, server frames through [`TunnelState`], commands through
/// [`Commands`], file operations through [`Transfers`], read deadline, shutdown. The state
/// lives in this one task, so it needs no lock; the work's tasks only talk to it through the
/// bounded `events` queue, and it hands them input without ever waiting for them. Whatever the
/// exit, the state dies with this call (a new connection starts in heartbeat mode with no
/// channels), every command of this connection is killed and every transfer stopped.
async fn drive<S>(
    socket: Socket,
    config: &AgentConfig,
    locks: &PathLocks,
    mut shutdown: std::pin::Pin<&mut S>,
) -> End
where
    S: Future<Output = ()> + ?Sized,
{
    let timings = &config.timings;
    let (mut sink, mut stream) = socket.split();
    let mut state = TunnelState::default();
    let (events_tx, mut events) = mpsc::channel(OUTBOUND_QUEUE);
    let mut work = Work {
        commands: Commands::new(
            events_tx.clone(),
            KillTimings {
                grace: timings.kill_grace,
                drain: KILL_DRAIN,
            },
        ),
        transfers: Transfers::new(events_tx, locks.clone()),
        default_timeout: config.command_timeout,
    };
    // The first tick is immediate: the server learns our facts as soon as we connect.
    let mut heartbeat = tokio::time::interval(timings.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut deadline = Instant::now() + timings.read_idle;

    let end = loop {
        let outgoing: Vec<Message> = tokio::select! {
            frame = stream.next() => {
                deadline = Instant::now() + timings.read_idle;
                match frame {
                    Some(Ok(Message::Text(text))) => match ServerMessage::decode(&text) {
                        Ok(message) => work.perform(state.handle(message)),
                        Err(DecodeError::UnknownType(kind)) => {
                            tracing::debug!(kind = %kind, "unknown message type from the server ignored");
                            Vec::new()
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "malformed frame from the server ignored");
                            Vec::new()
                        }
                    },
                    Some(Ok(Message::Binary(bytes))) => match DataFrame::decode(bytes) {
                        Ok(frame) => work.perform(state.data_frame(frame)),
                        Err(e) => {
                            tracing::warn!(error = %e, "binary frame from the server ignored");
                            Vec::new()
                        }
                    },
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
            // `work` holds senders, so this never ends; the pattern only keeps it total.
            Some(event) = events.recv() => match event {
                Event::Frame(frame) => vec![text(&frame)],
                Event::Data(frame) => vec![Message::binary(frame.encode())],
                Event::CommandEnded(run) => {
                    if let Some(channel) = work.commands.finished(run) {
                        state.release(&channel);
                    }
                    Vec::new()
                }
                Event::TransferEnded(id) => {
                    if let Some(channel) = work.transfers.finished(id) {
                        state.release(&channel);
                    }
                    Vec::new()
                }
            },
            _ = heartbeat.tick() => vec![text(&AgentMessage::Heartbeat(host::facts()))],
            () = tokio::time::sleep_until(deadline) => {
                break End::Lost(format!(
                    "no traffic from the server for {}s (dead peer)",
                    timings.read_idle.as_secs()
                ));
            }
            () = &mut shutdown => {
                work.commands.stop_all(StopReason::Cancelled);
                work.transfers.stop_all();
                wind_down(&mut sink, &mut events, &mut work.commands, timings).await;
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
            let sent = tokio::time::timeout(timings.write_timeout, sink.send(message)).await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return finish(&mut state, work, End::Lost(format!("write failed: {e}")));
                }
                Err(_) => {
                    return finish(
                        &mut state,
                        work,
                        End::Lost("write timed out (server not reading)".to_owned()),
                    );
                }
            }
        }
    };
    finish(&mut state, work, end)
}

fn text(message: &AgentMessage) -> Message {
    Message::text(encode(message))
}

/// The work running on one connection's channels.
#[derive(Debug)]
struct Work {
    commands: Commands,
    transfers: Transfers,
    /// The limit on a command whose frame carries none.
    default_timeout: Option<Duration>,
}

impl Work {
    /// Carries out the tunnel state's actions; returns the frames to send.
    fn perform(&mut self, actions: Vec<Action>) -> Vec<Message> {
        let mut outgoing = Vec::new();
        for action in actions {
            match action {
                Action::Send(message) => outgoing.push(text(&message)),
                Action::Run {
                    channel,
                    command,
                    timeout,
                } => self.commands.start(CommandSpec {
                    channel,
                    command,
                    timeout: timeout.or(self.default_timeout),
                }),
                Action::Cancel(channel) => self.commands.cancel(&channel),
                Action::StopAll => {
                    self.commands.stop_all(StopReason::Cancelled);
                    self.transfers.stop_all();
                }
                Action::StartFile { channel, op } => self.transfers.start(channel, op),
                Action::FileInput { channel, input } => self.transfers.input(&channel, input),
                Action::CancelFile(channel) => self.transfers.cancel(&channel),
            }
        }
        outgoing
    }
}

/// Shutting down with the socket still up: the killed commands' final frames go out before
/// the close frame, within the time a kill takes (TERM, grace, KILL, drain) and a little more.
/// Stopped transfers end without a word; data frames still queued are not worth the wait.
async fn wind_down<W>(
    sink: &mut W,
    events: &mut mpsc::Receiver<Event>,
    commands: &mut Commands,
    timings: &AgentTimings,
) where
    W: futures_util::Sink<Message> + Unpin,
{
    let until = Instant::now() + timings.kill_grace + KILL_DRAIN + Duration::from_secs(1);
    while !commands.is_empty() {
        let event = tokio::select! {
            event = events.recv() => event,
            () = tokio::time::sleep_until(until) => break,
        };
        match event {
            Some(Event::Frame(frame)) => {
                let sent = tokio::time::timeout_at(until, sink.send(text(&frame))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    break;
                }
            }
            Some(Event::CommandEnded(run)) => {
                commands.finished(run);
            }
            Some(Event::Data(_) | Event::TransferEnded(_)) => {}
            None => break,
        }
    }
    if !commands.is_empty() {
        tracing::warn!(
            commands = commands.len(),
            "shutting down before every killed command reported its end"
        );
    }
}

/// The connection is over: the tunnel goes, and so does everything that ran in it. Dropping
/// `work` (after telling each task why) leaves each command to finish its kill sequence on its
/// own (TERM, grace, KILL) and each transfer to stop (an upload keeps its partial file); their
/// frames have nowhere to go any more.
fn finish(state: &mut TunnelState, mut work: Work, end: End) -> End {
    let closed = state.reset();
    if !work.commands.is_empty() || !work.transfers.is_empty() {
        tracing::info!(
            commands = work.commands.len(),
            transfers = work.transfers.len(),
            channels = closed.len(),
            "stopping the work of the lost connection"
        );
    }
    work.commands.stop_all(StopReason::Cancelled);
    work.transfers.stop_all();
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
    fn http_and_https_server_urls_become_ws_and_wss() {
        let cases = [
            (
                "http://127.0.0.1:8080",
                "ws://127.0.0.1:8080/api/v1/agent/ws",
                false,
            ),
            (
                "https://rmm.example.com",
                "wss://rmm.example.com/api/v1/agent/ws",
                true,
            ),
            (
                "https://proxy.example.com/rmm/",
                "wss://proxy.example.com/rmm/api/v1/agent/ws",
                true,
            ),
            (
                "http://h:1/api/v1/agent/ws",
                "ws://h:1/api/v1/agent/ws",
                false,
            ),
        ];
        for (given, want, tls) in cases {
            let url = ServerUrl::parse(given).unwrap();
            assert_eq!((url.as_str(), url.is_tls()), (want, tls), "{given}");
        }
    }

    #[test]
    fn ws_and_wss_server_urls_are_kept_as_they_are() {
        let ws = ServerUrl::parse("ws://h:8080").unwrap();
        assert_eq!(
            (ws.as_str(), ws.is_tls()),
            ("ws://h:8080/api/v1/agent/ws", false)
        );
        let wss = ServerUrl::parse("wss://h").unwrap();
        assert_eq!(
            (wss.as_str(), wss.is_tls()),
            ("wss://h/api/v1/agent/ws", true)
        );
    }

    #[test]
    fn server_urls_of_other_schemes_are_refused_naming_the_accepted_ones() {
        for (given, scheme) in [("ftp://h", "ftp"), ("unix://h/run/rmm.sock", "unix")] {
            let e = ServerUrl::parse(given).unwrap_err();
            assert_eq!(e, ConfigError::BadScheme(scheme.to_owned()), "{given}");
            let message = e.to_string();
            for accepted in ["ws://", "wss://", "http://", "https://"] {
                assert!(message.contains(accepted), "{message}");
            }
        }
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
            kill_grace: Duration::from_millis(500),
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
            assert_eq!(
                req.headers()[CAPABILITIES_HEADER],
                "command-timeout, command-cancel, file-transfer"
            );
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
        // The reference's own command frame runs, and its output comes back in its format.
        ws.send(Message::text(
            r#"{"type":"tunnel_data","payload":{"channel_id":"terminal-1","data":{"type":"terminal","payload":{"command":"echo hi"}}}}"#,
        ))
        .await
        .unwrap();
        assert_eq!(
            next_json(&mut ws).await,
            serde_json::json!({"type":"tunnel_data","payload":{"channel_id":"terminal-1","data":{"type":"terminal_output","payload":{"stdout":"hi\n","stderr":"","exit_code":null}}}})
        );
        assert_eq!(
            next_json(&mut ws).await,
            serde_json::json!({"type":"tunnel_data","payload":{"channel_id":"terminal-1","data":{"type":"terminal_output","payload":{"stdout":"","stderr":"","exit_code":0}}}})
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
        assert_eq!(t.kill_grace, Duration::from_secs(2));
    }

    #[test]
    fn the_advertised_capabilities_are_the_protocols_names() {
        assert_eq!(
            CAPABILITIES.join(", "),
            "command-timeout, command-cancel, file-transfer"
        );
    }

    const SESSION: &str = "550e8400-e29b-41d4-a716-446655440000";

    /// An agent connected to a test server, in tunnel mode, past its first heartbeat.
    async fn tunnel_agent(
        timings: AgentTimings,
    ) -> (
        WebSocketStream<TcpStream>,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), AgentError>>,
    ) {
        let (listener, url) = listener().await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let agent = tokio::spawn(run(config(url, timings, false), async {
            let _ = stopped.await;
        }));
        let mut ws = accept(&listener).await;
        assert_eq!(next_json(&mut ws).await["type"], "heartbeat");
        ws.send(Message::text(format!(
            r#"{{"type":"tunnel_open","payload":{{"session_id":"{SESSION}","tech_id":"7c9e6679-7425-40de-944b-e07fc1f90ae7"}}}}"#
        )))
        .await
        .unwrap();
        assert_eq!(next_json(&mut ws).await["type"], "tunnel_ready");
        (ws, stop, agent)
    }

    async fn send_json(ws: &mut WebSocketStream<TcpStream>, value: serde_json::Value) {
        ws.send(Message::text(value.to_string())).await.unwrap();
    }

    fn terminal(channel: &str, command: &str) -> serde_json::Value {
        serde_json::json!({"type":"tunnel_data","payload":{"channel_id":channel,"data":{"type":"terminal","payload":{"command":command}}}})
    }

    /// The next `terminal_output` payload and its channel (heartbeats skipped).
    async fn next_output(ws: &mut WebSocketStream<TcpStream>) -> (String, serde_json::Value) {
        loop {
            let frame = next_json(ws).await;
            if frame["type"] == "heartbeat" {
                continue;
            }
            assert_eq!(frame["type"], "tunnel_data", "{frame}");
            assert_eq!(
                frame["payload"]["data"]["type"], "terminal_output",
                "{frame}"
            );
            let channel = frame["payload"]["channel_id"].as_str().unwrap().to_owned();
            return (channel, frame["payload"]["data"]["payload"].clone());
        }
    }

    /// Starts `echo $$; sleep 1000` on `channel` and returns its process group.
    #[cfg(target_os = "linux")]
    async fn start_sleeper(ws: &mut WebSocketStream<TcpStream>, channel: &str) -> i32 {
        send_json(ws, terminal(channel, "echo $$; sleep 1000 & sleep 1000")).await;
        let (on, output) = next_output(ws).await;
        assert_eq!(on, channel);
        let pgid: i32 = output["stdout"].as_str().unwrap().trim().parse().unwrap();
        assert!(!exec::tests::live_members(pgid).is_empty());
        pgid
    }

    #[tokio::test]
    async fn a_terminal_frame_outside_a_tunnel_is_refused() {
        let (listener, url) = listener().await;
        let agent = tokio::spawn(run(config(url, fast(), false), std::future::pending()));
        let mut ws = accept(&listener).await;
        assert_eq!(next_json(&mut ws).await["type"], "heartbeat");
        send_json(
            &mut ws,
            terminal("terminal-1", "touch /tmp/should-not-exist"),
        )
        .await;
        assert_eq!(
            next_json(&mut ws).await,
            serde_json::json!({"type":"tunnel_error","payload":{"channel_id":"terminal-1","error": NO_TUNNEL}})
        );
        agent.abort();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn concurrent_commands_each_stream_on_their_own_channel_and_channels_are_reused() {
        let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
        send_json(&mut ws, terminal("cmd-a", "sleep 0.3; echo a")).await;
        send_json(&mut ws, terminal("cmd-b", "echo b >&2; exit 4")).await;
        // A duplicate of a running channel is refused; the running command is untouched.
        send_json(&mut ws, terminal("cmd-a", "echo dup")).await;
        let mut got: std::collections::BTreeMap<String, Vec<serde_json::Value>> =
            std::collections::BTreeMap::new();
        let mut refused = Vec::new();
        while got
            .values()
            .filter(|frames| frames.last().is_some_and(|f| !f["exit_code"].is_null()))
            .count()
            < 2
        {
            let frame = next_json(&mut ws).await;
            match frame["type"].as_str() {
                Some("tunnel_error") => refused.push(frame["payload"].clone()),
                Some("tunnel_data") => got
                    .entry(frame["payload"]["channel_id"].as_str().unwrap().to_owned())
                    .or_default()
                    .push(frame["payload"]["data"]["payload"].clone()),
                _ => {}
            }
        }
        assert_eq!(
            refused,
            vec![serde_json::json!({"channel_id":"cmd-a","error":"channel cmd-a is already open"})]
        );
        assert_eq!(got["cmd-a"][0]["stdout"], "a\n");
        assert_eq!(got["cmd-a"][1]["exit_code"], 0);
        assert_eq!(got["cmd-b"][0]["stderr"], "b\n");
        assert_eq!(got["cmd-b"][1]["exit_code"], 4);
        // Finished commands released their channels: the ids run again.
        send_json(&mut ws, terminal("cmd-a", "echo again")).await;
        assert_eq!(next_output(&mut ws).await.1["stdout"], "again\n");
        assert_eq!(next_output(&mut ws).await.1["exit_code"], 0);
        agent.abort();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_frames_timeout_and_a_cancel_kill_the_group_with_their_end_reason() {
        let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
        send_json(
            &mut ws,
            serde_json::json!({"type":"tunnel_data","payload":{"channel_id":"cmd-t","data":{"type":"terminal","payload":{"command":"echo $$; sleep 1000","timeout_secs":1}}}}),
        )
        .await;
        let (_, first) = next_output(&mut ws).await;
        let pgid: i32 = first["stdout"].as_str().unwrap().trim().parse().unwrap();
        let (channel, last) = next_output(&mut ws).await;
        assert_eq!(channel, "cmd-t");
        assert_eq!(last["end_reason"], "timed_out");
        exec::tests::assert_group_gone(pgid).await;

        let pgid = start_sleeper(&mut ws, "cmd-c").await;
        send_json(
            &mut ws,
            serde_json::json!({"type":"command_cancel","payload":{"channel_id":"cmd-c"}}),
        )
        .await;
        let (channel, last) = next_output(&mut ws).await;
        assert_eq!(channel, "cmd-c");
        assert_eq!(last["end_reason"], "cancelled");
        assert!(last["exit_code"].as_i64().is_some_and(|code| code > 128));
        exec::tests::assert_group_gone(pgid).await;
        agent.abort();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn closing_the_tunnel_kills_its_running_commands() {
        let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
        let one = start_sleeper(&mut ws, "cmd-1").await;
        let two = start_sleeper(&mut ws, "cmd-2").await;
        send_json(
            &mut ws,
            serde_json::json!({"type":"tunnel_close","payload":{"session_id": SESSION}}),
        )
        .await;
        // Each still reports its end (the socket is up), as cancelled.
        let mut ended = [next_output(&mut ws).await, next_output(&mut ws).await];
        ended.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(ended[0].0, "cmd-1");
        assert_eq!(ended[1].0, "cmd-2");
        assert!(
            ended
                .iter()
                .all(|(_, last)| last["end_reason"] == "cancelled")
        );
        exec::tests::assert_group_gone(one).await;
        exec::tests::assert_group_gone(two).await;
        agent.abort();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn losing_the_server_kills_the_running_commands() {
        let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
        let pgid = start_sleeper(&mut ws, "cmd-1").await;
        drop(ws);
        // TERM at once; the shell and its children die of it well within the grace.
        exec::tests::assert_group_gone(pgid).await;
        agent.abort();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn shutdown_kills_the_commands_and_reports_their_end_before_closing() {
        let (mut ws, stop, agent) = tunnel_agent(fast()).await;
        let pgid = start_sleeper(&mut ws, "cmd-1").await;
        stop.send(()).unwrap();
        let (channel, last) = next_output(&mut ws).await;
        assert_eq!(
            (channel.as_str(), &last["end_reason"]),
            ("cmd-1", &serde_json::json!("cancelled"))
        );
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected a close frame, got {other:?}"),
        }
        assert!(agent.await.unwrap().is_ok());
        exec::tests::assert_group_gone(pgid).await;
    }

    /// File transfer over the real connection loop, against real files in temporary
    /// directories. Linux only: modes, symlinks, FIFOs and `/sys` are Unix matters.
    #[cfg(target_os = "linux")]
    mod file_transfer {
        use super::*;

        /// A frame from the agent, heartbeats and pings skipped.
        #[derive(Debug)]
        enum Frame {
            Json(serde_json::Value),
            Data(DataFrame),
        }

        async fn next_frame(ws: &mut WebSocketStream<TcpStream>) -> Frame {
            loop {
                match tokio::time::timeout(Duration::from_secs(10), ws.next())
                    .await
                    .expect("a frame from the agent in time")
                {
                    Some(Ok(Message::Text(t))) => {
                        let value: serde_json::Value = serde_json::from_str(&t).unwrap();
                        if value["type"] != "heartbeat" {
                            return Frame::Json(value);
                        }
                    }
                    Some(Ok(Message::Binary(b))) => {
                        return Frame::Data(DataFrame::decode(b).unwrap());
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    other => panic!("expected a frame, got {other:?}"),
                }
            }
        }

        /// The next JSON frame, which must be of `kind` on `channel`; its payload.
        async fn expect_json(
            ws: &mut WebSocketStream<TcpStream>,
            kind: &str,
            channel: &str,
        ) -> serde_json::Value {
            match next_frame(ws).await {
                Frame::Json(value) => {
                    assert_eq!(value["type"], kind, "{value}");
                    assert_eq!(value["payload"]["channel_id"], channel, "{value}");
                    value["payload"].clone()
                }
                Frame::Data(frame) => panic!("expected {kind}, got data at {}", frame.offset),
            }
        }

        /// The `file_error` on `channel`: its code and message.
        async fn expect_error(
            ws: &mut WebSocketStream<TcpStream>,
            channel: &str,
        ) -> (String, String) {
            let payload = expect_json(ws, "file_error", channel).await;
            (
                payload["code"].as_str().unwrap().to_owned(),
                payload["message"].as_str().unwrap().to_owned(),
            )
        }

        fn random_bytes(len: usize) -> Vec<u8> {
            let mut bytes = vec![0; len];
            getrandom::fill(&mut bytes).unwrap();
            bytes
        }

        fn sha256_hex(bytes: &[u8]) -> String {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(bytes))
        }

        fn path_of(path: &std::path::Path) -> String {
            path.display().to_string()
        }

        /// Sends `data` as the bytes from `from` on, in frames of [`FRAME_DATA`].
        async fn send_data(
            ws: &mut WebSocketStream<TcpStream>,
            channel: &str,
            from: u64,
            data: &[u8],
        ) {
            let mut offset = from;
            for piece in data.chunks(FRAME_DATA) {
                let frame = DataFrame {
                    channel_id: channel.to_owned(),
                    offset,
                    data: bytes::Bytes::copy_from_slice(piece),
                };
                ws.send(Message::binary(frame.encode())).await.unwrap();
                offset += piece.len() as u64;
            }
        }

        fn upload(channel: &str, path: &str, offset: u64) -> serde_json::Value {
            serde_json::json!({"type":"file_upload","payload":{"channel_id":channel,"path":path,"offset":offset}})
        }

        fn upload_end(channel: &str, size: u64, sha256: Option<&str>) -> serde_json::Value {
            serde_json::json!({"type":"file_upload_end","payload":{"channel_id":channel,"size":size,"sha256":sha256}})
        }

        fn file_request(kind: &str, channel: &str, path: &str) -> serde_json::Value {
            serde_json::json!({"type":kind,"payload":{"channel_id":channel,"path":path}})
        }

        fn download(channel: &str, path: &str, offset: u64) -> serde_json::Value {
            serde_json::json!({"type":"file_download","payload":{"channel_id":channel,"path":path,"offset":offset}})
        }

        fn file_ack(channel: &str, offset: u64) -> serde_json::Value {
            serde_json::json!({"type":"file_ack","payload":{"channel_id":channel,"offset":offset}})
        }

        fn file_cancel(channel: &str) -> serde_json::Value {
            serde_json::json!({"type":"file_cancel","payload":{"channel_id":channel}})
        }

        /// The acks up to the one at `until`, then nothing else: their offsets.
        async fn acks_until(
            ws: &mut WebSocketStream<TcpStream>,
            channel: &str,
            until: u64,
        ) -> Vec<u64> {
            let mut acks = Vec::new();
            while acks.last() != Some(&until) {
                let ack = expect_json(ws, "file_ack", channel).await;
                acks.push(ack["offset"].as_u64().unwrap());
            }
            acks
        }

        /// The names in `dir`.
        fn names_in(dir: &std::path::Path) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }

        const MIB: u64 = 1024 * 1024;

        #[tokio::test]
        async fn an_upload_in_frames_is_acknowledged_per_mebibyte_and_lands_in_place_verified() {
            let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("payload.bin");
            let data = random_bytes(3 * MIB as usize + 1000);
            let sha = sha256_hex(&data);
            send_json(&mut ws, upload("file-1", &path_of(&target), 0)).await;
            send_data(&mut ws, "file-1", 0, &data).await;
            send_json(&mut ws, upload_end("file-1", data.len() as u64, Some(&sha))).await;
            assert_eq!(
                acks_until(&mut ws, "file-1", data.len() as u64).await,
                [MIB, 2 * MIB, 3 * MIB, data.len() as u64]
            );
            let done = expect_json(&mut ws, "file_done", "file-1").await;
            assert_eq!(
                done,
                serde_json::json!({"channel_id":"file-1","path":path_of(&target),"size":data.len(),"sha256":sha})
            );
            assert!(std::fs::read(&target).unwrap() == data, "content differs");
            // No partial file is left behind: the directory holds the target only.
            assert_eq!(names_in(dir.path()), ["payload.bin"]);
            // The channel was released: its id serves a new operation.
            send_json(
                &mut ws,
                file_request("file_upload_status", "file-1", &path_of(&target)),
            )
            .await;
            assert_eq!(
                expect_json(&mut ws, "file_partial", "file-1").await["size"],
                0
            );
            agent.abort();
        }

        #[tokio::test]
        async fn an_interrupted_upload_keeps_its_partial_reports_it_and_resumes_to_a_correct_file()
        {
            let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("resumed.bin");
            let path = path_of(&target);
            let data = random_bytes(4 * MIB as usize + 77);
            let half = 2 * MIB;
            let (first, rest) = data.split_at(usize::try_from(half).unwrap());

            send_json(&mut ws, upload("file-1", &path, 0)).await;
            send_data(&mut ws, "file-1", 0, first).await;
            assert_eq!(acks_until(&mut ws, "file-1", half).await, [MIB, half]);
            send_json(&mut ws, file_cancel("file-1")).await;
            // The target does not exist yet; only the partial beside it does.
            assert_eq!(names_in(dir.path()), [".resumed.bin.rmm-partial"]);

            send_json(&mut ws, file_request("file_upload_status", "file-2", &path)).await;
            assert_eq!(
                expect_json(&mut ws, "file_partial", "file-2").await,
                serde_json::json!({"channel_id":"file-2","path":path,"size":half})
            );
            // Resuming beyond what is held is refused, and says how much is held.
            send_json(&mut ws, upload("file-3", &path, half + 1)).await;
            let (code, message) = expect_error(&mut ws, "file-3").await;
            assert_eq!(code, "bad_offset");
            assert!(message.contains(&half.to_string()), "{message}");

            send_json(&mut ws, upload("file-4", &path, half)).await;
            send_data(&mut ws, "file-4", half, rest).await;
            let sha = sha256_hex(&data);
            send_json(&mut ws, upload_end("file-4", data.len() as u64, Some(&sha))).await;
            assert_eq!(
                acks_until(&mut ws, "file-4", data.len() as u64).await,
                [3 * MIB, 4 * MIB, data.len() as u64]
            );
            let done = expect_json(&mut ws, "file_done", "file-4").await;
            assert_eq!(
                (done["size"].as_u64(), done["sha256"].as_str()),
                (Some(data.len() as u64), Some(sha.as_str()))
            );
            assert!(std::fs::read(&target).unwrap() == data, "content differs");
            assert_eq!(names_in(dir.path()), ["resumed.bin"]);
            agent.abort();
        }

        #[tokio::test]
        async fn a_resume_of_a_partial_file_cut_shorter_than_held_truncates_it_first() {
            // The server may resume from less than the agent holds (it lost the last acks).
            let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("f");
            let path = path_of(&target);
            send_json(&mut ws, upload("file-1", &path, 0)).await;
            send_data(&mut ws, "file-1", 0, b"hello wrong tail").await;
            // Too little for an ack: wait until it is written (a cancel drops what is not).
            let partial = dir.path().join(".f.rmm-partial");
            for _ in 0..250 {
                if std::fs::metadata(&partial).is_ok_and(|m| m.len() == 16) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            send_json(&mut ws, file_cancel("file-1")).await;
            send_json(&mut ws, upload("file-2", &path, 5)).await;
            send_data(&mut ws, "file-2", 5, b", world").await;
            send_json(&mut ws, upload_end("file-2", 12, None)).await;
            acks_until(&mut ws, "file-2", 12).await;
            let done = expect_json(&mut ws, "file_done", "file-2").await;
            assert_eq!(done["sha256"], sha256_hex(b"hello, world"));
            assert_eq!(std::fs::read(&target).unwrap(), b"hello, world");
            agent.abort();
        }

        #[tokio::test]
        async fn upload_failures_are_typed_and_never_leave_a_file_at_the_target() {
            let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("t");
            let path = path_of(&target);

            send_json(&mut ws, upload("file-1", "relative/t", 0)).await;
            assert_eq!(expect_error(&mut ws, "file-1").await.0, "not_absolute");

            let missing = dir.path().join("no-such-dir").join("t");
            send_json(&mut ws, upload("file-2", &path_of(&missing), 0)).await;
            assert_eq!(expect_error(&mut ws, "file-2").await.0, "not_found");

            send_json(&mut ws, upload("file-3", &path_of(dir.path()), 0)).await;
            assert_eq!(expect_error(&mut ws, "file-3").await.0, "is_directory");

            let file_as_dir = dir.path().join("plain");
            std::fs::write(&file_as_dir, b"x").unwrap();
            send_json(
                &mut ws,
                upload("file-4", &path_of(&file_as_dir.join("t")), 0),
            )
            .await;
            assert_eq!(expect_error(&mut ws, "file-4").await.0, "not_a_directory");

            // Data out of order.
            send_json(&mut ws, upload("file-5", &path, 0)).await;
            send_data(&mut ws, "file-5", 0, b"abc").await;
            send_data(&mut ws, "file-5", 7, b"def").await;
            let (code, message) = expect_error(&mut ws, "file-5").await;
            assert_eq!(code, "bad_offset");
            assert!(message.contains("expected offset 3"), "{message}");

            // An end whose size is not what arrived.
            send_json(&mut ws, upload("file-6", &path, 0)).await;
            send_data(&mut ws, "file-6", 0, b"abc").await;
            send_json(&mut ws, upload_end("file-6", 4, None)).await;
            acks_until(&mut ws, "file-6", 3).await;
            assert_eq!(expect_error(&mut ws, "file-6").await.0, "bad_offset");

            // A checksum mismatch deletes the partial: its bytes are wrong.
            send_json(&mut ws, upload("file-7", &path, 0)).await;
            send_data(&mut ws, "file-7", 0, b"abc").await;
            send_json(&mut ws, upload_end("file-7", 3, Some(&sha256_hex(b"abd")))).await;
            acks_until(&mut ws, "file-7", 3).await;
            let (code, message) = expect_error(&mut ws, "file-7").await;
            assert_eq!(code, "checksum_mismatch");
            assert!(message.contains(&sha256_hex(b"abc")), "{message}");

            assert_eq!(names_in(dir.path()), ["plain"]);
            agent.abort();
        }

        #[tokio::test]
        async fn a_download_sends_its_hash_first_then_waits_for_acks_at_the_window_without_holding_up_commands()
         {
            use std::os::unix::fs::PermissionsExt as _;
            let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
            let dir = tempfile::tempdir().unwrap();
            let source = dir.path().join("big.bin");
            let data = random_bytes(6 * MIB as usize + 5);
            std::fs::write(&source, &data).unwrap();
            std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o640)).unwrap();
            let modified = std::fs::metadata(&source)
                .unwrap()
                .modified()
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let path = path_of(&source);
            let sha = sha256_hex(&data);

            send_json(&mut ws, download("file-1", &path, 0)).await;
            assert_eq!(
                expect_json(&mut ws, "file_info", "file-1").await,
                serde_json::json!({"channel_id":"file-1","size":data.len(),"sha256":sha,"mode":0o640,"modified":modified})
            );
            let mut received = Vec::new();
            while (received.len() as u64) < WINDOW {
                let Frame::Data(frame) = next_frame(&mut ws).await else {
                    panic!("expected data");
                };
                assert_eq!(frame.channel_id, "file-1");
                assert_eq!(frame.offset, received.len() as u64);
                assert!(frame.data.len() <= FRAME_DATA);
                received.extend_from_slice(&frame.data);
            }
            assert_eq!(received.len() as u64, WINDOW);
            // The window is full: nothing more comes until an ack...
            let more = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
            assert!(more.is_err(), "sent beyond the window: {more:?}");
            // ...and commands still run beside the stalled download.
            send_json(&mut ws, terminal("cmd-1", "echo beside")).await;
            assert_eq!(next_output(&mut ws).await.1["stdout"], "beside\n");
            assert_eq!(next_output(&mut ws).await.1["exit_code"], 0);

            // An ack of 1 MiB lets exactly 1 MiB more through.
            send_json(&mut ws, file_ack("file-1", MIB)).await;
            while (received.len() as u64) < WINDOW + MIB {
                let Frame::Data(frame) = next_frame(&mut ws).await else {
                    panic!("expected data");
                };
                assert_eq!(frame.offset, received.len() as u64);
                received.extend_from_slice(&frame.data);
            }
            let more = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
            assert!(more.is_err(), "sent beyond the window: {more:?}");
            send_json(&mut ws, file_ack("file-1", received.len() as u64)).await;
            loop {
                match next_frame(&mut ws).await {
                    Frame::Data(frame) => {
                        assert_eq!(frame.offset, received.len() as u64);
                        received.extend_from_slice(&frame.data);
                    }
                    Frame::Json(done) => {
                        assert_eq!(
                            done,
                            serde_json::json!({"type":"file_done","payload":{"channel_id":"file-1","path":path,"size":data.len(),"sha256":sha}})
                        );
                        break;
                    }
                }
            }
            assert!(received == data, "content differs");
            agent.abort();
        }

        #[tokio::test]
        async fn a_download_resumes_from_an_offset_and_refuses_what_is_no_file() {
            let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
            let dir = tempfile::tempdir().unwrap();
            let source = dir.path().join("f.bin");
            let data = random_bytes(MIB as usize + 300);
            std::fs::write(&source, &data).unwrap();
            let path = path_of(&source);
            let from = MIB - 10;

            send_json(&mut ws, download("file-1", &path, from)).await;
            let info = expect_json(&mut ws, "file_info", "file-1").await;
            // The whole file's size and hash, whatever the offset.
            assert_eq!(info["size"], data.len());
            assert_eq!(info["sha256"], sha256_hex(&data));
            let mut received = Vec::new();
            loop {
                match next_frame(&mut ws).await {
                    Frame::Data(frame) => {
                        assert_eq!(frame.offset, from + received.len() as u64);
                        received.extend_from_slice(&frame.data);
                    }
                    Frame::Json(done) => {
                        assert_eq!(done["type"], "file_done", "{done}");
                        break;
                    }
                }
            }
            assert!(received[..] == data[usize::try_from(from).unwrap()..]);

            // At the very end: no data, just the end.
            send_json(&mut ws, download("file-2", &path, data.len() as u64)).await;
            expect_json(&mut ws, "file_info", "file-2").await;
            expect_json(&mut ws, "file_done", "file-2").await;

            send_json(&mut ws, download("file-3", &path, data.len() as u64 + 1)).await;
            let (code, message) = expect_error(&mut ws, "file-3").await;
            assert_eq!(code, "bad_offset");
            assert!(message.contains("past the end"), "{message}");
            agent.abort();
        }

        #[tokio::test]
        async fn download_failures_are_typed() {
            let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
            let dir = tempfile::tempdir().unwrap();
            let source = dir.path().join("f");
            std::fs::write(&source, b"12345").unwrap();
            // A FIFO would block an open until a writer came: it is refused unopened.
            let fifo = dir.path().join("fifo");
            let made = std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap();
            assert!(made.success());
            let cases = [
                (path_of(&source), 6, "bad_offset"),
                (path_of(dir.path()), 0, "is_directory"),
                (path_of(&dir.path().join("missing")), 0, "not_found"),
                (path_of(&source.join("below")), 0, "not_a_directory"),
                ("f".to_owned(), 0, "not_absolute"),
                ("/dev/null".to_owned(), 0, "io"),
                (path_of(&fifo), 0, "io"),
            ];
            for (n, (path, offset, code)) in cases.into_iter().enumerate() {
                let channel = format!("file-{n}");
                send_json(&mut ws, download(&channel, &path, offset)).await;
                assert_eq!(expect_error(&mut ws, &channel).await.0, code, "{path}");
            }
            agent.abort();
        }

        #[tokio::test]
        async fn a_cancelled_download_stops_sending() {
            let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
            let dir = tempfile::tempdir().unwrap();
            let source = dir.path().join("big.bin");
            std::fs::write(&source, random_bytes(6 * MIB as usize)).unwrap();
            send_json(&mut ws, download("file-1", &path_of(&source), 0)).await;
            expect_json(&mut ws, "file_info", "file-1").await;
            send_json(&mut ws, file_cancel("file-1")).await;
            send_json(&mut ws, file_ack("file-1", 6 * MIB)).await;
            // Frames queued before the cancel may still arrive, but never the whole file, nor an
            // end; then silence.
            let mut received = 0u64;
            while let Ok(Some(Ok(frame))) =
                tokio::time::timeout(Duration::from_millis(500), ws.next()).await
            {
                match frame {
                    Message::Binary(bytes) => {
                        received += DataFrame::decode(bytes).unwrap().data.len() as u64
                    }
                    Message::Text(text) => panic!("unexpected {text}"),
                    _ => {}
                }
            }
            assert!(received <= WINDOW, "{received}");
            agent.abort();
        }

        #[tokio::test]
        async fn a_listing_holds_names_types_sizes_modes_and_times_sorted_by_name() {
            let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("b.log"), b"12345").unwrap();
            std::fs::create_dir(dir.path().join("a-dir")).unwrap();
            std::os::unix::fs::symlink("/nowhere", dir.path().join("c-link")).unwrap();
            send_json(
                &mut ws,
                file_request("file_list", "file-1", &path_of(dir.path())),
            )
            .await;
            let listing = expect_json(&mut ws, "file_listing", "file-1").await;
            assert_eq!(listing["path"], path_of(dir.path()));
            let entries = listing["entries"].as_array().unwrap();
            let summary: Vec<(&str, &str)> = entries
                .iter()
                .map(|e| (e["name"].as_str().unwrap(), e["type"].as_str().unwrap()))
                .collect();
            assert_eq!(
                summary,
                [("a-dir", "dir"), ("b.log", "file"), ("c-link", "symlink")]
            );
            assert_eq!(entries[1]["size"], 5);
            assert_eq!(entries[2]["size"], "/nowhere".len());
            assert!(
                entries
                    .iter()
                    .all(|e| e["mode"].is_u64() && e["modified"].is_i64())
            );

            send_json(
                &mut ws,
                file_request("file_list", "file-2", &path_of(&dir.path().join("b.log"))),
            )
            .await;
            assert_eq!(expect_error(&mut ws, "file-2").await.0, "not_a_directory");
            send_json(&mut ws, file_request("file_list", "file-3", "tmp")).await;
            assert_eq!(expect_error(&mut ws, "file-3").await.0, "not_absolute");
            agent.abort();
        }

        #[tokio::test]
        async fn a_denied_path_is_permission_denied_with_the_os_reason() {
            // Root bypasses file modes, and these tests run as root in CI. Find a place this
            // process cannot create a file in: a read-only directory for an ordinary user, else
            // sysfs (EACCES even for root on most kernels). Skip, saying why, if there is none.
            use std::os::unix::fs::PermissionsExt as _;
            let dir = tempfile::tempdir().unwrap();
            let locked = dir.path().join("locked");
            std::fs::create_dir(&locked).unwrap();
            std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
            let denied = |dir: &std::path::Path| {
                let probe = dir.join(".rmm-permission-probe");
                let result = std::fs::File::create(&probe);
                let _ = std::fs::remove_file(&probe);
                matches!(result, Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied)
            };
            let Some(denied_dir) = [locked.as_path(), std::path::Path::new("/sys/kernel")]
                .into_iter()
                .find(|dir| denied(dir))
            else {
                eprintln!("skipped: no directory denies file creation to this process");
                return;
            };
            let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
            send_json(
                &mut ws,
                upload("file-1", &path_of(&denied_dir.join("x")), 0),
            )
            .await;
            let (code, message) = expect_error(&mut ws, "file-1").await;
            assert_eq!(code, "permission_denied");
            assert!(
                message.contains("Permission denied (os error 13)"),
                "{message}"
            );
            agent.abort();
        }

        #[tokio::test]
        async fn closing_the_tunnel_stops_an_upload_and_keeps_its_partial_for_the_next_one() {
            let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("t");
            let path = path_of(&target);
            send_json(&mut ws, upload("file-1", &path, 0)).await;
            send_data(&mut ws, "file-1", 0, &random_bytes(MIB as usize)).await;
            acks_until(&mut ws, "file-1", MIB).await;
            send_json(
                &mut ws,
                serde_json::json!({"type":"tunnel_close","payload":{"session_id": SESSION}}),
            )
            .await;
            // Outside a tunnel, file requests are refused.
            send_json(&mut ws, file_request("file_upload_status", "file-2", &path)).await;
            assert_eq!(
                expect_error(&mut ws, "file-2").await,
                ("io".to_owned(), NO_TUNNEL.to_owned())
            );
            ws.send(Message::text(format!(
                r#"{{"type":"tunnel_open","payload":{{"session_id":"{SESSION}","tech_id":"7c9e6679-7425-40de-944b-e07fc1f90ae7"}}}}"#
            )))
            .await
            .unwrap();
            assert_eq!(next_json(&mut ws).await["type"], "tunnel_ready");
            send_json(&mut ws, file_request("file_upload_status", "file-3", &path)).await;
            assert_eq!(
                expect_json(&mut ws, "file_partial", "file-3").await["size"],
                MIB
            );
            assert!(!target.exists());
            agent.abort();
        }
    }
}
