//! Interactive terminals through a session's tunnel: the server's half of the `pty`
//! extension behind `AgentGateway::open_pty`.
//!
//! The agent's frames on a terminal channel are routed here by the connection task, which
//! never waits: events go to the application's queue with `try_send`, and an agent that
//! sends beyond the credit the application granted (or fills that queue) broke the protocol:
//! the terminal fails and is closed. What the application sends goes through a small task per
//! terminal that holds input back while a window of it is unacknowledged by the agent.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use rmm_application::{GatewayError, PtyControl, PtyEvent, PtyLink, PtySpec};
use rmm_domain::{AgentId, ChannelId, ChannelKind, SessionId};
use rmm_protocol::limits::{STREAM_WINDOW, STREAM_WINDOW_FRAMES};
use rmm_protocol::{DataFrame, ServerMessage};
use tokio::sync::{mpsc, watch};

use super::registry::{Connection, Connections, in_tunnel, lock};
use super::window::{ReceiveCredit, SendWindow};
use super::{Outbound, WsAgentGateway};

/// Events of one terminal the application may have queued: a compliant agent sends at most
/// [`STREAM_WINDOW_FRAMES`] output frames beyond the application's ack, plus a few messages.
pub const PTY_EVENTS_QUEUE: usize = STREAM_WINDOW_FRAMES as usize + 16;
/// Controls of one terminal queued before its task takes them.
pub const PTY_CONTROL_QUEUE: usize = 16;
/// Input bytes a terminal's task takes from the application beyond what the agent's window
/// lets through; past it the task stops taking controls, so the sender waits...
const PARKED_INPUT: usize = STREAM_WINDOW as usize;
/// ... unless the agent waits for an output ack (which may be queued behind input: a paste
/// into `cat` needs output acks to be consumed), up to this much.
const PARKED_INPUT_STARVED: usize = 4 * STREAM_WINDOW as usize;

/// One live terminal, as the connection task routes to it.
#[derive(Debug)]
pub(crate) struct PtyRoute {
    events: mpsc::Sender<PtyEvent>,
    /// The agent's output beyond the application's last ack.
    credit: ReceiveCredit,
    /// The agent's acks of input (its `channel_ack`), for the control task. Dropped with the
    /// route, which ends that task.
    input_acked: watch::Sender<u64>,
    /// Whether the agent waits for the application's output ack (see
    /// [`ReceiveCredit::starved`]), for the control task.
    starved: watch::Sender<bool>,
    /// `pty_close` was queued to the agent.
    close_sent: bool,
}

impl WsAgentGateway {
    /// See `AgentGateway::open_pty`.
    pub(crate) fn start_pty(
        &self,
        agent: AgentId,
        session: SessionId,
        channel: &ChannelId,
        spec: &PtySpec,
    ) -> Result<PtyLink, GatewayError> {
        let mut connections = self.lock();
        let connection = in_tunnel(&mut connections, agent, session)?;
        if !connection.capabilities.pty {
            return Err(GatewayError::Unsupported);
        }
        connection
            .channels
            .open(channel.clone(), ChannelKind::Pty)
            .map_err(|_| GatewayError::Busy)?;
        let open = ServerMessage::PtyOpen {
            channel_id: channel.to_string(),
            cols: spec.size.cols(),
            rows: spec.size.rows(),
            term: spec.term.as_str().to_owned(),
            command: spec.command.clone(),
        };
        if let Err(e) = Self::send(connection, open) {
            let _ = connection.channels.close(channel);
            return Err(e);
        }
        let (events_tx, events) = mpsc::channel(PTY_EVENTS_QUEUE);
        let (control, control_rx) = mpsc::channel(PTY_CONTROL_QUEUE);
        let (input_acked, acks) = watch::channel(0);
        let (starved, starved_rx) = watch::channel(false);
        connection.ptys.insert(
            channel.clone(),
            PtyRoute {
                events: events_tx,
                credit: ReceiveCredit::default(),
                input_acked,
                starved,
                close_sent: false,
            },
        );
        let task = ControlTask {
            channel: channel.clone(),
            agent,
            generation: connection.generation,
            outbound: connection.outbound.clone(),
            connections: self.connections(),
        };
        let (out_acks, out_acks_rx) = watch::channel(0);
        let (close, close_rx) = watch::channel(false);
        tokio::spawn(task.run(
            control_rx,
            Watches {
                input_acks: acks,
                starved: starved_rx,
                output_acks: out_acks_rx,
                close: close_rx,
            },
        ));
        Ok(PtyLink {
            events,
            control,
            acks: out_acks,
            close,
        })
    }

