//! The live agent connections: a registry of who is connected (with a generation per
//! connection and the agent's mode), the `AgentGateway` port over it, and the task that runs
//! one agent's WebSocket.
//!
//! Nothing here blocks on a peer: messages to an agent go through a bounded queue fed with
//! `try_send`, the registry lock is never held across `.await`, and a socket that stops
//! answering is dropped by the ping/read-idle deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use poem::web::websocket::{CloseCode, Message, WebSocketStream};
use rmm_application::{AgentGateway, App, GatewayError, HostFacts, OpenReply, OutputChunk, Ports};
use rmm_domain::{AgentId, AgentMode, ChannelId, ChannelKind, Channels, SessionId, UserId};
use tokio::sync::{mpsc, oneshot, watch};

use rmm_protocol::{
    AgentMessage, CAP_COMMAND_CANCEL, CAP_COMMAND_TIMEOUT, CAP_FILE_TRANSFER, DataFrame,
    DecodeError, ServerMessage, TunnelDataPayload, encode,
};

/// Frames queued for one agent. Small on purpose: an agent that does not read is evicted,
/// it never makes the server hold more.
pub const OUTBOUND_QUEUE: usize = 64;

pub use rmm_protocol::limits::MAX_CHANNELS;

/// Which protocol extensions an agent said it speaks (the `x-rmm-capabilities` header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub command_timeout: bool,
    pub command_cancel: bool,
    pub file_transfer: bool,
}

impl Capabilities {
    /// Parses the comma-separated header value; unknown names are ignored.
    #[must_use]
    pub fn parse(header: Option<&str>) -> Self {
        let names: Vec<&str> = header.unwrap_or("").split(',').map(str::trim).collect();
        Self {
            command_timeout: names.contains(&CAP_COMMAND_TIMEOUT),
            command_cancel: names.contains(&CAP_COMMAND_CANCEL),
            file_transfer: names.contains(&CAP_FILE_TRANSFER),
        }
    }
}

/// Timings of an agent connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionTimings {
    /// How often the server pings.
    pub ping_interval: Duration,
    /// A connection with no inbound frame (pongs included) for this long is dead.
    pub read_idle: Duration,
    /// A single write that takes longer than this means the peer stopped reading.
    pub write_timeout: Duration,
}

impl Default for ConnectionTimings {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(20),
            read_idle: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
struct Connection {
    generation: u64,
    outbound: mpsc::Sender<Outbound>,
    capabilities: Capabilities,
    /// The channels open in the tunnel: only frames on these are accepted from the agent.
    channels: Channels,
    /// Where the events of each file channel go.
    files: HashMap<ChannelId, mpsc::Sender<FileEvent>>,
    mode: AgentMode,
    /// The open in flight (at most one: the store allows one open session per agent).
    pending: Option<(SessionId, oneshot::Sender<OpenReply>)>,
}

impl Connection {
    /// Queues a message without waiting; a full queue drops it (the caller does not care:
    /// every use is a best-effort close).
    fn push(&self, message: ServerMessage) -> bool {
        self.outbound.try_send(Outbound::Message(message)).is_ok()
    }
}

/// What goes to an agent: protocol messages, and binary file data frames.
#[derive(Debug)]
pub enum Outbound {
    Message(ServerMessage),
    Data(Vec<u8>),
}

impl Outbound {
    fn into_frame(self) -> Message {
        match self {
            Self::Message(message) => Message::Text(encode(&message)),
            Self::Data(bytes) => Message::Binary(bytes),
        }
    }
}

/// An event of a file transfer, routed from the agent to the transfer's task.
#[derive(Debug)]
pub enum FileEvent {
    Info {
        size: u64,
        sha256: String,
        mode: Option<u32>,
        modified: Option<i64>,
    },
    Data {
        offset: u64,
        data: bytes::Bytes,
    },
    Done {
        path: String,
        size: u64,
        sha256: String,
    },
    Error {
        code: rmm_protocol::FileErrorCode,
        message: String,
    },
    Listing {
        path: String,
        entries: Vec<rmm_protocol::FileEntry>,
    },
    Partial {
        size: u64,
    },
    Ack {
        offset: u64,
    },
}

/// Events a transfer may have queued before its task reads them. The agent keeps at most a
/// 4 MiB window of 256 KiB data frames in flight, well under this.
const FILE_EVENTS_QUEUE: usize = 64;

/// A transfer's link to its agent: the agent's outbound queue (awaited, so a transfer waits
/// for room instead of dropping data) and the events of its channel.
#[derive(Debug)]
pub struct FileLink {
    pub channel: ChannelId,
    pub outbound: mpsc::Sender<Outbound>,
    pub events: mpsc::Receiver<FileEvent>,
}

/// The registry of connected agents; implements [`AgentGateway`].
#[derive(Debug, Default)]
pub struct WsAgentGateway {
    connections: Mutex<HashMap<AgentId, Connection>>,
    generations: AtomicU64,
}

impl WsAgentGateway {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, Connection>> {
        // Every critical section below leaves the map consistent at each statement, so a
        // poisoned lock (a panic elsewhere) is safe to keep using.
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `outbound` the agent's current connection; its generation, and the mode of the
    /// connection it replaced. That previous connection is dropped: its queue closes, so its
    /// task ends, and an open waiting on it resolves as disconnected.
    pub fn register(
        &self,
        agent: AgentId,
        outbound: mpsc::Sender<Outbound>,
        capabilities: Capabilities,
    ) -> (u64, Option<AgentMode>) {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let old = self.lock().insert(
            agent,
            Connection {
                generation,
                outbound,
                capabilities,
                channels: Channels::with_limit(MAX_CHANNELS),
                files: HashMap::new(),
                mode: AgentMode::Heartbeat,
                pending: None,
            },
        );
        if let Some(old) = &old {
            tracing::info!(agent_id = %agent, old_generation = old.generation, generation, "agent reconnected; replacing its previous connection");
        }
        (generation, old.map(|c| c.mode))
    }

