//! The task that runs one agent's WebSocket: reads its frames (routing each to its use case
//! or transfer), writes what is queued for it, pings, and ends on a dead peer or shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use poem::web::websocket::{CloseCode, Message, WebSocketStream};
use rmm_application::{AgentRecord, App, HostFacts, OutputChunk, Ports};
use rmm_domain::{AgentId, ChannelId, SessionId};
use rmm_protocol::{
    AgentMessage, DataFrame, DecodeError, OutputChannel, OutputStream, TerminalOutput,
    TunnelDataPayload,
};
use tokio::sync::{mpsc, watch};

use crate::streams::BroadcastStreams;

use super::clock::{Clock, Due, WarnBudget};
use super::{
    Capabilities, ConnectionTimings, FileEvent, MAX_CHANNELS, OUTBOUND_QUEUE, Outbound,
    WsAgentGateway,
};

type Sink = SplitSink<WebSocketStream, Message>;

/// One agent's connection, as its task sees it.
struct Link<'a, P: Ports<Gateway = WsAgentGateway, Streams = BroadcastStreams>> {
    app: &'a App<P>,
    agent: AgentId,
    generation: u64,
    timings: ConnectionTimings,
    /// Warnings about this agent's unusable frames, rate-limited.
    warnings: Mutex<WarnBudget>,
    /// The next offset of each binary output stream (`<channel>/stdout`), to catch gaps and
    /// duplicates; dropped at the command's final frame, at most [`MAX_TRACKED_STREAMS`].
    output_offsets: Mutex<HashMap<String, u64>>,
}

/// Who connected: its client address, and the admission slot its handshake holds until the
/// connection is registered (the server's admission control; dropped then).
#[derive(Debug)]
pub struct Peer {
    pub remote: String,
    pub admitted: tokio::sync::OwnedSemaphorePermit,
}

/// How long output waits for a session's watcher that reads nothing before giving up on it.
const WATCHER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Output streams whose offsets one connection tracks: two per channel it may hold, twice over.
const MAX_TRACKED_STREAMS: usize = 4 * MAX_CHANNELS;

/// Runs one authenticated agent's WebSocket until it ends, then runs the disconnect use case.
pub async fn run_agent_connection<P>(
    app: Arc<App<P>>,
    record: AgentRecord,
    capabilities: Capabilities,
    socket: WebSocketStream,
    timings: ConnectionTimings,
    shutdown: watch::Receiver<bool>,
    peer: Peer,
) where
    P: Ports<Gateway = WsAgentGateway, Streams = BroadcastStreams>,
{
    let Peer { remote, admitted } = peer;
    let gateway = app.gateway();
    let (tx, outbound) = mpsc::channel(OUTBOUND_QUEUE);
    let agent = record.id;
    let (generation, previous) = gateway.register(agent, tx, capabilities, remote.clone());
    // Checked again now that it is registered: a revoke or a new key that committed while
    // this connection was being set up (after its key was checked) finds it registered, or
    // is seen here.
    // The set-up and clean-up calls are boxed: their futures live only for a moment, and
    // unboxed they would size the task of every idle connection for its whole life.
    if !Box::pin(app.still_admitted(agent, record.key_digest)).await {
        tracing::warn!(agent_id = %agent, %remote, "agent revoked or its key replaced while it connected; connection dropped");
        gateway.unregister(agent, generation);
        // A live agent list may have shown it connected for that moment.
        app.note_agents_changed();
        return;
    }
    let previous = previous.map(|(mode, old_remote)| (mode.session(), old_remote));
    if let Some((_, old_remote)) = &previous {
        Box::pin(app.agent_replaced(agent, old_remote, &remote)).await;
    }
    // The tunnel the replaced connection held is gone with it (its own cleanup will find
    // itself replaced and do nothing).
    if let Err(e) =
        Box::pin(app.agent_connected(agent, previous.and_then(|(session, _)| session))).await
    {
        tracing::error!(agent_id = %agent, error = %e, source = ?std::error::Error::source(&e), "could not close the tunnel of the agent's previous connection");
    }
    tracing::info!(agent_id = %agent, generation, "agent connected");
    // Set up: the next handshake may run (the server's admission control).
    drop(admitted);
    let link = Link {
        app: &app,
        agent,
        generation,
        timings,
        warnings: Mutex::new(WarnBudget::new(tokio::time::Instant::now())),
        output_offsets: Mutex::new(HashMap::new()),
    };
    let why = link.serve(socket, outbound, shutdown).await;
    link.warn_budget().flush(agent);

    let mode = gateway.unregister(agent, generation);
    tracing::info!(agent_id = %agent, generation, reason = why, "agent disconnected");
    if let Some(mode) = mode
        && let Err(e) = Box::pin(app.agent_disconnected(agent, mode.session())).await
    {
        tracing::error!(agent_id = %agent, error = %e, source = ?std::error::Error::source(&e), "could not close the sessions of a disconnected agent");
    }
}