    /// An output frame from connection `generation`: `Err(frame)` when its channel is no
    /// terminal of that connection (it may be a file transfer's).
    pub(crate) fn route_pty_output(
        &self,
        agent: AgentId,
        generation: u64,
        frame: DataFrame,
    ) -> Result<(), DataFrame> {
        let mut connections = self.lock();
        let Some((connection, channel)) =
            pty_channel(&mut connections, agent, generation, &frame.channel_id)
        else {
            return Err(frame);
        };
        let Some(route) = connection.ptys.get_mut(&channel) else {
            // Draining after a close or a violation: nothing reads it any more.
            return Ok(());
        };
        if let Err(e) = route.credit.receive(frame.offset, frame.data.len()) {
            tracing::warn!(agent_id = %agent, channel_id = %channel, error = %e, "terminal output breaks the flow-control rules; closing the terminal");
            end_pty(
                connection,
                &channel,
                Some(format!("protocol violation: {e}")),
            );
            return Ok(());
        }
        route.update_starved();
        match route.events.try_send(PtyEvent::Output(frame.data)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                crate::telemetry::dropped(crate::telemetry::Queue::TerminalEvents, 1);
                tracing::warn!(agent_id = %agent, channel_id = %channel, "terminal events queue full; closing the terminal");
                let why = "protocol violation: the agent exceeded its credit (event queue full)";
                end_pty(connection, &channel, Some(why.to_owned()));
            }
            // The application let go of the terminal: nobody reads it.
            Err(mpsc::error::TrySendError::Closed(_)) => end_pty(connection, &channel, None),
        }
        Ok(())
    }

    /// `pty_ready`; false when `channel` is no terminal of the connection.
    pub(crate) fn on_pty_ready(&self, agent: AgentId, generation: u64, channel: &str) -> bool {
        self.pty_event(agent, generation, channel, PtyEvent::Ready, false)
    }

    /// `pty_exit`: the last event of the terminal, whose channel closes.
    pub(crate) fn on_pty_exit(
        &self,
        agent: AgentId,
        generation: u64,
        channel: &str,
        exit_code: Option<i32>,
        signal: Option<i32>,
    ) -> bool {
        let exit = PtyEvent::Exit { exit_code, signal };
        self.pty_event(agent, generation, channel, exit, true)
    }

    /// `tunnel_error` on a terminal channel: the agent could not start it (or lost it); the
    /// channel closes.
    pub(crate) fn on_pty_error(
        &self,
        agent: AgentId,
        generation: u64,
        channel: &str,
        error: &str,
    ) -> bool {
        let failed = PtyEvent::Failed(error.to_owned());
        self.pty_event(agent, generation, channel, failed, true)
    }

    fn pty_event(
        &self,
        agent: AgentId,
        generation: u64,
        channel: &str,
        event: PtyEvent,
        last: bool,
    ) -> bool {
        let mut connections = self.lock();
        let Some((connection, channel)) = pty_channel(&mut connections, agent, generation, channel)
        else {
            return false;
        };
        let sent = connection
            .ptys
            .get(&channel)
            .map(|route| route.events.try_send(event));
        match sent {
            Some(Err(mpsc::error::TrySendError::Full(_))) if !last => {
                tracing::warn!(agent_id = %agent, channel_id = %channel, "terminal events queue full; closing the terminal");
                let why = "protocol violation: the agent exceeded its credit (event queue full)";
                end_pty(connection, &channel, Some(why.to_owned()));
            }
            Some(Err(mpsc::error::TrySendError::Closed(_))) if !last => {
                end_pty(connection, &channel, None);
            }
            Some(_) | None => {}
        }
        if last {
            // Dropping the route ends the events (after this last one) and the control task.
            connection.ptys.remove(&channel);
            let _ = connection.channels.close(&channel);
        }
        true
    }

    /// `channel_ack` from the agent: input of a terminal or a command's stdin was written.
    /// False when `channel` carries neither.
    pub(crate) fn on_channel_ack(
        &self,
        agent: AgentId,
        generation: u64,
        channel: &str,
        offset: u64,
    ) -> bool {
        let mut connections = self.lock();
        let Some(connection) = connections
            .get_mut(&agent)
            .filter(|c| c.generation == generation)
        else {
            return false;
        };
        let Ok(channel) = ChannelId::parse(channel) else {
            return false;
        };
        let acks = match (
            connection.ptys.get(&channel),
            connection.stdins.get(&channel),
        ) {
            (Some(route), _) => Some(&route.input_acked),
            (None, Some(stdin)) => stdin.acks(),
            (None, None) => None,
        };
        match acks {
            Some(acks) => {
                acks.send_if_modified(|acked| {
                    let newer = offset > *acked;
                    *acked = (*acked).max(offset);
                    newer
                });
                true
            }
            // A terminal draining after a close: its late acks are expected.
            None => connection
                .channels
                .check(&channel, ChannelKind::Pty)
                .is_ok(),
        }
    }
}