    /// Removes the connection if it is still the current one, returning its last mode.
    /// `None` when a newer connection replaced it: that one is left alone.
    pub fn unregister(&self, agent: AgentId, generation: u64) -> Option<AgentMode> {
        let mut connections = self.lock();
        match connections.get(&agent) {
            Some(c) if c.generation == generation => connections.remove(&agent).map(|c| c.mode),
            Some(_) | None => None,
        }
    }

    /// Number of connected agents.
    pub fn connected(&self) -> usize {
        self.lock().len()
    }

    /// Tells every connected agent to close its tunnel and drops every connection (shutdown).
    pub fn disconnect_all(&self) {
        let drained: Vec<_> = self.lock().drain().collect();
        for (_, connection) in drained {
            if let AgentMode::Tunnel { session } = connection.mode {
                let _ = connection.push(ServerMessage::TunnelClose {
                    session_id: session.to_string(),
                });
            }
        }
    }

    /// `tunnel_ready` from `agent` on connection `generation`. Only that connection's own
    /// pending open is answered: a ready for anyone else's session changes nothing.
    fn on_ready(&self, agent: AgentId, generation: u64, session: SessionId) {
        let mut connections = self.lock();
        let Some(connection) = connections
            .get_mut(&agent)
            .filter(|c| c.generation == generation)
        else {
            return;
        };
        match connection.pending.take() {
            Some((pending, reply)) if pending == session => match connection.mode.open(session) {
                Ok(mode) => {
                    connection.mode = mode;
                    // The opener may have given up (timeout) a moment ago; then abandon_open
                    // has already told the agent to close, and this send finds no receiver.
                    if reply.send(OpenReply::Ready).is_err() {
                        connection.mode = AgentMode::Heartbeat;
                        let _ = connection.push(ServerMessage::TunnelClose {
                            session_id: session.to_string(),
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(agent_id = %agent, session_id = %session, error = %e, "tunnel_ready while a tunnel is open; refusing");
                    let _ = reply.send(OpenReply::Refused(e.to_string()));
                }
            },
            other => {
                connection.pending = other;
                tracing::warn!(agent_id = %agent, session_id = %session, "tunnel_ready for a session this agent was not asked to open; ignored");
            }
        }
    }

    /// `tunnel_error` whose channel names a pending session: the agent refused the open.
    /// Returns whether it was such a refusal.
    fn on_refusal(&self, agent: AgentId, generation: u64, session: SessionId, why: &str) -> bool {
        let mut connections = self.lock();
        let Some(connection) = connections
            .get_mut(&agent)
            .filter(|c| c.generation == generation)
        else {
            return false;
        };
        match connection.pending.take() {
            Some((pending, reply)) if pending == session => {
                let _ = reply.send(OpenReply::Refused(why.to_owned()));
                true
            }
            other => {
                connection.pending = other;
                false
            }
        }
    }

    /// Whether `channel` is an open channel of this connection's tunnel; on a last frame
    /// (`last`) the channel is closed. The tunnel's session when it is.
    fn accept_on_channel(
        &self,
        agent: AgentId,
        generation: u64,
        channel: &ChannelId,
        last: bool,
    ) -> Option<SessionId> {
        let mut connections = self.lock();
        let connection = connections
            .get_mut(&agent)
            .filter(|c| c.generation == generation)?;
        let session = connection.mode.session()?;
        connection
            .channels
            .check(channel, ChannelKind::Terminal)
            .ok()?;
        if last {
            let _ = connection.channels.close(channel);
        }
        Some(session)
    }

    /// Opens a file channel in `session`'s tunnel on `agent` for a transfer.
    ///
    /// # Errors
    /// [`GatewayError::NotConnected`] when the agent is gone or its tunnel is not `session`;
    /// [`GatewayError::Busy`] when the channel limit is reached or the agent does not speak
    /// the file-transfer extension.
    pub fn open_file_channel(
        &self,
        agent: AgentId,
        session: SessionId,
    ) -> Result<FileLink, GatewayError> {
        let mut connections = self.lock();
        let connection = connections
            .get_mut(&agent)
            .ok_or(GatewayError::NotConnected)?;
        if connection.mode.session() != Some(session) {
            return Err(GatewayError::NotConnected);
        }
        if !connection.capabilities.file_transfer {
            return Err(GatewayError::Unsupported);
        }
        let channel = ChannelId::for_file(uuid::Uuid::new_v4());
        connection
            .channels
            .open(channel.clone(), ChannelKind::File)
            .map_err(|_| GatewayError::Busy)?;
        let (tx, events) = mpsc::channel(FILE_EVENTS_QUEUE);
        connection.files.insert(channel.clone(), tx);
        Ok(FileLink {
            channel,
            outbound: connection.outbound.clone(),
            events,
        })
    }

    /// Ends a file channel.
    pub fn close_file_channel(&self, agent: AgentId, channel: &ChannelId) {
        if let Some(connection) = self.lock().get_mut(&agent) {
            connection.files.remove(channel);
            let _ = connection.channels.close(channel);
        }
    }

    /// Routes a file event from connection `generation` to its transfer. Events on channels
    /// the connection did not open for a transfer are dropped.
    fn route_file_event(&self, agent: AgentId, generation: u64, channel: &str, event: FileEvent) {
        let connections = self.lock();
        let Some(connection) = connections
            .get(&agent)
            .filter(|c| c.generation == generation)
        else {
            return;
        };
        let Some(tx) = ChannelId::parse(channel)
            .ok()
            .and_then(|c| connection.files.get(&c))
        else {
            tracing::debug!(agent_id = %agent, channel_id = %channel.chars().take(80).collect::<String>(), "file event on no transfer; ignored");
            return;
        };
        if tx.try_send(event).is_err() {
            // Only an agent ignoring the flow-control window fills this queue.
            tracing::warn!(agent_id = %agent, channel_id = %channel, "file event dropped: the agent overran its window or the transfer ended");
        }
    }

    fn send(connection: &Connection, message: ServerMessage) -> Result<(), GatewayError> {
        connection
            .outbound
            .try_send(Outbound::Message(message))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => GatewayError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => GatewayError::NotConnected,
            })
    }
}

impl AgentGateway for WsAgentGateway {
    fn mode(&self, agent: AgentId) -> Option<AgentMode> {
        self.lock().get(&agent).map(|c| c.mode)
    }

