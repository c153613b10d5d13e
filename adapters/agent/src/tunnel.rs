//! The agent's tunnel state for one connection: the domain's [`AgentMode`] and the open
//! [`Channels`], driven by decoded server frames. It answers with [`Action`]s (frames to send,
//! commands to start or stop) and does no I/O, so every rule is tested here with scripted
//! frames.
//!
//! It must not know about sockets, timers, processes or files. The work attached to channels
//! (commands, file operations) is run and stopped by the connection from the actions returned
//! here; a channel stays open until its work has sent its final frame
//! ([`TunnelState::release`]), except that a `file_cancel` closes its channel at once (the
//! server considers it closed when it sends the cancel, and a cancelled operation sends no
//! final frame).

use std::time::Duration;

use rmm_domain::{AgentMode, Channel, ChannelId, ChannelKind, Channels, ModeError, SessionId};

use rmm_protocol::{AgentMessage, DataFrame, FileErrorCode, ServerMessage, TunnelDataPayload};

use rmm_protocol::limits::MAX_CHANNELS;

/// Told to the server for `tunnel_data` outside a tunnel: nothing runs without one.
pub const NO_TUNNEL: &str = "no tunnel is open";

/// What the connection must do after a server frame, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(AgentMessage),
    /// Run `command` on `channel` (already opened here); `timeout` from the frame.
    Run {
        channel: ChannelId,
        command: String,
        timeout: Option<Duration>,
        /// Extension (`command-stdin`): its stdin is fed by the server.
        stdin: bool,
        /// Extension (`command-binary-output`): its output goes in binary data frames.
        binary_output: bool,
    },
    /// A binary data frame on a command's channel: bytes for its stdin.
    Stdin {
        channel: ChannelId,
        offset: u64,
        data: bytes::Bytes,
    },
    /// `stdin_end` on a command's channel.
    StdinEnd(ChannelId),
    /// `pty_open`: start a terminal on `channel` (already opened here as a Pty channel).
    OpenPty(PtyRequest),
    /// What the server sends to a running terminal.
    PtyInput {
        channel: ChannelId,
        input: PtyInput,
    },
    /// `command_cancel`: kill the command on this open channel.
    Cancel(ChannelId),
    /// The tunnel closed: kill every command and terminal and stop every file operation
    /// (their channels are already closed).
    StopAll,
    /// Start a file operation on `channel` (already opened here as a File channel).
    StartFile {
        channel: ChannelId,
        op: FileOp,
    },
    /// Hand `input` to the file operation running on this open File channel.
    FileInput {
        channel: ChannelId,
        input: FileInput,
    },
    /// `file_cancel`: stop the file operation on `channel`; the channel is already closed.
    CancelFile(ChannelId),
}

/// A file operation a server frame asks for. Paths are as the server sent them: checking
/// them is the file module's work (its errors are `file_error` codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOp {
    /// `file_upload`.
    Upload { path: String, offset: u64 },
    /// `file_download`.
    Download { path: String, offset: u64 },
    /// `file_list`.
    List { path: String },
    /// `file_upload_status`.
    UploadStatus { path: String },
}

/// What the server sends to a running file operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileInput {
    /// A binary data frame of an upload.
    Data { offset: u64, data: bytes::Bytes },
    /// `file_upload_end`.
    UploadEnd { size: u64, sha256: Option<String> },
    /// `file_ack` of a download.
    Ack { offset: u64 },
}

/// A terminal a `pty_open` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtyRequest {
    pub channel: ChannelId,
    pub cols: u16,
    pub rows: u16,
    pub term: String,
    /// `None`: the login shell of the agent's user.
    pub command: Option<String>,
}

/// What the server sends to a running terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtyInput {
    /// A binary data frame: input bytes.
    Data { offset: u64, data: bytes::Bytes },
    /// `channel_ack`: the server took the output before `offset`.
    Ack { offset: u64 },
    /// `pty_resize`.
    Resize { cols: u16, rows: u16 },
    /// `pty_close`: hang up, then TERM, then KILL; `pty_exit` follows.
    Close,
}

/// Told to the server for `pty_open` where terminals are not built (no ConPTY yet).
pub const PTY_UNSUPPORTED: &str = "terminals are not supported on this platform yet";

/// The tunnel state of one connection; a new connection starts from [`TunnelState::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelState {
    mode: AgentMode,
    channels: Channels,
}

impl Default for TunnelState {
    fn default() -> Self {
        Self {
            mode: AgentMode::Heartbeat,
            channels: Channels::with_limit(MAX_CHANNELS),
        }
    }
}

impl TunnelState {
    #[must_use]
    pub fn mode(&self) -> AgentMode {
        self.mode
    }

    #[must_use]
    pub fn channels(&self) -> &Channels {
        &self.channels
    }