impl PtyRoute {
    fn update_starved(&self) {
        let now = self.credit.starved();
        self.starved
            .send_if_modified(|was| std::mem::replace(was, now) != now);
    }
}

/// The connection `generation` of `agent` and `channel` parsed, when it is an open terminal
/// channel of that connection.
fn pty_channel<'a>(
    connections: &'a mut std::collections::HashMap<AgentId, Connection>,
    agent: AgentId,
    generation: u64,
    channel: &str,
) -> Option<(&'a mut Connection, ChannelId)> {
    let connection = connections
        .get_mut(&agent)
        .filter(|c| c.generation == generation)?;
    let channel = ChannelId::parse(channel).ok()?;
    connection.channels.check(&channel, ChannelKind::Pty).ok()?;
    Some((connection, channel))
}

/// Stops routing a terminal: its events end (after `failure`, when given and there is room),
/// the agent is told to close it (once), and its channel drains until `pty_exit`.
pub(crate) fn end_pty(connection: &mut Connection, channel: &ChannelId, failure: Option<String>) {
    let Some(route) = connection.ptys.remove(channel) else {
        return;
    };
    if let Some(why) = failure {
        let _ = route.events.try_send(PtyEvent::Failed(why));
    }
    if !route.close_sent {
        let _ = connection.push(ServerMessage::PtyClose {
            channel_id: channel.to_string(),
        });
    }
}

/// The task that turns one terminal's controls into frames to its agent.
struct ControlTask {
    channel: ChannelId,
    agent: AgentId,
    generation: u64,
    outbound: mpsc::Sender<Outbound>,
    connections: Arc<Connections>,
}

/// What the control task watches besides the ordered controls.
struct Watches {
    /// The agent's `channel_ack`s of input.
    input_acks: watch::Receiver<u64>,
    /// Whether the agent waits for output credit.
    starved: watch::Receiver<bool>,
    /// The application's output credit ([`PtyLink::acks`]).
    output_acks: watch::Receiver<u64>,
    /// The application's close ([`PtyLink::close`]).
    close: watch::Receiver<bool>,
}

/// Input taken from the application and not sent yet.
#[derive(Default)]
struct Parked {
    chunks: VecDeque<Bytes>,
    bytes: usize,
}