    async fn open_tunnel(
        &self,
        agent: AgentId,
        session: SessionId,
        tech: UserId,
    ) -> Result<OpenReply, GatewayError> {
        let reply = {
            let mut connections = self.lock();
            let connection = connections
                .get_mut(&agent)
                .ok_or(GatewayError::NotConnected)?;
            if connection.pending.is_some() || connection.mode.open(session).is_err() {
                return Err(GatewayError::Busy);
            }
            let (tx, rx) = oneshot::channel();
            Self::send(
                connection,
                ServerMessage::TunnelOpen {
                    session_id: session.to_string(),
                    tech_id: tech.as_uuid(),
                },
            )?;
            connection.pending = Some((session, tx));
            rx
        };
        // The sender is dropped when the connection goes away (or is replaced).
        reply.await.map_err(|_| GatewayError::Disconnected)
    }

    fn abandon_open(&self, agent: AgentId, session: SessionId) {
        let mut connections = self.lock();
        let Some(connection) = connections.get_mut(&agent) else {
            return;
        };
        if connection
            .pending
            .as_ref()
            .is_some_and(|(s, _)| *s == session)
        {
            connection.pending = None;
        }
        if let Ok(mode) = connection.mode.close(session) {
            connection.mode = mode;
        }
        let _ = Self::send(
            connection,
            ServerMessage::TunnelClose {
                session_id: session.to_string(),
            },
        );
    }