impl<P: Ports<Gateway = WsAgentGateway, Streams = BroadcastStreams>> Link<'_, P> {
    /// Moves frames both ways until the connection ends; why it ended.
    async fn serve(
        &self,
        socket: WebSocketStream,
        mut outbound: mpsc::Receiver<Outbound>,
        mut shutdown: watch::Receiver<bool>,
    ) -> &'static str {
        let (mut sink, mut stream): (Sink, SplitStream<WebSocketStream>) = socket.split();
        // One timer for both the pings and the read deadline: an inbound frame only stamps
        // `clock.inbound` (no timer is re-armed per frame), and the timer wakes at whichever
        // comes first.
        let mut clock = Clock::new(tokio::time::Instant::now(), self.timings);
        let timer = tokio::time::sleep_until(clock.next_wake());
        tokio::pin!(timer);
        // Made once: a `changed()` made per loop turn joined and left the watch's waiter list
        // (shared by every connection) on every frame.
        let shutting_down = shutdown.changed();
        tokio::pin!(shutting_down);
        loop {
            tokio::select! {
                frame = stream.next() => {
                    clock.inbound = tokio::time::Instant::now();
                    if let Some(why) = Box::pin(self.inbound(frame, &mut sink)).await {
                        return why;
                    }
                }
                message = outbound.recv() => {
                    let Some(message) = message else { return "replaced by a newer connection" };
                    if let Outbound::Close(why) = message {
                        self.write(&mut sink, message.into_frame()).await;
                        return why;
                    }
                    if !self.write(&mut sink, message.into_frame()).await {
                        return "write failed or timed out";
                    }
                }
                () = &mut timer => {
                    let now = tokio::time::Instant::now();
                    match clock.due(now) {
                        Due::Dead => return "no traffic within the read deadline (dead peer)",
                        Due::Ping => {
                            if !self.write(&mut sink, Message::Ping(Vec::new())).await {
                                return "ping failed or timed out";
                            }
                            clock.pinged(now);
                        }
                        Due::Nothing => {}
                    }
                    timer.as_mut().reset(clock.next_wake());
                }
                _ = &mut shutting_down => {
                    // Flush what is queued (the tunnel_close of shutdown) before closing.
                    while let Ok(message) = outbound.try_recv() {
                        self.write(&mut sink, message.into_frame()).await;
                    }
                    let close = Message::Close(Some((CloseCode::Away, "server shutting down".into())));
                    self.write(&mut sink, close).await;
                    return "server shutting down";
                }
            }
        }
    }

    /// Writes one frame within the write timeout; false when it failed or took too long.
    async fn write(&self, sink: &mut Sink, message: Message) -> bool {
        let sent = tokio::time::timeout(self.timings.write_timeout, sink.send(message)).await;
        matches!(sent, Ok(Ok(())))
    }

    /// Handles one inbound frame; `Some(why)` when the connection is over.
    async fn inbound(
        &self,
        frame: Option<Result<Message, std::io::Error>>,
        sink: &mut Sink,
    ) -> Option<&'static str> {
        let (app, agent) = (self.app, self.agent);
        match frame {
            Some(Ok(Message::Text(text))) => {
                app.agent_seen(agent);
                // Awaited in line: output is stored in order, and a slow store slows only
                // this agent's socket (backpressure), never anyone else.
                self.text(&text).await;
            }
            Some(Ok(Message::Binary(bytes))) => {
                match DataFrame::decode(bytes::Bytes::from(bytes)) {
                    Ok(frame) if OutputChannel::parse(&frame.channel_id).is_some() => {
                        app.agent_seen(agent);
                        self.binary_output(frame).await;
                    }
                    Ok(frame) => self.data(frame),
                    Err(e) => {
                        if self.may_warn() {
                            tracing::warn!(agent_id = %agent, error = %e, "binary frame from agent ignored");
                        }
                    }
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => app.agent_seen(agent),
            Some(Ok(Message::Close(_))) | None => return Some("agent closed the connection"),
            Some(Err(e)) => {
                if is_too_big(&e) {
                    tracing::warn!(agent_id = %agent, error = %e, "frame over the size cap; closing with 1009");
                    let close = Message::Close(Some((CloseCode::Size, "frame too large".into())));
                    let _ = sink.send(close).await;
                    return Some("frame over the size cap");
                }
                tracing::info!(agent_id = %agent, error = %e, "agent socket error");
                return Some("socket error");
            }
        }
        None
    }

    /// A text frame: a protocol message.
    async fn text(&self, text: &str) {
        let agent = self.agent;
        let message = match AgentMessage::decode(text) {
            Ok(message) => message,
            Err(DecodeError::UnknownType(kind)) => {
                if !self.may_warn() {
                    return;
                }
                tracing::info!(agent_id = %agent, kind = %clip(&kind), "unknown message type from agent ignored");
                return;
            }
            Err(e) => {
                if self.may_warn() {
                    tracing::warn!(agent_id = %agent, error = %e, "unusable frame from agent ignored");
                }
                return;
            }
        };
        match message {
            AgentMessage::TunnelReady { session_id } => match SessionId::parse(&session_id) {
                Ok(session) => self.app.gateway().on_ready(agent, self.generation, session),
                Err(e) => {
                    if self.may_warn() {
                        tracing::warn!(agent_id = %agent, error = %e, "tunnel_ready with a bad session id ignored");
                    }
                }
            },
            AgentMessage::TunnelError { channel_id, error } => {
                self.tunnel_error(&channel_id, &error).await;
            }
            AgentMessage::TunnelData { channel_id, data } => {
                let TunnelDataPayload::TerminalOutput(output) = data else {
                    if !self.may_warn() {
                        return;
                    }
                    tracing::warn!(agent_id = %agent, channel_id = %clip(&channel_id), "agent sent a terminal command frame; ignored");
                    return;
                };
                self.output(&channel_id, output).await;
            }
            AgentMessage::Heartbeat(h) => {
                let facts = HostFacts {
                    version: h.agent_version,
                    hostname: h.hostname,
                    os: h.os,
                    uptime_secs: h.uptime_secs,
                };
                let any = facts != HostFacts::default();
                self.app.agent_heartbeat(agent, any.then_some(facts));
            }
            other => self.extension(other),
        }
    }

    /// A message of an extension: terminals, stdin acks, file transfers.
    fn extension(&self, message: AgentMessage) {
        let (gateway, agent, generation) = (self.app.gateway(), self.agent, self.generation);
        match message {
            AgentMessage::PtyReady { channel_id } => {
                let routed = gateway.on_pty_ready(agent, generation, &channel_id);
                self.unrouted(routed, "pty_ready", &channel_id);
            }
            AgentMessage::PtyExit {
                channel_id,
                exit_code,
                signal,
            } => {
                let routed = gateway.on_pty_exit(agent, generation, &channel_id, exit_code, signal);
                self.unrouted(routed, "pty_exit", &channel_id);
            }
            AgentMessage::ChannelAck { channel_id, offset } => {
                let routed = gateway.on_channel_ack(agent, generation, &channel_id, offset);
                self.unrouted(routed, "channel_ack", &channel_id);
            }
            file => {
                if let Some((channel_id, event)) = file_event(file) {
                    self.route_file(&channel_id, event);
                }
            }
        }
    }

    /// A binary data frame: a terminal's output, else a file transfer's data.
    fn data(&self, frame: DataFrame) {
        let gateway = self.app.gateway();
        if let Err(frame) = gateway.route_pty_output(self.agent, self.generation, frame) {
            let event = FileEvent::Data {
                offset: frame.offset,
                data: frame.data,
            };
            self.route_file(&frame.channel_id, event);
        }
    }

    /// Warns (rate-limited) about a message on no channel that carries it.
    fn unrouted(&self, routed: bool, kind: &str, channel_id: &str) {
        if !routed && self.may_warn() {
            tracing::warn!(agent_id = %self.agent, kind, channel_id = %clip(channel_id), "message on no channel that carries it; ignored");
        }
    }

    /// `tunnel_error`: the agent refused an open (the channel names the session), or a
    /// command on a channel of its tunnel failed.
    async fn tunnel_error(&self, channel_id: &str, error: &str) {
        let (gateway, agent, generation) = (self.app.gateway(), self.agent, self.generation);
        let refused = SessionId::parse(channel_id)
            .is_ok_and(|session| gateway.on_refusal(agent, generation, session, error));
        if refused || gateway.on_pty_error(agent, generation, channel_id, error) {
            return;
        }
        let on_channel = ChannelId::parse(channel_id).ok().and_then(|channel| {
            gateway
                .accept_on_channel(agent, generation, &channel, true)
                .map(|session| (channel, session))
        });
        match on_channel {
            Some((channel, session)) => {
                self.app
                    .channel_error(agent, session, &channel, error)
                    .await;
            }
            None => {
                if self.may_warn() {
                    tracing::warn!(agent_id = %agent, channel_id = %clip(channel_id), error = %clip(error), "agent reported an error on no channel of its tunnel");
                }
            }
        }
    }

    /// Command output on a channel of the agent's tunnel, from a `terminal_output` frame.
    async fn output(&self, channel_id: &str, output: TerminalOutput) {
        let (stdout, stderr) = match output.bytes() {
            Ok(bytes) => bytes,
            Err(e) => {
                if self.may_warn() {
                    tracing::warn!(agent_id = %self.agent, channel_id = %clip(channel_id), error = %e, "output with bad base64 ignored");
                }
                return;
            }
        };
        if output.exit_code.is_some() {
            // The command's end: its binary streams (if any) end with it.
            let mut offsets = self.offsets();
            for stream in [OutputStream::Stdout, OutputStream::Stderr] {
                offsets.remove(&format!("{channel_id}{}", stream.suffix()));
            }
        }
        let chunk = OutputChunk {
            stdout,
            stderr,
            exit_code: output.exit_code,
            signal: output.signal,
            end_reason: output.end_reason,
        };
        self.deliver(channel_id, chunk).await;
    }

    /// Command output in a binary data frame (extension `command-binary-output`): stored and
    /// forwarded like a `terminal_output` chunk of one stream, never parsed as text.
    async fn binary_output(&self, frame: DataFrame) {
        let Some(OutputChannel { channel, stream }) = OutputChannel::parse(&frame.channel_id)
        else {
            return;
        };
        let Some(data) = self.in_sequence(&frame) else {
            return;
        };
        let data = data.to_vec();
        let chunk = match stream {
            OutputStream::Stdout => OutputChunk {
                stdout: data,
                ..OutputChunk::default()
            },
            OutputStream::Stderr => OutputChunk {
                stderr: data,
                ..OutputChunk::default()
            },
        };
        self.deliver(channel, chunk).await;
    }

    /// The bytes of `frame` not yet received on its stream: a duplicate is dropped, a gap
    /// (bytes that never came) is logged and the frame taken.
    fn in_sequence<'f>(&self, frame: &'f DataFrame) -> Option<&'f [u8]> {
        let mut offsets = self.offsets();
        let tracked =
            offsets.len() < MAX_TRACKED_STREAMS || offsets.contains_key(&frame.channel_id);
        let expected = offsets.get(&frame.channel_id).copied().unwrap_or(0);
        let end = frame.offset.saturating_add(frame.data.len() as u64);
        if tracked {
            offsets.insert(frame.channel_id.clone(), end.max(expected));
        }
        drop(offsets);
        if !tracked || frame.offset == expected {
            return Some(&frame.data);
        }
        if self.may_warn() {
            tracing::warn!(agent_id = %self.agent, channel_id = %clip(&frame.channel_id), offset = frame.offset, expected, "binary output out of sequence");
        }
        if frame.offset > expected {
            return Some(&frame.data);
        }
        let skip = usize::try_from(expected - frame.offset).unwrap_or(usize::MAX);
        frame.data.get(skip..).filter(|rest| !rest.is_empty())
    }

    fn offsets(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        // Every update leaves the map consistent, so a poisoned lock is still usable.
        self.output_offsets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A chunk of output on `channel_id`, if it is a channel of this agent's tunnel.
    async fn deliver(&self, channel_id: &str, chunk: OutputChunk) {
        let agent = self.agent;
        let Ok(channel) = ChannelId::parse(channel_id) else {
            if !self.may_warn() {
                return;
            }
            tracing::warn!(agent_id = %agent, channel_id = %clip(channel_id), "output on an invalid channel id ignored");
            return;
        };
        let last = chunk.exit_code.is_some();
        let Some(session) =
            self.app
                .gateway()
                .accept_on_channel(agent, self.generation, &channel, last)
        else {
            tracing::debug!(agent_id = %agent, channel_id = %channel, "output on a channel this agent does not hold; ignored");
            return;
        };
        crate::telemetry::output(rmm_application::OutputStream::Stdout, chunk.stdout.len());
        crate::telemetry::output(rmm_application::OutputStream::Stderr, chunk.stderr.len());
        // Paced to the session's watchers (bounded): a reader slower than the command is
        // slowed down rather than dropped, as an ssh client would be.
        self.app
            .streams()
            .wait_for_room(session, WATCHER_PATIENCE)
            .await;
        self.app.command_output(agent, &channel, chunk).await;
    }

    fn warn_budget(&self) -> std::sync::MutexGuard<'_, WarnBudget> {
        // Every update leaves the counts consistent, so a poisoned lock is still usable.
        self.warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a warning about an unusable frame may be logged now (see [`WarnBudget`]).
    fn may_warn(&self) -> bool {
        self.warn_budget()
            .allow(self.agent, tokio::time::Instant::now())
    }

    fn route_file(&self, channel_id: &str, event: FileEvent) {
        self.app
            .gateway()
            .route_file_event(self.agent, self.generation, channel_id, event);
    }
}

