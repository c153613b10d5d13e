//! The connection loop: dial the server, drive one connection (heartbeats, server frames
//! through [`TunnelState`], the work's frames out, read deadline, shutdown), redial with
//! exponential backoff and full jitter when it is lost.
//!
//! It knows the socket and the loop's timings; what a frame means is the tunnel state's
//! business, and running commands and file operations is `exec`'s and `files`'.

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use rmm_protocol::{
    AgentMessage, CAP_COMMAND_BINARY_OUTPUT, CAP_COMMAND_CANCEL, CAP_COMMAND_TIMEOUT,
    CAP_FILE_TRANSFER, CAPABILITIES_HEADER, DataFrame, DecodeError, ServerMessage, encode,
};
#[cfg(unix)]
use rmm_protocol::{CAP_COMMAND_STDIN, CAP_PTY};

use crate::backoff::{self, Backoff, rejected_delay};
use crate::config::{AgentConfig, AgentTimings};
use crate::exec::{CommandSpec, Commands, KillTimings, StopReason};
use crate::files::{self, PathLocks, Transfers};
use crate::proxy;
use crate::terminals::Terminals;
use crate::tls::{self, TlsError};
use crate::tunnel::{Action, TunnelState};
use crate::{Event, host};

/// Server frames are small JSON or upload data frames (256 KiB of data from our server);
/// anything near this is hostile or a bug.
const MAX_INBOUND_MESSAGE: usize = 1024 * 1024;

/// The extensions this agent speaks, sent in [`CAPABILITIES_HEADER`] on the upgrade: the server
/// sends `timeout_secs`, `command_cancel`, file transfers, terminals and command stdin only to
/// agents that list them. Terminals and stdin are built for Unix only (no ConPTY yet).
#[cfg(unix)]
pub(crate) const CAPABILITIES: &[&str] = &[
    CAP_COMMAND_TIMEOUT,
    CAP_COMMAND_CANCEL,
    CAP_FILE_TRANSFER,
    CAP_PTY,
    CAP_COMMAND_STDIN,
    CAP_COMMAND_BINARY_OUTPUT,
];
#[cfg(not(unix))]
pub(crate) const CAPABILITIES: &[&str] = &[
    CAP_COMMAND_TIMEOUT,
    CAP_COMMAND_CANCEL,
    CAP_FILE_TRANSFER,
    CAP_COMMAND_BINARY_OUTPUT,
];

/// Frames the tasks of one connection (commands, file operations) may queue before they wait;
/// the wait is their backpressure. A command frame holds one [`CHUNK`] of output (about
/// 45 KiB queued for text, under 150 KiB for the worst binary: lossy text plus base64; a
/// binary output frame at most [`OUTPUT_CHUNK`], 64 KiB), a
/// download frame at most [`FILE_FRAME_DATA`] (256 KiB), so queued frames cost at most ~8 MiB
/// whatever runs, plus a chunk buffer or two per running command or download. The queue is
/// first come, first served, so a download cannot starve a command's output or the reverse.
///
/// [`CHUNK`]: crate::CHUNK
/// [`OUTPUT_CHUNK`]: rmm_protocol::OUTPUT_CHUNK
/// [`FILE_FRAME_DATA`]: rmm_protocol::limits::FILE_FRAME_DATA
const OUTBOUND_QUEUE: usize = 32;

/// After SIGKILL, how long a command's pipes may stay open (held by a process that left its
/// group) before its end is reported anyway.
pub(crate) const KILL_DRAIN: Duration = Duration::from_secs(2);

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
    let (locks, _sweeper) = files::partials(&config);
    tracing::info!(server = %config.server, version = env!("CARGO_PKG_VERSION"), "agent starting");
    config.proxy.log(&config.server);

    loop {
        let dialled = tokio::select! {
            dialled = dial(&config, connector.clone()) => dialled,
            () = &mut shutdown => return Ok(()),
        };
        let delay = match dialled {
            Ok(socket) => {
                match connected(socket, &config, &locks, shutdown.as_mut(), &mut backoff).await? {
                    Some(delay) => delay,
                    None => return Ok(()),
                }
            }
            Err(failure) => retry_delay(failure, &config, &mut backoff)?,
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = &mut shutdown => return Ok(()),
        }
    }
}

