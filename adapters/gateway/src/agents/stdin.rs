//! A command's stdin through its channel: the server's half of the `command-stdin`
//! extension behind `AgentGateway::command_stdin`. The body goes out in binary data frames
//! within the stream window (the agent acknowledges what it wrote with `channel_ack`), so a
//! command that does not read slows the client down instead of filling the server.

use std::time::Duration;

use futures_util::StreamExt as _;
use rmm_application::{ByteStream, StdinError};
use rmm_domain::{AgentId, ChannelId};
use rmm_protocol::{DataFrame, ServerMessage};
use tokio::sync::{mpsc, watch};

use super::window::SendWindow;
use super::{Outbound, WsAgentGateway};

/// How long, after `stdin_end`, the agent may take to acknowledge the last bytes (the
/// command reads them at its own pace); then the bytes acknowledged so far are reported.
pub const FINAL_ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// The stdin of a command started with `stdin: true`, while its channel is open.
#[derive(Debug, Default)]
pub(crate) struct StdinState {
    /// The agent's acks, once a `command_stdin` took the stdin (it is fed once).
    acks: Option<watch::Sender<u64>>,
}

impl StdinState {
    pub(crate) fn acks(&self) -> Option<&watch::Sender<u64>> {
        self.acks.as_ref()
    }
}

impl WsAgentGateway {
    /// See `AgentGateway::command_stdin`.
    pub(crate) async fn feed_stdin(
        &self,
        agent: AgentId,
        channel: &ChannelId,
        body: &mut ByteStream,
    ) -> Result<u64, StdinError> {
        let (outbound, acks, generation) = {
            let mut connections = self.lock();
            let connection = connections.get_mut(&agent).ok_or(StdinError::AgentGone)?;
            let state = connection
                .stdins
                .get_mut(channel)
                .filter(|state| state.acks.is_none())
                .ok_or(StdinError::Closed)?;
            let (tx, rx) = watch::channel(0);
            state.acks = Some(tx);
            (connection.outbound.clone(), rx, connection.generation)
        };
        let mut feed = Feed {
            gateway: self,
            agent,
            generation,
            channel,
            outbound,
            acks,
            window: SendWindow::default(),
        };
        feed.stream(body).await?;
        feed.end().await?;
        Ok(feed.settle(FINAL_ACK_TIMEOUT).await)
    }
}

/// One `command_stdin` under way.
struct Feed<'a> {
    gateway: &'a WsAgentGateway,
    agent: AgentId,
    generation: u64,
    channel: &'a ChannelId,
    outbound: mpsc::Sender<Outbound>,
    acks: watch::Receiver<u64>,
    window: SendWindow,
}

impl Feed<'_> {
    /// Sends the body within the window.
    async fn stream(&mut self, body: &mut ByteStream) -> Result<(), StdinError> {
        while let Some(chunk) = body.next().await {
            let mut rest = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    if self.still_open() {
                        self.end().await?;
                    }
                    return Err(StdinError::ClientAborted(e.to_string()));
                }
            };
            while !rest.is_empty() {
                let room = self.room().await?;
                let piece = rest.split_to(room.min(rest.len()));
                let frame = DataFrame {
                    channel_id: self.channel.to_string(),
                    offset: self.window.send(piece.len()),
                    data: piece,
                };
                self.outbound
                    .send(Outbound::Data(frame.encode()))
                    .await
                    .map_err(|_| StdinError::AgentGone)?;
            }
        }
        Ok(())
    }

    /// Room for the next frame, waiting for the agent's acks when there is none.
    async fn room(&mut self) -> Result<usize, StdinError> {
        loop {
            self.window.ack(*self.acks.borrow_and_update());
            let room = self.window.room();
            if room > 0 {
                return Ok(room);
            }
            if self.acks.changed().await.is_err() {
                return Err(self.why_gone());
            }
        }
    }

    /// `stdin_end`: the command sees EOF.
    async fn end(&self) -> Result<(), StdinError> {
        self.outbound
            .send(Outbound::message(ServerMessage::StdinEnd {
                channel_id: self.channel.to_string(),
            }))
            .await
            .map_err(|_| StdinError::AgentGone)
    }

    /// Waits (up to `wait`) for the agent to acknowledge every byte sent; the bytes it
    /// acknowledged. A command that ends first took what it acknowledged.
    async fn settle(&mut self, wait: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.window.ack(*self.acks.borrow_and_update());
            if self.window.settled() {
                break;
            }
            match tokio::time::timeout_at(deadline, self.acks.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    tracing::warn!(agent_id = %self.agent, channel_id = %self.channel, sent = self.window.sent(), acked = self.window.acked(), "the agent did not acknowledge the end of a command's stdin in time");
                    break;
                }
            }
        }
        self.window.acked()
    }

    /// The command's stdin is still routed (the command runs, the connection is the same).
    fn still_open(&self) -> bool {
        self.gateway
            .lock()
            .get(&self.agent)
            .filter(|c| c.generation == self.generation)
            .is_some_and(|c| c.stdins.contains_key(self.channel))
    }

    /// Why the acks ended: the agent's connection went away, or the command ended.
    fn why_gone(&self) -> StdinError {
        let connected = self
            .gateway
            .lock()
            .get(&self.agent)
            .is_some_and(|c| c.generation == self.generation);
        if connected {
            StdinError::Closed
        } else {
            StdinError::AgentGone
        }
    }
}
