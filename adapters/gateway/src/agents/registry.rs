//! The registry of live agent connections: one per agent, each with a generation (so a
//! replaced connection's late cleanup touches nothing), its mode, its open channels and the
//! open in flight. The lock is never held across an `.await`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rmm_application::{GatewayError, OpenReply};
use rmm_domain::{AgentId, AgentMode, ChannelId, ChannelKind, Channels, SessionId};
use rmm_protocol::ServerMessage;
use tokio::sync::{mpsc, oneshot};

use super::pty::PtyRoute;
use super::stdin::StdinState;
use super::{Capabilities, FileEvent, MAX_CHANNELS, Outbound};
use crate::telemetry::{self, Queue};

#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) generation: u64,
    /// The client address it came from (for the log and audit of a replaced connection).
    remote: String,
    pub(crate) outbound: mpsc::Sender<Outbound>,
    pub(crate) capabilities: Capabilities,
    /// The channels open in the tunnel: only frames on these are accepted from the agent.
    pub(crate) channels: Channels,
    /// Where the events of each file channel go.
    pub(crate) files: HashMap<ChannelId, mpsc::Sender<FileEvent>>,
    /// The live terminals (`pty` channels) and where their events go. A terminal channel
    /// still open without a route is draining: its frames are dropped until `pty_exit`.
    pub(crate) ptys: HashMap<ChannelId, PtyRoute>,
    /// The commands started with stdin, by channel.
    pub(crate) stdins: HashMap<ChannelId, StdinState>,
    pub(crate) mode: AgentMode,
    /// The open in flight (at most one: the store allows one open session per agent).
    pub(crate) pending: Option<(SessionId, oneshot::Sender<OpenReply>)>,
}

impl Connection {
    /// Queues a message without waiting; a full queue drops it (the caller does not care:
    /// every use is a best-effort close).
    pub(crate) fn push(&self, message: ServerMessage) -> bool {
        let queued = self.outbound.try_send(Outbound::message(message));
        if let Err(mpsc::error::TrySendError::Full(_)) = queued {
            telemetry::dropped(Queue::AgentOutbound, 1);
        }
        queued.is_ok()
    }
}

/// Events a transfer may have queued before its task reads them. The agent keeps at most a
/// 4 MiB window of 256 KiB data frames in flight, well under this.
const FILE_EVENTS_QUEUE: usize = 64;

pub(crate) type Connections = Mutex<HashMap<AgentId, Connection>>;

pub(crate) fn lock(
    connections: &Connections,
) -> std::sync::MutexGuard<'_, HashMap<AgentId, Connection>> {
    // Every critical section leaves the map consistent at each statement, so a poisoned lock
    // (a panic elsewhere) is safe to keep using.
    connections
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `agent`'s connection, when its tunnel is `session`'s: the one check before anything is sent
/// into a session's tunnel.
///
/// # Errors
/// [`GatewayError::NotConnected`] when the agent is gone or its tunnel is not `session`.
pub(crate) fn in_tunnel(
    connections: &mut HashMap<AgentId, Connection>,
    agent: AgentId,
    session: SessionId,
) -> Result<&mut Connection, GatewayError> {
    connections
        .get_mut(&agent)
        .filter(|connection| connection.mode.session() == Some(session))
        .ok_or(GatewayError::NotConnected)
}

/// A transfer's link to its agent: the agent's outbound queue (awaited, so a transfer waits
/// for room instead of dropping data) and the events of its channel. Dropping it closes the
/// channel, and tells the agent to stop unless the transfer was [`Self::finished`].
#[derive(Debug)]
pub(crate) struct FileLink {
    pub(crate) channel: ChannelId,
    pub(crate) outbound: mpsc::Sender<Outbound>,
    pub(crate) events: mpsc::Receiver<FileEvent>,
    /// The transfer completed: nothing to cancel.
    pub(crate) finished: bool,
    agent: AgentId,
    connections: Arc<Connections>,
}

impl Drop for FileLink {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self
                .outbound
                .try_send(Outbound::message(ServerMessage::FileCancel {
                    channel_id: self.channel.to_string(),
                }));
        }
        if let Some(connection) = lock(&self.connections).get_mut(&self.agent) {
            connection.files.remove(&self.channel);
            let _ = connection.channels.close(&self.channel);
        }
    }
}

/// What [`WsAgentGateway::census`] counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Agents connected in heartbeat mode (no tunnel).
    pub heartbeat: usize,
    /// Agents connected in tunnel mode: each holds one open session.
    pub tunnel: usize,
    /// Opens waiting for the agent's `tunnel_ready` (sessions pending).
    pub opening: usize,
}