impl ControlTask {
    /// Runs until the terminal's route is gone (exit, failure, tunnel closed, agent gone),
    /// the application dropped its control sender, or the connection is gone.
    async fn run(self, mut control: mpsc::Receiver<PtyControl>, watches: Watches) {
        let Watches {
            input_acks: mut acks,
            mut starved,
            mut output_acks,
            close: mut close_rx,
        } = watches;
        let (mut window, mut parked, mut closed) =
            (SendWindow::default(), Parked::default(), false);
        loop {
            if self.flush(&mut window, &mut parked).await.is_err() {
                return;
            }
            // Controls are taken while input waits for the agent, so an ack or a close is
            // not stuck behind input; past PARKED_INPUT the sender waits, unless the agent
            // itself waits for an ack (then up to PARKED_INPUT_STARVED).
            let limit = if *starved.borrow_and_update() {
                PARKED_INPUT_STARVED
            } else {
                PARKED_INPUT
            };
            let take = parked.bytes < limit;
            tokio::select! {
                biased;
                changed = acks.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    window.ack(*acks.borrow_and_update());
                }
                changed = starved.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                // The application's output credit and close never wait behind input.
                changed = close_rx.changed() => {
                    if changed.is_err() || *close_rx.borrow_and_update() {
                        closed = true;
                        parked = Parked::default();
                        let _ = self.close().await;
                        if changed.is_err() {
                            return;
                        }
                    }
                }
                changed = output_acks.changed() => {
                    if changed.is_err() {
                        let _ = self.close().await;
                        return;
                    }
                    let offset = *output_acks.borrow_and_update();
                    if let Some(offset) = self.grant(offset)
                        && self.send(ServerMessage::ChannelAck { channel_id: self.channel.to_string(), offset }).await.is_err()
                    {
                        return;
                    }
                }
                next = control.recv(), if take => {
                    let Some(next) = next else {
                        let _ = self.close().await;
                        return;
                    };
                    if self.apply(next, &mut parked, &mut closed).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Sends parked input as far as the window allows.
    async fn flush(&self, window: &mut SendWindow, parked: &mut Parked) -> Result<(), ()> {
        while let Some(front) = parked.chunks.front_mut() {
            let room = window.room();
            if room == 0 {
                break;
            }
            let piece = front.split_to(room.min(front.len()));
            if front.is_empty() {
                parked.chunks.pop_front();
            }
            parked.bytes -= piece.len();
            let frame = DataFrame {
                channel_id: self.channel.to_string(),
                offset: window.send(piece.len()),
                data: piece,
            };
            self.outbound
                .send(Outbound::Data(frame.encode()))
                .await
                .map_err(|_| ())?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        control: PtyControl,
        parked: &mut Parked,
        closed: &mut bool,
    ) -> Result<(), ()> {
        let channel_id = self.channel.to_string();
        let message = match control {
            PtyControl::Input(bytes) => {
                if !*closed && !bytes.is_empty() {
                    parked.bytes += bytes.len();
                    parked.chunks.push_back(bytes);
                }
                return Ok(());
            }
            PtyControl::Resize(size) if !*closed => ServerMessage::PtyResize {
                channel_id,
                cols: size.cols(),
                rows: size.rows(),
            },
            PtyControl::Resize(_) => return Ok(()),
        };
        self.send(message).await
    }

    /// Grants the agent credit up to `offset` of output; the offset to tell it, `None` when
    /// the terminal is no longer routed. Accounted before the ack leaves, so the agent's
    /// answer to it is never taken for an overrun.
    fn grant(&self, offset: u64) -> Option<u64> {
        let mut connections = lock(&self.connections);
        let route = connections
            .get_mut(&self.agent)
            .filter(|c| c.generation == self.generation)?
            .ptys
            .get_mut(&self.channel)?;
        let offset = route.credit.ack(offset);
        route.update_starved();
        Some(offset)
    }

    /// Sends `pty_close` unless it was already sent or the terminal is no longer routed.
    async fn close(&self) -> Result<(), ()> {
        let first = {
            let mut connections = lock(&self.connections);
            connections
                .get_mut(&self.agent)
                .filter(|c| c.generation == self.generation)
                .and_then(|c| c.ptys.get_mut(&self.channel))
                .is_some_and(|route| !std::mem::replace(&mut route.close_sent, true))
        };
        if !first {
            return Ok(());
        }
        self.send(ServerMessage::PtyClose {
            channel_id: self.channel.to_string(),
        })
        .await
    }

    async fn send(&self, message: ServerMessage) -> Result<(), ()> {
        self.outbound
            .send(Outbound::message(message))
            .await
            .map_err(|_| ())
    }
}