/// One established connection, driven to its end: `None` when it ended by shutdown, else the
/// delay before the next dial (with `once`, the loss is the error).
async fn connected<S>(
    socket: Socket,
    config: &AgentConfig,
    locks: &PathLocks,
    shutdown: Pin<&mut S>,
    backoff: &mut Backoff,
) -> Result<Option<Duration>, AgentError>
where
    S: Future<Output = ()> + ?Sized,
{
    let up_since = Instant::now();
    tracing::info!(server = %config.server, "connected");
    let end = drive(socket, config, locks, shutdown).await;
    let up = up_since.elapsed();
    match end {
        End::Shutdown => {
            tracing::info!("shut down: connection closed");
            Ok(None)
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
            Ok(Some(delay))
        }
    }
}

/// A dial that failed: the delay before the next one (with `once`, the failure is the error).
fn retry_delay(
    failure: DialError,
    config: &AgentConfig,
    backoff: &mut Backoff,
) -> Result<Duration, AgentError> {
    match failure {
        DialError::Rejected => {
            if config.once {
                return Err(AgentError::KeyRejected);
            }
            let delay = rejected_delay(config.timings.rejected_retry, backoff::random_unit());
            tracing::error!(server = %config.server, retry_in_secs = delay.as_secs(), "server rejected the agent key (HTTP 401): check --key / RMM_AGENT_KEY; retrying slowly");
            Ok(delay)
        }
        DialError::Busy(retry_after) => {
            if config.once {
                return Err(AgentError::Unreachable {
                    server: config.server.to_string(),
                    reason: "the server is at capacity (HTTP 503)".into(),
                });
            }
            let delay = backoff.after_busy(retry_after, backoff::random_unit());
            tracing::warn!(server = %config.server, retry_after_secs = retry_after.map(|d| d.as_secs()), retry_in_secs = format_args!("{:.1}", delay.as_secs_f64()), "server busy (HTTP 503); retrying after its hint");
            Ok(delay)
        }
        DialError::Failed(reason) => {
            if config.once {
                return Err(AgentError::Unreachable {
                    server: config.server.to_string(),
                    reason,
                });
            }
            let delay = backoff.next_delay(backoff::random_unit());
            tracing::warn!(server = %config.server, reason = %reason, retry_in_secs = format_args!("{:.1}", delay.as_secs_f64()), "cannot connect");
            Ok(delay)
        }
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Sink = SplitSink<Socket, Message>;

enum DialError {
    /// HTTP 401 on the upgrade: retrying soon cannot help.
    Rejected,
    /// HTTP 503: the server sheds handshakes; its `Retry-After` hint, if any.
    Busy(Option<Duration>),
    Failed(String),
}

/// The WebSocket's read buffer (see [`dial`]).
const READ_BUFFER: usize = 32 * 1024;

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
    // The read buffer is zero-filled to its full size and kept for the connection's life;
    // tungstenite's 128 KiB default was a quarter of the idle agent's own memory. Larger
    // frames (uploads) still grow it as they arrive.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(MAX_INBOUND_MESSAGE))
        .max_frame_size(Some(MAX_INBOUND_MESSAGE));
    let to = (
        config.server.host(),
        config.server.port(),
        config.timings.connect_timeout,
    );
    let attempt = proxy::websocket(&config.proxy, to, request, (ws_config, connector));
    match attempt.await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(WsError::Http(response))) if response.status() == StatusCode::UNAUTHORIZED => {
            Err(DialError::Rejected)
        }
        Ok(Err(WsError::Http(response)))
            if response.status() == StatusCode::SERVICE_UNAVAILABLE =>
        {
            let hint = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(backoff::parse_retry_after);
            Err(DialError::Busy(hint))
        }
        Ok(Err(WsError::Http(response))) => Err(DialError::Failed(format!(
            "the server answered the upgrade with HTTP {}",
            response.status()
        ))),
        Ok(Err(e)) => Err(DialError::Failed(e.to_string())),
        // Unreachable, silent or refusing proxy, or no answer in time.
        Err(failure) => Err(DialError::Failed(failure)),
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
    mut shutdown: Pin<&mut S>,
) -> End
where
    S: Future<Output = ()> + ?Sized,
{
    let timings = &config.timings;
    let (mut sink, mut stream) = socket.split();
    let mut state = TunnelState::default();
    let (events_tx, mut events) = mpsc::channel(OUTBOUND_QUEUE);
    let mut work = Work::new(events_tx, config, locks);
    // The first tick is immediate: the server learns our facts as soon as we connect.
    let mut heartbeat = tokio::time::interval(timings.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut deadline = Instant::now() + timings.read_idle;

    let end = loop {
        let outgoing: Vec<Message> = tokio::select! {
            frame = stream.next() => {
                deadline = Instant::now() + timings.read_idle;
                match inbound(frame, &mut state, &mut work) {
                    ControlFlow::Continue(outgoing) => outgoing,
                    ControlFlow::Break(end) => break end,
                }
            }
            // `work` holds senders, so this never ends; the pattern only keeps it total.
            Some(event) = events.recv() => outbound(event, &mut state, &mut work),
            _ = heartbeat.tick() => vec![text(&AgentMessage::Heartbeat(host::facts()))],
            () = tokio::time::sleep_until(deadline) => {
                break End::Lost(format!(
                    "no traffic from the server for {}s (dead peer)",
                    timings.read_idle.as_secs()
                ));
            }
            () = &mut shutdown => {
                shut_down(&mut sink, &mut events, &mut work, timings).await;
                break End::Shutdown;
            }
        };
        if let ControlFlow::Break(end) = send_all(&mut sink, outgoing, timings).await {
            break end;
        }
    };
    finish(&mut state, work, end)
}

/// A frame (or the end) from the server: the frames to answer with, or how the connection
/// ended.
fn inbound(
    frame: Option<Result<Message, WsError>>,
    state: &mut TunnelState,
    work: &mut Work,
) -> ControlFlow<End, Vec<Message>> {
    let outgoing = match frame {
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
            return ControlFlow::Break(End::Lost(match frame {
                Some(f) => format!("server closed the connection ({}: {})", f.code, f.reason),
                None => "server closed the connection".to_owned(),
            }));
        }
        None => return ControlFlow::Break(End::Lost("connection closed".to_owned())),
        Some(Err(e)) => return ControlFlow::Break(End::Lost(format!("socket error: {e}"))),
    };
    ControlFlow::Continue(outgoing)
}