    /// Applies one server frame; what to do about it, in order.
    pub fn handle(&mut self, message: ServerMessage) -> Vec<Action> {
        match message {
            ServerMessage::TunnelOpen { session_id, .. } => self
                .open(session_id)
                .into_iter()
                .map(Action::Send)
                .collect(),
            ServerMessage::TunnelClose { session_id } => match self.close(&session_id) {
                Some(_closed) => vec![Action::StopAll],
                None => Vec::new(),
            },
            ServerMessage::TunnelData { channel_id, data } => match self.mode {
                AgentMode::Heartbeat => refuse(&channel_id, NO_TUNNEL),
                AgentMode::Tunnel { .. } => self.data(&channel_id, data),
            },
            ServerMessage::CommandCancel { channel_id } => self.cancel(&channel_id),
            ServerMessage::FileUpload {
                channel_id,
                path,
                offset,
            } => self.start_file(&channel_id, FileOp::Upload { path, offset }),
            ServerMessage::FileDownload {
                channel_id,
                path,
                offset,
            } => self.start_file(&channel_id, FileOp::Download { path, offset }),
            ServerMessage::FileList { channel_id, path } => {
                self.start_file(&channel_id, FileOp::List { path })
            }
            ServerMessage::FileUploadStatus { channel_id, path } => {
                self.start_file(&channel_id, FileOp::UploadStatus { path })
            }
            ServerMessage::FileUploadEnd {
                channel_id,
                size,
                sha256,
            } => match self.open_file_channel(&channel_id) {
                Some(channel) => vec![Action::FileInput {
                    channel,
                    input: FileInput::UploadEnd { size, sha256 },
                }],
                // The upload already failed (its `file_error` crossed this frame) or never
                // existed: say so, so that a server that missed the error does not wait.
                None => refuse_file(
                    &channel_id,
                    FileErrorCode::Io,
                    "no file transfer on this channel",
                ),
            },
            ServerMessage::FileAck { channel_id, offset } => {
                match self.open_file_channel(&channel_id) {
                    Some(channel) => vec![Action::FileInput {
                        channel,
                        input: FileInput::Ack { offset },
                    }],
                    // The download ended while the ack was on its way.
                    None => Vec::new(),
                }
            }
            ServerMessage::FileCancel { channel_id } => self.cancel_file(&channel_id),
            message @ (ServerMessage::PtyOpen { .. }
            | ServerMessage::PtyResize { .. }
            | ServerMessage::PtyClose { .. }
            | ServerMessage::ChannelAck { .. }
            | ServerMessage::StdinEnd { .. }) => self.stream(message),
        }
    }

    /// The terminal and stdin extensions' frames (`pty`, `command-stdin`).
    fn stream(&mut self, message: ServerMessage) -> Vec<Action> {
        match message {
            ServerMessage::PtyOpen {
                channel_id,
                cols,
                rows,
                term,
                command,
            } => self.open_pty(&channel_id, cols, rows, term, command),
            ServerMessage::PtyResize {
                channel_id,
                cols,
                rows,
            } => self.pty_input(&channel_id, PtyInput::Resize { cols, rows }),
            ServerMessage::PtyClose { channel_id } => self.pty_input(&channel_id, PtyInput::Close),
            ServerMessage::ChannelAck { channel_id, offset } => {
                self.pty_input(&channel_id, PtyInput::Ack { offset })
            }
            ServerMessage::StdinEnd { channel_id } => self
                .open_channel(&channel_id, ChannelKind::Terminal)
                .map(Action::StdinEnd)
                .into_iter()
                .collect(),
            // Routed to the file operations and commands by `handle`.
            _ => Vec::new(),
        }
    }

    /// A binary data frame: input of the file operation, terminal or command (stdin) on its
    /// channel. Frames on channels that are not open are dropped: after a `file_error`, a
    /// cancel or the end of a process, up to a window of data the server sent before it knew
    /// is still on its way.
    pub fn data_frame(&self, frame: DataFrame) -> Vec<Action> {
        let DataFrame {
            channel_id,
            offset,
            data,
        } = frame;
        if let Some(channel) = self.open_file_channel(&channel_id) {
            return vec![Action::FileInput {
                channel,
                input: FileInput::Data { offset, data },
            }];
        }
        if let Some(channel) = self.open_channel(&channel_id, ChannelKind::Pty) {
            return vec![Action::PtyInput {
                channel,
                input: PtyInput::Data { offset, data },
            }];
        }
        if let Some(channel) = self.open_channel(&channel_id, ChannelKind::Terminal) {
            return vec![Action::Stdin {
                channel,
                offset,
                data,
            }];
        }
        tracing::debug!(channel_id = %clip(&channel_id), "data frame on no open channel dropped");
        Vec::new()
    }