    fn close_tunnel(&self, agent: AgentId, session: SessionId) {
        let mut connections = self.lock();
        let Some(connection) = connections.get_mut(&agent) else {
            return;
        };
        match connection.mode.close(session) {
            Ok(mode) => {
                connection.mode = mode;
                connection.channels.close_all();
                // Dropping the senders ends every transfer of the tunnel.
                connection.files.clear();
                if let Err(e) = Self::send(
                    connection,
                    ServerMessage::TunnelClose {
                        session_id: session.to_string(),
                    },
                ) {
                    tracing::warn!(agent_id = %agent, session_id = %session, error = %e, "could not tell the agent to close its tunnel");
                }
            }
            Err(e) => {
                tracing::debug!(agent_id = %agent, session_id = %session, error = %e, "close of a tunnel the connection does not hold")
            }
        }
    }

    fn send_command(
        &self,
        agent: AgentId,
        session: SessionId,
        channel: &ChannelId,
        command: &str,
        timeout_secs: u64,
    ) -> Result<(), GatewayError> {
        let mut connections = self.lock();
        let connection = connections
            .get_mut(&agent)
            .ok_or(GatewayError::NotConnected)?;
        if connection.mode.session() != Some(session) {
            return Err(GatewayError::NotConnected);
        }
        connection
            .channels
            .open(channel.clone(), ChannelKind::Terminal)
            .map_err(|_| GatewayError::Busy)?;
        // The exact reference frame, plus the timeout only for agents that enforce it.
        let timeout_secs = connection
            .capabilities
            .command_timeout
            .then_some(timeout_secs);
        let message = ServerMessage::TunnelData {
            channel_id: channel.to_string(),
            data: TunnelDataPayload::Terminal {
                command: command.to_owned(),
                timeout_secs,
            },
        };
        Self::send(connection, message).inspect_err(|_| {
            let _ = connection.channels.close(channel);
        })
    }

    fn cancel_command(&self, agent: AgentId, channel: &ChannelId) -> bool {
        let connections = self.lock();
        let Some(connection) = connections.get(&agent) else {
            return false;
        };
        connection.capabilities.command_cancel
            && Self::send(
                connection,
                ServerMessage::CommandCancel {
                    channel_id: channel.to_string(),
                },
            )
            .is_ok()
    }