/// What a command or file task handed to the connection: the frames to send.
fn outbound(event: Event, state: &mut TunnelState, work: &mut Work) -> Vec<Message> {
    match event {
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
        Event::TerminalEnded(id) => {
            if let Some(channel) = work.terminals.finished(id) {
                state.release(&channel);
            }
            Vec::new()
        }
    }
}

/// Sends `outgoing` in order, each write bounded: a server that stops reading is lost.
async fn send_all(
    sink: &mut Sink,
    outgoing: Vec<Message>,
    timings: &AgentTimings,
) -> ControlFlow<End> {
    for message in outgoing {
        let sent = tokio::time::timeout(timings.write_timeout, sink.send(message)).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return ControlFlow::Break(End::Lost(format!("write failed: {e}"))),
            Err(_) => {
                return ControlFlow::Break(End::Lost(
                    "write timed out (server not reading)".to_owned(),
                ));
            }
        }
    }
    ControlFlow::Continue(())
}

fn text(message: &AgentMessage) -> Message {
    Message::text(encode(message))
}

/// The work running on one connection's channels.
#[derive(Debug)]
struct Work {
    commands: Commands,
    transfers: Transfers,
    terminals: Terminals,
    /// The limit on a command whose frame carries none.
    default_timeout: Option<Duration>,
}