/// Cluster mode: the agents connected to the other nodes, as this node last heard of them.
pub trait Elsewhere: Send + Sync + std::fmt::Debug + 'static {
    /// `agent`'s mode when it is connected to another node.
    fn mode(&self, agent: AgentId) -> Option<AgentMode>;
}

/// The registry of connected agents; implements [`rmm_application::AgentGateway`].
#[derive(Debug, Default)]
pub struct WsAgentGateway {
    connections: Arc<Connections>,
    generations: AtomicU64,
    /// Cluster mode: where [`rmm_application::AgentGateway::mode`] looks for an agent that is
    /// not connected here.
    elsewhere: std::sync::OnceLock<Arc<dyn Elsewhere>>,
}

impl WsAgentGateway {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, Connection>> {
        lock(&self.connections)
    }

    /// The shared registry, for the tasks that outlive a call (a terminal's control task).
    pub(crate) fn connections(&self) -> Arc<Connections> {
        Arc::clone(&self.connections)
    }

    /// Makes `outbound` (from client address `remote`) the agent's current connection; its
    /// generation, and the mode and client address of the connection it replaced. That
    /// previous connection is dropped: its queue closes, so its task ends, and an open
    /// waiting on it resolves as disconnected.
    pub fn register(
        &self,
        agent: AgentId,
        outbound: mpsc::Sender<Outbound>,
        capabilities: Capabilities,
        remote: String,
    ) -> (u64, Option<(AgentMode, String)>) {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let old = self.lock().insert(
            agent,
            Connection {
                generation,
                remote,
                outbound,
                capabilities,
                channels: Channels::with_limit(MAX_CHANNELS),
                files: HashMap::new(),
                ptys: HashMap::new(),
                stdins: HashMap::new(),
                mode: AgentMode::Heartbeat,
                pending: None,
            },
        );
        if let Some(old) = &old {
            tracing::info!(agent_id = %agent, old_generation = old.generation, generation, "agent reconnected; replacing its previous connection");
        }
        (generation, old.map(|c| (c.mode, c.remote)))
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

    /// Cluster mode: agents not connected here are looked up in `elsewhere` (set once, at
    /// start-up; a second call changes nothing).
    pub fn set_elsewhere(&self, elsewhere: Arc<dyn Elsewhere>) {
        let _ = self.elsewhere.set(elsewhere);
    }

    pub(crate) fn elsewhere(&self) -> Option<&Arc<dyn Elsewhere>> {
        self.elsewhere.get()
    }

    /// Every agent connected here, with its mode (what cluster mode tells the other nodes).
    pub fn modes(&self) -> Vec<(AgentId, AgentMode)> {
        self.lock().iter().map(|(id, c)| (*id, c.mode)).collect()
    }

    /// Whether `agent` is connected to this process (not just known elsewhere).
    pub fn connected_here(&self, agent: AgentId) -> bool {
        self.lock().contains_key(&agent)
    }

    /// Number of connected agents.
    pub fn connected(&self) -> usize {
        self.lock().len()
    }

    /// The connected agents by mode, and the sessions they hold (for the metrics).
    pub fn census(&self) -> Census {
        let connections = self.lock();
        let mut census = Census::default();
        for connection in connections.values() {
            match connection.mode {
                AgentMode::Heartbeat => census.heartbeat += 1,
                AgentMode::Tunnel { .. } => census.tunnel += 1,
            }
            if connection.pending.is_some() {
                census.opening += 1;
            }
        }
        census
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
    pub(crate) fn on_ready(&self, agent: AgentId, generation: u64, session: SessionId) {
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
    pub(crate) fn on_refusal(
        &self,
        agent: AgentId,
        generation: u64,
        session: SessionId,
        why: &str,
    ) -> bool {
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
    pub(crate) fn accept_on_channel(
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
            // The command ended: so did its stdin (a `command_stdin` under way sees it).
            connection.stdins.remove(channel);
        }
        Some(session)
    }

    /// Opens a file channel in `session`'s tunnel on `agent` for a transfer; dropping the
    /// link closes it.
    ///
    /// # Errors
    /// [`GatewayError::NotConnected`] when the agent is gone or its tunnel is not `session`;
    /// [`GatewayError::Busy`] when the channel limit is reached or the agent does not speak
    /// the file-transfer extension.
    pub(crate) fn open_file_channel(
        &self,
        agent: AgentId,
        session: SessionId,
    ) -> Result<FileLink, GatewayError> {
        let mut connections = self.lock();
        let connection = in_tunnel(&mut connections, agent, session)?;
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
            finished: false,
            agent,
            connections: Arc::clone(&self.connections),
        })
    }

    /// The session whose open is in flight on `agent`'s connection.
    pub(crate) fn pending_open(&self, agent: AgentId) -> Option<SessionId> {
        self.lock()
            .get(&agent)
            .and_then(|c| c.pending.as_ref().map(|(session, _)| *session))
    }

    /// Routes a file event from connection `generation` to its transfer. Events on channels
    /// the connection did not open for a transfer are dropped.
    pub(crate) fn route_file_event(
        &self,
        agent: AgentId,
        generation: u64,
        channel: &str,
        event: FileEvent,
    ) {
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
            telemetry::dropped(Queue::FileEvents, 1);
            // Only an agent ignoring the flow-control window fills this queue.
            tracing::warn!(agent_id = %agent, channel_id = %channel, "file event dropped: the agent overran its window or the transfer ended");
        }
    }