    /// The command on `channel` sent its final frame: the channel closes (and its id may be
    /// used again). Returns whether it was open.
    pub fn release(&mut self, channel: &ChannelId) -> bool {
        self.channels.close(channel).is_ok()
    }

    /// The connection ended: back to heartbeat mode with no channels. Returns what was open so
    /// the caller can stop whatever runs in it.
    pub fn reset(&mut self) -> Vec<Channel> {
        if let Some(session) = self.mode.session() {
            tracing::info!(session_id = %session, "tunnel dropped with the connection");
        }
        self.mode = AgentMode::Heartbeat;
        self.channels.close_all()
    }

    fn open(&mut self, session_id: String) -> Vec<AgentMessage> {
        let refuse = |error: &str| {
            vec![AgentMessage::TunnelError {
                // The refused session's own id: the server matches it to its pending open.
                channel_id: clip(&session_id),
                error: error.to_owned(),
            }]
        };
        let session = match SessionId::parse(&session_id) {
            Ok(session) => session,
            Err(e) => {
                tracing::warn!(error = %e, "tunnel_open with a bad session id refused");
                return refuse("invalid session id");
            }
        };
        match self.mode.open(session) {
            Ok(mode) => {
                self.mode = mode;
                // A fresh tunnel starts with no channels (a previous one cleared them already;
                // this keeps the invariant even if that ever changes).
                self.channels.close_all();
                tracing::info!(session_id = %session, "tunnel opened");
                vec![AgentMessage::TunnelReady { session_id }]
            }
            Err(ModeError::Busy { current }) => {
                tracing::warn!(session_id = %session, current = %current, "tunnel_open refused: a tunnel is already open");
                refuse("agent busy: another tunnel is already open")
            }
            Err(e @ (ModeError::NoTunnel | ModeError::OtherSession { .. })) => {
                // `open` reports only Busy; kept exhaustive so a new error is handled here.
                tracing::warn!(session_id = %session, error = %e, "tunnel_open refused");
                refuse("tunnel could not be opened")
            }
        }
    }

    /// `Some(closed channels)` when the tunnel closed, `None` when the close was ignored.
    fn close(&mut self, session_id: &str) -> Option<Vec<Channel>> {
        let Ok(session) = SessionId::parse(session_id) else {
            tracing::warn!(session_id = %clip(session_id), "tunnel_close with a bad session id ignored");
            return None;
        };
        match self.mode.close(session) {
            Ok(mode) => {
                self.mode = mode;
                let closed = self.channels.close_all();
                tracing::info!(session_id = %session, channels = closed.len(), "tunnel closed");
                Some(closed)
            }
            Err(e) => {
                // A late or duplicate close (the server's view raced ours): nothing to undo.
                tracing::debug!(session_id = %session, error = %e, "tunnel_close ignored");
                None
            }
        }
    }

    /// `tunnel_data` inside the tunnel: a `terminal` frame opens its channel and runs.
    fn data(&mut self, channel_id: &str, data: TunnelDataPayload) -> Vec<Action> {
        let (command, timeout_secs, stdin, binary_output) = match data {
            TunnelDataPayload::Terminal {
                command,
                timeout_secs,
                stdin,
                binary_output,
            } => (command, timeout_secs, stdin, binary_output),
            TunnelDataPayload::TerminalOutput(_) => {
                return refuse(channel_id, "terminal_output is sent by agents, not to them");
            }
        };
        let channel = match ChannelId::parse(channel_id) {
            Ok(channel) => channel,
            Err(e) => {
                tracing::warn!(error = %e, "terminal frame with a bad channel id refused");
                return refuse(channel_id, "invalid channel id");
            }
        };
        if let Err(e) = self.channels.open(channel.clone(), ChannelKind::Terminal) {
            // A duplicate id or the channel limit: the running commands are untouched.
            tracing::warn!(channel_id = %channel, error = %e, "terminal frame refused");
            return refuse(channel_id, &e.to_string());
        }
        vec![Action::Run {
            channel,
            command,
            // Literal, 0 included (kill at once): the server validates what it asks for.
            timeout: timeout_secs.map(Duration::from_secs),
            stdin,
            binary_output,
        }]
    }

    /// `pty_open`: only in a tunnel, on a fresh channel, within the limit (terminals count
    /// like commands), and only where terminals are built.
    fn open_pty(
        &mut self,
        channel_id: &str,
        cols: u16,
        rows: u16,
        term: String,
        command: Option<String>,
    ) -> Vec<Action> {
        if matches!(self.mode, AgentMode::Heartbeat) {
            return refuse(channel_id, NO_TUNNEL);
        }
        if cfg!(not(unix)) {
            return refuse(channel_id, PTY_UNSUPPORTED);
        }
        let channel = match ChannelId::parse(channel_id) {
            Ok(channel) => channel,
            Err(e) => {
                tracing::warn!(error = %e, "pty_open with a bad channel id refused");
                return refuse(channel_id, "invalid channel id");
            }
        };
        if let Err(e) = self.channels.open(channel.clone(), ChannelKind::Pty) {
            tracing::warn!(channel_id = %channel, error = %e, "pty_open refused");
            return refuse(channel_id, &e.to_string());
        }
        vec![Action::OpenPty(PtyRequest {
            channel,
            cols,
            rows,
            term,
            command,
        })]
    }