impl Work {
    fn new(events: mpsc::Sender<Event>, config: &AgentConfig, locks: &PathLocks) -> Self {
        let kill = KillTimings {
            grace: config.timings.kill_grace,
            drain: KILL_DRAIN,
        };
        Self {
            commands: Commands::new(events.clone(), kill),
            terminals: Terminals::new(events.clone(), kill),
            transfers: Transfers::new(events, locks.clone()),
            default_timeout: config.command_timeout,
        }
    }

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
                    stdin,
                    binary_output,
                } => self.commands.start(CommandSpec {
                    channel,
                    command,
                    timeout: timeout.or(self.default_timeout),
                    stdin,
                    binary_output,
                }),
                Action::Cancel(channel) => self.commands.cancel(&channel),
                Action::Stdin {
                    channel,
                    offset,
                    data,
                } => self.commands.stdin_data(&channel, offset, data),
                Action::StdinEnd(channel) => self.commands.stdin_end(&channel),
                Action::OpenPty(request) => self.terminals.start(request),
                Action::PtyInput { channel, input } => self.terminals.input(&channel, input),
                Action::StopAll => self.stop_all(),
                Action::StartFile { channel, op } => self.transfers.start(channel, op),
                Action::FileInput { channel, input } => self.transfers.input(&channel, input),
                Action::CancelFile(channel) => self.transfers.cancel(&channel),
            }
        }
        outgoing
    }

    /// Kills every command and terminal and stops every transfer.
    fn stop_all(&mut self) {
        self.commands.stop_all(StopReason::Cancelled);
        self.terminals.stop_all();
        self.transfers.stop_all();
    }
}

/// The agent is shutting down with the socket up: stop the work, let the killed commands
/// report their end, then close with a close frame.
async fn shut_down(
    sink: &mut Sink,
    events: &mut mpsc::Receiver<Event>,
    work: &mut Work,
    timings: &AgentTimings,
) {
    work.stop_all();
    wind_down(sink, events, work, timings).await;
    let close = Message::Close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "agent shutting down".into(),
    }));
    // Best effort, bounded: a dead server must not keep the service from stopping.
    let _ = tokio::time::timeout(timings.write_timeout, sink.send(close)).await;
}

/// Shutting down with the socket still up: the killed commands' final frames and the closed
/// terminals' `pty_exit` go out before the close frame, within the time a kill takes (HUP,
/// grace, TERM, grace, KILL, drain) and a little more. Stopped transfers end without a word;
/// data frames still queued are not worth the wait.
async fn wind_down<W>(
    sink: &mut W,
    events: &mut mpsc::Receiver<Event>,
    work: &mut Work,
    timings: &AgentTimings,
) where
    W: futures_util::Sink<Message> + Unpin,
{
    let until = Instant::now() + 2 * timings.kill_grace + KILL_DRAIN + Duration::from_secs(1);
    while !work.commands.is_empty() || !work.terminals.is_empty() {
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
                work.commands.finished(run);
            }
            Some(Event::TerminalEnded(id)) => {
                work.terminals.finished(id);
            }
            Some(Event::Data(_) | Event::TransferEnded(_)) => {}
            None => break,
        }
    }
    if !work.commands.is_empty() || !work.terminals.is_empty() {
        tracing::warn!(
            commands = work.commands.len(),
            terminals = work.terminals.len(),
            "shutting down before every killed command and terminal reported its end"
        );
    }
}

/// The connection is over: the tunnel goes, and so does everything that ran in it. Dropping
/// `work` (after telling each task why) leaves each command to finish its kill sequence on its
/// own (TERM, grace, KILL) and each transfer to stop (an upload keeps its partial file); their
/// frames have nowhere to go any more.
fn finish(state: &mut TunnelState, mut work: Work, end: End) -> End {
    let closed = state.reset();
    if !work.commands.is_empty() || !work.transfers.is_empty() || !work.terminals.is_empty() {
        tracing::info!(
            commands = work.commands.len(),
            transfers = work.transfers.len(),
            terminals = work.terminals.len(),
            channels = closed.len(),
            "stopping the work of the lost connection"
        );
    }
    work.stop_all();
    end
}
