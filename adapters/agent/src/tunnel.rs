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

pub use rmm_protocol::limits::MAX_CHANNELS;

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
    },
    /// `command_cancel`: kill the command on this open channel.
    Cancel(ChannelId),
    /// The tunnel closed: kill every command and stop every file operation (their channels
    /// are already closed).
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
                None => refuse_file(&channel_id, FILE_IO, "no file transfer on this channel"),
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
        }
    }

    /// A binary data frame: input of the file operation on its channel. Frames on channels
    /// that are not open File channels are dropped: after a `file_error` or a cancel, up to a
    /// window of data the server sent before it knew is still on its way.
    pub fn data_frame(&self, frame: DataFrame) -> Vec<Action> {
        let DataFrame {
            channel_id,
            offset,
            data,
        } = frame;
        match self.open_file_channel(&channel_id) {
            Some(channel) => vec![Action::FileInput {
                channel,
                input: FileInput::Data { offset, data },
            }],
            None => {
                tracing::debug!(channel_id = %clip(&channel_id), "data frame on no file transfer dropped");
                Vec::new()
            }
        }
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
        let (command, timeout_secs) = match data {
            TunnelDataPayload::Terminal {
                command,
                timeout_secs,
            } => (command, timeout_secs),
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
        }]
    }

    /// A file frame that opens a channel (`file_upload`, `file_download`, `file_list`,
    /// `file_upload_status`): only in a tunnel, on a fresh channel, within the limit.
    fn start_file(&mut self, channel_id: &str, op: FileOp) -> Vec<Action> {
        if matches!(self.mode, AgentMode::Heartbeat) {
            return refuse_file(channel_id, FILE_IO, NO_TUNNEL);
        }
        let channel = match ChannelId::parse(channel_id) {
            Ok(channel) => channel,
            Err(e) => {
                tracing::warn!(error = %e, "file frame with a bad channel id refused");
                return refuse_file(channel_id, FILE_IO, "invalid channel id");
            }
        };
        if let Err(e) = self.channels.open(channel.clone(), ChannelKind::File) {
            // A duplicate id or the channel limit: the running work is untouched.
            tracing::warn!(channel_id = %channel, error = %e, "file frame refused");
            return refuse_file(channel_id, FILE_IO, &e.to_string());
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
        ChannelId::parse(channel_id)
            .ok()
            .filter(|channel| self.channels.check(channel, ChannelKind::File).is_ok())
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

/// The `file_error` code of failures that have no more precise one (the protocol's list).
const FILE_IO: FileErrorCode = FileErrorCode::Io;

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
mod tests {
    use uuid::Uuid;

    use super::*;

    const S1: &str = "550e8400-e29b-41d4-a716-446655440000";
    const S2: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

    fn open(session: &str) -> ServerMessage {
        ServerMessage::TunnelOpen {
            session_id: session.to_owned(),
            tech_id: Uuid::from_u128(9),
        }
    }

    fn close(session: &str) -> ServerMessage {
        ServerMessage::TunnelClose {
            session_id: session.to_owned(),
        }
    }

    fn session(s: &str) -> SessionId {
        SessionId::parse(s).unwrap()
    }

    fn channel(id: &str) -> ChannelId {
        ChannelId::parse(id).unwrap()
    }

    fn terminal(channel: &str, timeout_secs: Option<u64>) -> ServerMessage {
        ServerMessage::TunnelData {
            channel_id: channel.to_owned(),
            data: TunnelDataPayload::Terminal {
                command: "ls".into(),
                timeout_secs,
            },
        }
    }

    fn cancel(channel: &str) -> ServerMessage {
        ServerMessage::CommandCancel {
            channel_id: channel.to_owned(),
        }
    }

    fn error_on(channel: &str, error: &str) -> Vec<Action> {
        vec![Action::Send(AgentMessage::TunnelError {
            channel_id: channel.into(),
            error: error.into(),
        })]
    }

    #[test]
    fn an_open_enters_tunnel_mode_and_answers_ready() {
        let mut state = TunnelState::default();
        assert_eq!(
            state.handle(open(S1)),
            vec![Action::Send(AgentMessage::TunnelReady {
                session_id: S1.into()
            })]
        );
        assert_eq!(
            state.mode(),
            AgentMode::Tunnel {
                session: session(S1)
            }
        );
    }

    #[test]
    fn a_second_open_is_refused_on_its_own_session_and_the_first_tunnel_is_untouched() {
        let mut state = TunnelState::default();
        state.handle(open(S1));
        state.handle(terminal("terminal-1", None));
        let before = state.clone();
        let reply = state.handle(open(S2));
        assert!(matches!(
            reply.as_slice(),
            [Action::Send(AgentMessage::TunnelError { channel_id, error })] if channel_id == S2 && error.contains("busy")
        ));
        assert_eq!(state, before);
        // The same session again is a protocol error too, not a second ready.
        assert!(matches!(
            state.handle(open(S1)).as_slice(),
            [Action::Send(AgentMessage::TunnelError { channel_id, .. })] if channel_id == S1
        ));
        assert_eq!(state, before);
    }

    #[test]
    fn a_close_returns_to_heartbeat_clears_the_channels_and_stops_every_command() {
        let mut state = TunnelState::default();
        state.handle(open(S1));
        state.handle(terminal("terminal-1", None));
        assert_eq!(state.handle(close(S1)), vec![Action::StopAll]);
        assert_eq!(state.mode(), AgentMode::Heartbeat);
        assert!(state.channels().is_empty());
        // And a new tunnel may open.
        assert!(matches!(
            state.handle(open(S2)).as_slice(),
            [Action::Send(AgentMessage::TunnelReady { .. })]
        ));
    }

    #[test]
    fn a_close_of_another_session_or_in_heartbeat_mode_is_ignored() {
        let mut state = TunnelState::default();
        assert_eq!(state.handle(close(S1)), vec![]);
        assert_eq!(state, TunnelState::default());
        state.handle(open(S1));
        let before = state.clone();
        assert_eq!(state.handle(close(S2)), vec![]);
        assert_eq!(state.handle(close("not-a-uuid")), vec![]);
        assert_eq!(state, before);
    }

    #[test]
    fn a_terminal_frame_in_a_tunnel_opens_its_channel_and_runs_with_the_frames_timeout() {
        let mut state = TunnelState::default();
        state.handle(open(S1));
        assert_eq!(
            state.handle(terminal("cmd-1", Some(30))),
            vec![Action::Run {
                channel: channel("cmd-1"),
                command: "ls".into(),
                timeout: Some(Duration::from_secs(30)),
            }]
        );
        assert_eq!(
            state.handle(terminal("cmd-2", None)),
            vec![Action::Run {
                channel: channel("cmd-2"),
                command: "ls".into(),
                timeout: None,
            }]
        );
        assert_eq!(state.channels().len(), 2);
        assert!(
            state
                .channels()
                .check(&channel("cmd-1"), ChannelKind::Terminal)
                .is_ok()
        );
    }

    #[test]
    fn a_terminal_frame_outside_a_tunnel_is_refused_on_its_channel() {
        let mut idle = TunnelState::default();
        assert_eq!(
            idle.handle(terminal("terminal-1", None)),
            error_on("terminal-1", NO_TUNNEL)
        );
        assert!(idle.channels().is_empty());
        // A cancel outside a tunnel has nothing to kill.
        assert_eq!(idle.handle(cancel("terminal-1")), vec![]);
    }

    #[test]
    fn a_duplicate_channel_the_limit_or_a_bad_id_is_refused_and_running_commands_stay() {
        let mut state = TunnelState::default();
        state.handle(open(S1));
        state.handle(terminal("cmd-1", None));
        assert_eq!(
            state.handle(terminal("cmd-1", None)),
            error_on("cmd-1", "channel cmd-1 is already open")
        );
        for n in 2..=MAX_CHANNELS {
            assert!(matches!(
                state.handle(terminal(&format!("cmd-{n}"), None)).as_slice(),
                [Action::Run { .. }]
            ));
        }
        assert_eq!(
            state.handle(terminal("cmd-x", None)),
            error_on(
                "cmd-x",
                &format!("too many open channels (limit {MAX_CHANNELS})")
            )
        );
        assert_eq!(
            state.handle(terminal("bad id!", None)),
            error_on("bad id!", "invalid channel id")
        );
        assert_eq!(state.channels().len(), MAX_CHANNELS);
        // A finished command frees its channel for the next one.
        assert!(state.release(&channel("cmd-1")));
        assert!(!state.release(&channel("cmd-1")));
        assert!(matches!(
            state.handle(terminal("cmd-x", None)).as_slice(),
            [Action::Run { .. }]
        ));
    }

    #[test]
    fn output_frames_from_the_server_are_refused() {
        let mut state = TunnelState::default();
        state.handle(open(S1));
        let frame = ServerMessage::TunnelData {
            channel_id: "cmd-1".into(),
            data: TunnelDataPayload::TerminalOutput(rmm_protocol::TerminalOutput::default()),
        };
        assert!(matches!(
            state.handle(frame).as_slice(),
            [Action::Send(AgentMessage::TunnelError { channel_id, .. })] if channel_id == "cmd-1"
        ));
        assert!(state.channels().is_empty());
    }

    #[test]
    fn a_cancel_targets_only_an_open_terminal_channel() {
        let mut state = TunnelState::default();
        state.handle(open(S1));
        state.handle(terminal("cmd-1", None));
        assert_eq!(
            state.handle(cancel("cmd-1")),
            vec![Action::Cancel(channel("cmd-1"))]
        );
        // The channel stays open until the command's final frame releases it.
        assert_eq!(state.channels().len(), 1);
        assert_eq!(state.handle(cancel("cmd-2")), vec![]);
        assert_eq!(state.handle(cancel("bad id!")), vec![]);
        state.release(&channel("cmd-1"));
        assert_eq!(state.handle(cancel("cmd-1")), vec![]);
    }

    #[test]
    fn an_open_with_a_bad_session_id_is_refused_and_changes_nothing() {
        let mut state = TunnelState::default();
        assert!(matches!(
            state.handle(open("nope")).as_slice(),
            [Action::Send(AgentMessage::TunnelError { channel_id, error })] if channel_id == "nope" && error == "invalid session id"
        ));
        assert_eq!(state, TunnelState::default());
        let long = "x".repeat(10_000);
        assert!(matches!(
            state.handle(open(&long)).as_slice(),
            [Action::Send(AgentMessage::TunnelError { channel_id, .. })] if channel_id.len() == 128
        ));
    }

    fn upload(channel: &str, path: &str, offset: u64) -> ServerMessage {
        ServerMessage::FileUpload {
            channel_id: channel.to_owned(),
            path: path.to_owned(),
            offset,
        }
    }

    fn file_error_on(channel: &str, message: &str) -> Vec<Action> {
        vec![Action::Send(AgentMessage::FileError {
            channel_id: channel.into(),
            code: FileErrorCode::Io,
            message: message.into(),
        })]
    }

    fn data(channel: &str, offset: u64) -> DataFrame {
        DataFrame {
            channel_id: channel.into(),
            offset,
            data: bytes::Bytes::from_static(b"abc"),
        }
    }

    #[test]
    fn each_file_request_opens_a_file_channel_and_starts_its_operation() {
        let mut state = TunnelState::default();
        state.handle(open(S1));
        let requests = [
            (
                upload("file-1", "/a", 7),
                FileOp::Upload {
                    path: "/a".into(),
                    offset: 7,
                },
            ),
            (
                ServerMessage::FileDownload {
                    channel_id: "file-2".into(),
                    path: "/b".into(),
                    offset: 0,
                },
                FileOp::Download {
                    path: "/b".into(),
                    offset: 0,
                },
            ),
            (
                ServerMessage::FileList {
                    channel_id: "file-3".into(),
                    path: "/".into(),
                },
                FileOp::List { path: "/".into() },
            ),
            (
                ServerMessage::FileUploadStatus {
                    channel_id: "file-4".into(),
                    path: "/a".into(),
                },
                FileOp::UploadStatus { path: "/a".into() },
            ),
        ];
        for (n, (request, op)) in requests.into_iter().enumerate() {
            let id = format!("file-{}", n + 1);
            assert_eq!(
                state.handle(request),
                vec![Action::StartFile {
                    channel: channel(&id),
                    op
                }]
            );
            assert!(
                state
                    .channels()
                    .check(&channel(&id), ChannelKind::File)
                    .is_ok()
            );
        }
        // Commands and transfers share the tunnel: a command runs beside them.
        assert!(matches!(
            state.handle(terminal("cmd-1", None)).as_slice(),
            [Action::Run { .. }]
        ));
        assert_eq!(state.channels().len(), 5);
    }

    #[test]
    fn file_requests_outside_a_tunnel_or_on_a_taken_channel_are_file_errors() {
        let mut state = TunnelState::default();
        assert_eq!(
            state.handle(upload("file-1", "/a", 0)),
            file_error_on("file-1", NO_TUNNEL)
        );
        state.handle(open(S1));
        state.handle(terminal("cmd-1", None));
        assert_eq!(
            state.handle(upload("cmd-1", "/a", 0)),
            file_error_on("cmd-1", "channel cmd-1 is already open")
        );
        assert_eq!(
            state.handle(upload("bad id!", "/a", 0)),
            file_error_on("bad id!", "invalid channel id")
        );
        for n in 2..=MAX_CHANNELS {
            state.handle(upload(&format!("file-{n}"), "/a", 0));
        }
        assert_eq!(
            state.handle(upload("file-x", "/a", 0)),
            file_error_on(
                "file-x",
                &format!("too many open channels (limit {MAX_CHANNELS})")
            )
        );
    }

    #[test]
    fn data_end_and_acks_go_to_the_operation_on_an_open_file_channel_only() {
        let mut state = TunnelState::default();
        state.handle(open(S1));
        state.handle(upload("file-1", "/a", 0));
        state.handle(terminal("cmd-1", None));
        assert_eq!(
            state.data_frame(data("file-1", 0)),
            vec![Action::FileInput {
                channel: channel("file-1"),
                input: FileInput::Data {
                    offset: 0,
                    data: bytes::Bytes::from_static(b"abc")
                }
            }]
        );
        let end = |id: &str| ServerMessage::FileUploadEnd {
            channel_id: id.into(),
            size: 3,
            sha256: None,
        };
        assert_eq!(
            state.handle(end("file-1")),
            vec![Action::FileInput {
                channel: channel("file-1"),
                input: FileInput::UploadEnd {
                    size: 3,
                    sha256: None
                }
            }]
        );
        let ack = |id: &str| ServerMessage::FileAck {
            channel_id: id.into(),
            offset: 9,
        };
        assert_eq!(
            state.handle(ack("file-1")),
            vec![Action::FileInput {
                channel: channel("file-1"),
                input: FileInput::Ack { offset: 9 }
            }]
        );
        // Late data and acks for no transfer (or for a command) are dropped without a word;
        // an end is answered, so a server that missed the upload's error does not wait.
        assert_eq!(state.data_frame(data("file-9", 0)), vec![]);
        assert_eq!(state.data_frame(data("cmd-1", 0)), vec![]);
        assert_eq!(state.handle(ack("file-9")), vec![]);
        assert_eq!(
            state.handle(end("file-9")),
            file_error_on("file-9", "no file transfer on this channel")
        );
    }

    #[test]
    fn a_file_cancel_closes_the_channel_at_once_and_only_for_file_channels() {
        let mut state = TunnelState::default();
        state.handle(open(S1));
        state.handle(upload("file-1", "/a", 0));
        state.handle(terminal("cmd-1", None));
        let cancel_file = |id: &str| ServerMessage::FileCancel {
            channel_id: id.into(),
        };
        assert_eq!(
            state.handle(cancel_file("file-1")),
            vec![Action::CancelFile(channel("file-1"))]
        );
        assert_eq!(state.channels().len(), 1);
        // The id may be used again right away (the server's view: the transfer is over).
        assert!(matches!(
            state.handle(upload("file-1", "/a", 3)).as_slice(),
            [Action::StartFile { .. }]
        ));
        assert_eq!(state.handle(cancel_file("cmd-1")), vec![]);
        assert_eq!(state.handle(cancel_file("file-9")), vec![]);
        // A file channel is not a command: command_cancel does not reach it.
        assert_eq!(state.handle(cancel("file-1")), vec![]);
    }

    #[test]
    fn a_tunnel_close_stops_the_transfers_with_the_commands() {
        let mut state = TunnelState::default();
        state.handle(open(S1));
        state.handle(upload("file-1", "/a", 0));
        assert_eq!(state.handle(close(S1)), vec![Action::StopAll]);
        assert!(state.channels().is_empty());
        assert_eq!(state.data_frame(data("file-1", 0)), vec![]);
    }

    #[test]
    fn a_reset_drops_the_tunnel_and_hands_back_its_channels() {
        let mut state = TunnelState::default();
        state.handle(open(S1));
        state.handle(terminal("terminal-1", None));
        let closed = state.reset();
        assert_eq!(closed.len(), 1);
        assert_eq!(state, TunnelState::default());
    }
}