    /// Input for the terminal on `channel_id`; ignored when none runs there (it ended while
    /// the frame was on its way).
    fn pty_input(&self, channel_id: &str, input: PtyInput) -> Vec<Action> {
        match self.open_channel(channel_id, ChannelKind::Pty) {
            Some(channel) => vec![Action::PtyInput { channel, input }],
            None => {
                tracing::debug!(channel_id = %clip(channel_id), "terminal frame for no terminal ignored");
                Vec::new()
            }
        }
    }

    /// A file frame that opens a channel (`file_upload`, `file_download`, `file_list`,
    /// `file_upload_status`): only in a tunnel, on a fresh channel, within the limit.
    fn start_file(&mut self, channel_id: &str, op: FileOp) -> Vec<Action> {
        if matches!(self.mode, AgentMode::Heartbeat) {
            return refuse_file(channel_id, FileErrorCode::Io, NO_TUNNEL);
        }
        let channel = match ChannelId::parse(channel_id) {
            Ok(channel) => channel,
            Err(e) => {
                tracing::warn!(error = %e, "file frame with a bad channel id refused");
                return refuse_file(channel_id, FileErrorCode::Io, "invalid channel id");
            }
        };
        if let Err(e) = self.channels.open(channel.clone(), ChannelKind::File) {
            // A duplicate id or the channel limit: the running work is untouched.
            tracing::warn!(channel_id = %channel, error = %e, "file frame refused");
            return refuse_file(channel_id, FileErrorCode::Io, &e.to_string());
        }
        vec![Action::StartFile { channel, op }]
    }

    /// `file_cancel`: the channel closes now (the server's view) and its operation stops.
    fn cancel_file(&mut self, channel_id: &str) -> Vec<Action> {
        match self.open_file_channel(channel_id) {
            Some(channel) => {
                // Cannot fail: the channel was just found open.
                let _ = self.channels.close(&channel);
                vec![Action::CancelFile(channel)]
            }
            None => {
                // The operation already ended (its final frame crossed the cancel).
                tracing::debug!(channel_id = %clip(channel_id), "file_cancel for no file transfer ignored");
                Vec::new()
            }
        }
    }

    /// `channel_id` if it names an open File channel.
    fn open_file_channel(&self, channel_id: &str) -> Option<ChannelId> {
        self.open_channel(channel_id, ChannelKind::File)
    }

    /// `channel_id` if it names an open channel of `kind`.
    fn open_channel(&self, channel_id: &str, kind: ChannelKind) -> Option<ChannelId> {
        ChannelId::parse(channel_id)
            .ok()
            .filter(|channel| self.channels.check(channel, kind).is_ok())
    }

    fn cancel(&self, channel_id: &str) -> Vec<Action> {
        let open = ChannelId::parse(channel_id)
            .ok()
            .filter(|channel| self.channels.check(channel, ChannelKind::Terminal).is_ok());
        match open {
            Some(channel) => vec![Action::Cancel(channel)],
            None => {
                // The command already ended (its final frame crossed the cancel) or never ran
                // here: nothing to kill, and the server learns the end from that final frame.
                tracing::debug!(channel_id = %clip(channel_id), "command_cancel for no running command ignored");
                Vec::new()
            }
        }
    }
}

fn refuse(channel_id: &str, error: &str) -> Vec<Action> {
    tracing::debug!(channel_id = %clip(channel_id), error, "tunnel_data refused");
    vec![Action::Send(AgentMessage::TunnelError {
        channel_id: clip(channel_id),
        error: error.to_owned(),
    })]
}

/// A file frame refused before any operation started: `file_error` on its channel (the server
/// routes file channels' errors by that message, not by `tunnel_error`).
fn refuse_file(channel_id: &str, code: FileErrorCode, message: &str) -> Vec<Action> {
    tracing::debug!(channel_id = %clip(channel_id), code = code.as_str(), message, "file frame refused");
    vec![Action::Send(AgentMessage::FileError {
        channel_id: clip(channel_id),
        code,
        message: message.to_owned(),
    })]
}

/// Ids echoed back are bounded so a hostile frame cannot make us send (or log) megabytes.
fn clip(id: &str) -> String {
    id.chars().take(128).collect()
}

#[cfg(test)]
mod tests;
