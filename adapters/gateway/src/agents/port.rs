//! The [`AgentGateway`] port over the registry: tunnels and commands here, file operations
//! in [`super::files`].

use rmm_application::{
    AgentDownload, AgentGateway, ByteStream, FileEntry, FileOpError, GatewayError, OpenReply,
    PtyLink, PtySpec, StdinError, UploadRequest, Uploaded,
};
use rmm_domain::{AgentId, AgentMode, ChannelId, ChannelKind, SessionId, UserId};
use rmm_protocol::{ServerMessage, TunnelDataPayload};
use tokio::sync::oneshot;

use super::WsAgentGateway;
use super::files;
use super::pty::end_pty;
use super::registry::in_tunnel;
use super::stdin::StdinState;

impl AgentGateway for WsAgentGateway {
    fn mode(&self, agent: AgentId) -> Option<AgentMode> {
        let here = self.lock().get(&agent).map(|c| c.mode);
        here.or_else(|| self.elsewhere()?.mode(agent))
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

    fn disconnect(&self, agent: AgentId, why: &'static str) -> Option<AgentMode> {
        let connection = self.lock().remove(&agent)?;
        // Queued after what is already queued; dropping the connection then closes its
        // queue, so its task writes the close frame and ends (or ends at once when full).
        let _ = connection.outbound.try_send(super::Outbound::Close(why));
        tracing::info!(agent_id = %agent, reason = why, "agent connection ended by the server");
        Some(connection.mode)
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
                // Dropping the senders ends every transfer, terminal and stdin of the tunnel
                // (the agent closes its terminals with the tunnel).
                connection.files.clear();
                connection.ptys.clear();
                connection.stdins.clear();
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
        stdin: bool,
    ) -> Result<(), GatewayError> {
        let mut connections = self.lock();
        let connection = in_tunnel(&mut connections, agent, session)?;
        if stdin && !connection.capabilities.command_stdin {
            return Err(GatewayError::Unsupported);
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
                stdin,
                binary_output: connection.capabilities.command_binary_output,
            },
        };
        Self::send(connection, message).inspect_err(|_| {
            let _ = connection.channels.close(channel);
        })?;
        if stdin {
            connection
                .stdins
                .insert(channel.clone(), StdinState::default());
        }
        Ok(())
    }

    async fn command_stdin(
        &self,
        agent: AgentId,
        channel: &ChannelId,
        body: &mut ByteStream,
    ) -> Result<u64, StdinError> {
        self.feed_stdin(agent, channel, body).await
    }

    fn open_pty(
        &self,
        agent: AgentId,
        session: SessionId,
        channel: &ChannelId,
        spec: &PtySpec,
    ) -> Result<PtyLink, GatewayError> {
        self.start_pty(agent, session, channel, spec)
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
            // A terminal is closed on the agent at once (whatever input its control task
            // still holds) and its events end.
            end_pty(connection, channel, None);
            connection.stdins.remove(channel);
            let _ = connection.channels.close(channel);
        }
    }

    fn pending_open(&self, agent: AgentId) -> Option<SessionId> {
        WsAgentGateway::pending_open(self, agent)
    }

    async fn upload_file(
        &self,
        agent: AgentId,
        session: SessionId,
        upload: &UploadRequest,
        body: &mut ByteStream,
    ) -> Result<Uploaded, FileOpError> {
        let link = self.open_file_channel(agent, session)?;
        files::upload(link, upload, body).await
    }

    async fn download_file(
        &self,
        agent: AgentId,
        session: SessionId,
        path: &str,
        offset: u64,
    ) -> Result<AgentDownload, FileOpError> {
        let link = self.open_file_channel(agent, session)?;
        files::download(link, path, offset).await
    }

    async fn list_files(
        &self,
        agent: AgentId,
        session: SessionId,
        path: &str,
    ) -> Result<Vec<FileEntry>, FileOpError> {
        let link = self.open_file_channel(agent, session)?;
        files::list(link, path).await
    }

    async fn upload_status(
        &self,
        agent: AgentId,
        session: SessionId,
        path: &str,
    ) -> Result<u64, FileOpError> {
        let link = self.open_file_channel(agent, session)?;
        files::upload_status(link, path).await
    }
}