/// A `file_*` message as the event of its transfer, with the transfer's channel.
fn file_event(message: AgentMessage) -> Option<(String, FileEvent)> {
    let routed = match message {
        AgentMessage::FileInfo {
            channel_id,
            size,
            sha256,
            mode,
            modified,
        } => (
            channel_id,
            FileEvent::Info {
                size,
                sha256,
                mode,
                modified,
            },
        ),
        AgentMessage::FileDone {
            channel_id,
            path,
            size,
            sha256,
        } => (channel_id, FileEvent::Done { path, size, sha256 }),
        AgentMessage::FileError {
            channel_id,
            code,
            message,
        } => (channel_id, FileEvent::Error { code, message }),
        AgentMessage::FileListing {
            channel_id,
            path,
            entries,
        } => (channel_id, FileEvent::Listing { path, entries }),
        AgentMessage::FilePartial {
            channel_id, size, ..
        } => (channel_id, FileEvent::Partial { size }),
        AgentMessage::FileAck { channel_id, offset } => (channel_id, FileEvent::Ack { offset }),
        AgentMessage::TunnelReady { .. }
        | AgentMessage::TunnelError { .. }
        | AgentMessage::TunnelData { .. }
        | AgentMessage::Heartbeat(_)
        | AgentMessage::PtyReady { .. }
        | AgentMessage::PtyExit { .. }
        | AgentMessage::ChannelAck { .. } => return None,
    };
    Some(routed)
}

fn is_too_big(e: &std::io::Error) -> bool {
    let text = e.to_string();
    text.contains("too long") || text.contains("too big") || text.contains("Space limit")
}

/// At most 200 characters of agent-supplied text, for logs.
fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}
