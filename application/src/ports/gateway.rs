//! The live connections to agents: tunnels, commands, and file operations.

use std::future::Future;

use rmm_domain::{AgentId, AgentMode, ChannelId, SessionId, UserId};

use super::{
    AgentDownload, ByteStream, FileEntry, FileOpError, PtyLink, PtySpec, StdinError, UploadRequest,
    Uploaded,
};

/// How an agent answered a `tunnel_open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenReply {
    Ready,
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("agent is not connected")]
    NotConnected,
    #[error("agent already has a tunnel or a tunnel open in flight")]
    Busy,
    #[error("agent disconnected before answering")]
    Disconnected,
    #[error("agent's outbound queue is full")]
    Overloaded,
    #[error("agent does not support this operation")]
    Unsupported,
}

/// The live connections to agents.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait AgentGateway: Send + Sync + 'static {
    /// The mode of a connected agent; `None` when it is not connected.
    fn mode(&self, agent: AgentId) -> Option<AgentMode>;

    /// Sends `tunnel_open` to the agent's current connection and resolves with its answer.
    ///
    /// # Errors
    /// [`GatewayError::NotConnected`], [`GatewayError::Busy`], [`GatewayError::Overloaded`] at
    /// once; [`GatewayError::Disconnected`] when the connection ends before the answer.
    fn open_tunnel(
        &self,
        agent: AgentId,
        session: SessionId,
        tech: UserId,
    ) -> impl Future<Output = Result<OpenReply, GatewayError>> + Send;

    /// Forgets an open that will not be waited for any more and tells the agent to close it,
    /// so a late `tunnel_ready` leaves nothing open.
    fn abandon_open(&self, agent: AgentId, session: SessionId);

    /// Ends the agent's live connection, if any (its key was revoked or replaced): the agent
    /// is sent a close frame with `why` and dropped; an open in flight resolves as
    /// disconnected. The mode the connection had; `None` when it was not connected. The
    /// caller closes its session: the connection's own cleanup does nothing.
    fn disconnect(&self, agent: AgentId, why: &'static str) -> Option<AgentMode>;

    /// Tells the agent to close the tunnel (best effort: a gone agent has nothing to close).
    fn close_tunnel(&self, agent: AgentId, session: SessionId);

    /// Opens `channel` in the agent's tunnel `session` and sends it the command (the
    /// reference `terminal` frame; `timeout_secs` only to agents that enforce it). With
    /// `stdin`, the command's stdin stays open for [`Self::command_stdin`].
    ///
    /// # Errors
    /// [`GatewayError::NotConnected`]; [`GatewayError::Busy`] when the agent's tunnel is not
    /// `session` or the channel is taken or over the limit; [`GatewayError::Overloaded`];
    /// [`GatewayError::Unsupported`] for `stdin` to an agent without `command-stdin`.
    fn send_command(
        &self,
        agent: AgentId,
        session: SessionId,
        channel: &ChannelId,
        command: &str,
        timeout_secs: u64,
        stdin: bool,
    ) -> Result<(), GatewayError>;

    /// Streams `body` to the stdin of the command on `channel` (sent with `stdin`), then
    /// closes its stdin (EOF) — also when `body` breaks off. At most a window of bytes is in
    /// flight to the agent, so a command that does not read slows the client down. The
    /// number of bytes the agent took.
    ///
    /// # Errors
    /// [`StdinError`].
    fn command_stdin(
        &self,
        agent: AgentId,
        channel: &ChannelId,
        body: &mut ByteStream,
    ) -> impl Future<Output = Result<u64, StdinError>> + Send;

    /// Opens `channel` (an interactive terminal) in the agent's tunnel `session` and sends
    /// `pty_open`; the agent's answer comes as the link's first event.
    ///
    /// # Errors
    /// [`GatewayError::NotConnected`]; [`GatewayError::Busy`] (not `session`'s tunnel, the
    /// channel taken, over the limit); [`GatewayError::Overloaded`];
    /// [`GatewayError::Unsupported`] for an agent without `pty`.
    fn open_pty(
        &self,
        agent: AgentId,
        session: SessionId,
        channel: &ChannelId,
        spec: &PtySpec,
    ) -> Result<PtyLink, GatewayError>;

    /// Asks the agent to kill the command on `channel`. False when the agent cannot be asked
    /// (not connected, or it does not speak the cancel extension).
    fn cancel_command(&self, agent: AgentId, channel: &ChannelId) -> bool;

    /// Forgets a command channel the server ended on its own (the agent's later frames on
    /// it are then ignored).
    fn release_channel(&self, agent: AgentId, channel: &ChannelId);

    /// The session whose `tunnel_open` is in flight on the agent's connection (sent, not yet
    /// answered), if any. With [`Self::mode`] this tells who holds an agent.
    fn pending_open(&self, agent: AgentId) -> Option<SessionId>;

    /// Streams `body` to `upload.path` on the agent, in `session`'s tunnel. The agent puts
    /// the file in place only when every byte arrived and the SHA-256 matches (the one given,
    /// or for a whole-file upload without one, the hash of what was streamed). On an error,
    /// what is left of `body` is left unread.
    ///
    /// # Errors
    /// [`FileOpError`]; [`FileOpError::ClientAborted`] when `body` broke off.
    fn upload_file(
        &self,
        agent: AgentId,
        session: SessionId,
        upload: &UploadRequest,
        body: &mut ByteStream,
    ) -> impl Future<Output = Result<Uploaded, FileOpError>> + Send;

    /// Starts downloading `path` from byte `offset`: resolves once the agent described the
    /// file; the bytes stream as they are read (see [`AgentDownload`]).
    ///
    /// # Errors
    /// [`FileOpError`] before the first byte; later errors end the stream.
    fn download_file(
        &self,
        agent: AgentId,
        session: SessionId,
        path: &str,
        offset: u64,
    ) -> impl Future<Output = Result<AgentDownload, FileOpError>> + Send;

    /// The entries of the directory `path` on the agent.
    ///
    /// # Errors
    /// [`FileOpError`].
    fn list_files(
        &self,
        agent: AgentId,
        session: SessionId,
        path: &str,
    ) -> impl Future<Output = Result<Vec<FileEntry>, FileOpError>> + Send;

    /// How many bytes of an interrupted upload to `path` the agent holds (0 when none).
    ///
    /// # Errors
    /// [`FileOpError`].
    fn upload_status(
        &self,
        agent: AgentId,
        session: SessionId,
        path: &str,
    ) -> impl Future<Output = Result<u64, FileOpError>> + Send;
}