    fn release_channel(&self, agent: AgentId, channel: &ChannelId) {
        if let Some(connection) = self.lock().get_mut(&agent) {
            let _ = connection.channels.close(channel);
        }
    }
}

/// Runs one authenticated agent's WebSocket until it ends, then runs the disconnect use case.
pub async fn run_agent_connection<P>(
    app: Arc<App<P>>,
    agent: AgentId,
    capabilities: Capabilities,
    socket: WebSocketStream,
    timings: ConnectionTimings,
    mut shutdown: watch::Receiver<bool>,
) where
    P: Ports<Gateway = WsAgentGateway>,
{
    let gateway = app.gateway();
    let (tx, mut outbound) = mpsc::channel(OUTBOUND_QUEUE);
    let (generation, previous) = gateway.register(agent, tx, capabilities);
    // The tunnel the replaced connection held is gone with it (its own cleanup will find
    // itself replaced and do nothing).
    if let Err(e) = app
        .agent_connected(agent, previous.and_then(AgentMode::session))
        .await
    {
        tracing::error!(agent_id = %agent, error = %e, source = ?std::error::Error::source(&e), "could not close the tunnel of the agent's previous connection");
    }
    tracing::info!(agent_id = %agent, generation, "agent connected");
    let (mut sink, mut stream) = socket.split();
    let mut ping = tokio::time::interval(timings.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut deadline = tokio::time::Instant::now() + timings.read_idle;

    let why: &str = loop {
        tokio::select! {
            frame = stream.next() => {
                deadline = tokio::time::Instant::now() + timings.read_idle;
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        app.agent_seen(agent);
                        // Awaited in line: output is stored in order, and a slow store slows
                        // only this agent's socket (backpressure), never anyone else.
                        handle_agent_text(&app, agent, generation, &text).await;
                    }
                    Some(Ok(Message::Binary(bytes))) => match DataFrame::decode(bytes::Bytes::from(bytes)) {
                        Ok(frame) => gateway.route_file_event(
                            agent,
                            generation,
                            &frame.channel_id,
                            FileEvent::Data { offset: frame.offset, data: frame.data },
                        ),
                        Err(e) => tracing::warn!(agent_id = %agent, error = %e, "binary frame from agent ignored"),
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => app.agent_seen(agent),
                    Some(Ok(Message::Close(_))) | None => break "agent closed the connection",
                    Some(Err(e)) => {
                        if is_too_big(&e) {
                            tracing::warn!(agent_id = %agent, error = %e, "frame over the size cap; closing with 1009");
                            let _ = sink.send(Message::Close(Some((CloseCode::Size, "frame too large".into())))).await;
                            break "frame over the size cap";
                        }
                        tracing::info!(agent_id = %agent, error = %e, "agent socket error");
                        break "socket error";
                    }
                }
            }
            message = outbound.recv() => {
                let Some(message) = message else { break "replaced by a newer connection" };
                let sent = tokio::time::timeout(timings.write_timeout, sink.send(message.into_frame())).await;
                if !matches!(sent, Ok(Ok(()))) {
                    break "write failed or timed out";
                }
            }
            _ = ping.tick() => {
                let sent = tokio::time::timeout(timings.write_timeout, sink.send(Message::Ping(Vec::new()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    break "ping failed or timed out";
                }
            }
            () = tokio::time::sleep_until(deadline) => break "no traffic within the read deadline (dead peer)",
            _ = shutdown.changed() => {
                // Flush what is queued (the tunnel_close of shutdown) before closing.
                while let Ok(message) = outbound.try_recv() {
                    let _ = tokio::time::timeout(timings.write_timeout, sink.send(message.into_frame())).await;
                }
                let _ = tokio::time::timeout(
                    timings.write_timeout,
                    sink.send(Message::Close(Some((CloseCode::Away, "server shutting down".into())))),
                ).await;
                break "server shutting down";
            }
        }
    };

    let mode = gateway.unregister(agent, generation);
    tracing::info!(agent_id = %agent, generation, reason = why, "agent disconnected");
    if let Some(mode) = mode
        && let Err(e) = app.agent_disconnected(agent, mode.session()).await
    {
        tracing::error!(agent_id = %agent, error = %e, source = ?std::error::Error::source(&e), "could not close the sessions of a disconnected agent");
    }
}

fn is_too_big(e: &std::io::Error) -> bool {
    let text = e.to_string();
    text.contains("too long") || text.contains("too big") || text.contains("Space limit")
}

async fn handle_agent_text<P>(app: &App<P>, agent: AgentId, generation: u64, text: &str)
where
    P: Ports<Gateway = WsAgentGateway>,
{
    let gateway = app.gateway();
    match AgentMessage::decode(text) {
        Ok(AgentMessage::TunnelReady { session_id }) => match SessionId::parse(&session_id) {
            Ok(session) => gateway.on_ready(agent, generation, session),
            Err(e) => {
                tracing::warn!(agent_id = %agent, error = %e, "tunnel_ready with a bad session id ignored")
            }
        },
        Ok(AgentMessage::TunnelError { channel_id, error }) => {
            let refused = SessionId::parse(&channel_id)
                .is_ok_and(|session| gateway.on_refusal(agent, generation, session, &error));
            if refused {
                return;
            }
            let on_channel = ChannelId::parse(&channel_id).ok().and_then(|channel| {
                gateway
                    .accept_on_channel(agent, generation, &channel, true)
                    .map(|session| (channel, session))
            });
            match on_channel {
                Some((channel, session)) => {
                    app.channel_error(agent, session, &channel, &error).await
                }
                None => {
                    tracing::warn!(agent_id = %agent, channel_id = %clip(&channel_id), error = %clip(&error), "agent reported an error on no channel of its tunnel")
                }
            }
        }
        Ok(AgentMessage::TunnelData { channel_id, data }) => {
            let TunnelDataPayload::TerminalOutput(output) = data else {
                tracing::warn!(agent_id = %agent, channel_id = %clip(&channel_id), "agent sent a terminal command frame; ignored");
                return;
            };
            let Ok(channel) = ChannelId::parse(&channel_id) else {
                tracing::warn!(agent_id = %agent, channel_id = %clip(&channel_id), "output on an invalid channel id ignored");
                return;
            };
            let (stdout, stderr) = match output.bytes() {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(agent_id = %agent, channel_id = %channel, error = %e, "output with bad base64 ignored");
                    return;
                }
            };
            let last = output.exit_code.is_some();
            if gateway
                .accept_on_channel(agent, generation, &channel, last)
                .is_none()
            {
                tracing::debug!(agent_id = %agent, channel_id = %channel, "output on a channel this agent does not hold; ignored");
                return;
            }
            let chunk = OutputChunk {
                stdout,
                stderr,
                exit_code: output.exit_code,
                signal: output.signal,
                end_reason: output.end_reason,
            };
            app.command_output(agent, &channel, chunk).await;
        }
        Ok(AgentMessage::Heartbeat(h)) => {
            let facts = HostFacts {
                version: h.agent_version,
                hostname: h.hostname,
                os: h.os,
                uptime_secs: h.uptime_secs,
            };
            let any = facts != HostFacts::default();
            app.agent_heartbeat(agent, any.then_some(facts));
        }
        Ok(AgentMessage::FileInfo {
            channel_id,
            size,
            sha256,
            mode,
            modified,
        }) => {
            gateway.route_file_event(
                agent,
                generation,
                &channel_id,
                FileEvent::Info {
                    size,
                    sha256,
                    mode,
                    modified,
                },
            );
        }
        Ok(AgentMessage::FileDone {
            channel_id,
            path,
            size,
            sha256,
        }) => {
            gateway.route_file_event(
                agent,
                generation,
                &channel_id,
                FileEvent::Done { path, size, sha256 },
            );
        }
        Ok(AgentMessage::FileError {
            channel_id,
            code,
            message,
        }) => {
            gateway.route_file_event(
                agent,
                generation,
                &channel_id,
                FileEvent::Error { code, message },
            );
        }
        Ok(AgentMessage::FileListing {
            channel_id,
            path,
            entries,
        }) => {
            gateway.route_file_event(
                agent,
                generation,
                &channel_id,
                FileEvent::Listing { path, entries },
            );
        }
        Ok(AgentMessage::FilePartial {
            channel_id, size, ..
        }) => {
            gateway.route_file_event(agent, generation, &channel_id, FileEvent::Partial { size });
        }
        Ok(AgentMessage::FileAck { channel_id, offset }) => {
            gateway.route_file_event(agent, generation, &channel_id, FileEvent::Ack { offset });
        }
        Err(DecodeError::UnknownType(kind)) => {
            tracing::info!(agent_id = %agent, kind = %clip(&kind), "unknown message type from agent ignored");
        }
        Err(e) => {
            tracing::warn!(agent_id = %agent, error = %e, "unusable frame from agent ignored")
        }
    }
}

/// At most 200 characters of agent-supplied text, for logs.
fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}