    pub(crate) fn send(
        connection: &Connection,
        message: ServerMessage,
    ) -> Result<(), GatewayError> {
        connection
            .outbound
            .try_send(Outbound::message(message))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    telemetry::dropped(Queue::AgentOutbound, 1);
                    GatewayError::Overloaded
                }
                mpsc::error::TrySendError::Closed(_) => GatewayError::NotConnected,
            })
    }
}

#[cfg(test)]
mod tests {
    use rmm_application::AgentGateway as _;
    use rmm_domain::UserId;

    use super::*;

    /// A gateway with `agent` connected (speaking file transfer) and its tunnel `session`
    /// open; the agent's outbound queue, drained of the `tunnel_open`.
    async fn tunnel(
        agent: AgentId,
        session: SessionId,
    ) -> (Arc<WsAgentGateway>, mpsc::Receiver<Outbound>) {
        let gateway = Arc::new(WsAgentGateway::default());
        let (tx, mut rx) = mpsc::channel(8);
        let capabilities = Capabilities {
            file_transfer: true,
            ..Capabilities::default()
        };
        let (generation, _) = gateway.register(agent, tx, capabilities, "127.0.0.1".into());
        let opener = Arc::clone(&gateway);
        let open = tokio::spawn(async move {
            opener
                .open_tunnel(agent, session, UserId::from_uuid(uuid::Uuid::from_u128(1)))
                .await
        });
        assert!(matches!(
            rx.recv().await,
            Some(Outbound::Message(m)) if matches!(*m, ServerMessage::TunnelOpen { .. })
        ));
        assert_eq!(gateway.pending_open(agent), Some(session));
        gateway.on_ready(agent, generation, session);
        assert_eq!(open.await.unwrap(), Ok(OpenReply::Ready));
        assert_eq!(gateway.pending_open(agent), None);
        (gateway, rx)
    }

    fn channels_open(gateway: &WsAgentGateway, agent: AgentId) -> usize {
        gateway.lock().get(&agent).map_or(0, |c| c.files.len())
    }

    #[tokio::test]
    async fn a_dropped_link_closes_its_channel_and_cancels_only_an_unfinished_transfer() {
        let agent = AgentId::from_uuid(uuid::Uuid::from_u128(0xA));
        let session = SessionId::from_uuid(uuid::Uuid::from_u128(0x5));
        let (gateway, mut rx) = tunnel(agent, session).await;

        let link = gateway.open_file_channel(agent, session).unwrap();
        let channel = link.channel.to_string();
        assert_eq!(channels_open(&gateway, agent), 1);
        drop(link);
        assert_eq!(channels_open(&gateway, agent), 0);
        match rx.try_recv() {
            Ok(Outbound::Message(m)) if matches!(&*m, ServerMessage::FileCancel { .. }) => {
                let ServerMessage::FileCancel { channel_id } = *m else {
                    unreachable!()
                };
                assert_eq!(channel_id, channel);
            }
            other => panic!("expected file_cancel, got {other:?}"),
        }

        let mut done = gateway.open_file_channel(agent, session).unwrap();
        done.finished = true;
        drop(done);
        assert_eq!(channels_open(&gateway, agent), 0);
        assert!(
            rx.try_recv().is_err(),
            "a finished transfer has nothing to cancel"
        );
    }

    #[tokio::test]
    async fn file_channels_open_only_in_the_agents_own_tunnel() {
        let agent = AgentId::from_uuid(uuid::Uuid::from_u128(0xA));
        let session = SessionId::from_uuid(uuid::Uuid::from_u128(0x5));
        let (gateway, _rx) = tunnel(agent, session).await;
        let other = SessionId::from_uuid(uuid::Uuid::from_u128(0x6));
        assert_eq!(
            gateway.open_file_channel(agent, other).unwrap_err(),
            GatewayError::NotConnected
        );
        let stranger = AgentId::from_uuid(uuid::Uuid::from_u128(0xB));
        assert_eq!(
            gateway.open_file_channel(stranger, session).unwrap_err(),
            GatewayError::NotConnected
        );
    }
}
