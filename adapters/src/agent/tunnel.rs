//! The agent's tunnel state for one connection: the domain's [`AgentMode`] and the open
//! [`Channels`], driven by decoded server frames. It answers with [`Action`]s (frames to send,
//! commands to start or stop) and does no I/O, so every rule is tested here with scripted
//! frames.
//!
//! It must not know about sockets, timers or processes. The work attached to channels
//! (commands) is run and stopped by the connection from the actions returned here; a channel
//! stays open until its command has sent its final frame ([`TunnelState::release`]).

use std::time::Duration;

use rmm_domain::{AgentMode, Channel, ChannelId, ChannelKind, Channels, ModeError, SessionId};

use crate::protocol::{AgentMessage, ServerMessage, TunnelDataPayload};

/// At most this many channels (running commands) at once in a tunnel: a server cannot make
/// us hold more. The server admits as many per agent connection (its gateway's limit), so a
/// command it accepts is not refused here.
pub const MAX_CHANNELS: usize = 64;

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
    /// The tunnel closed: kill every command (their channels are already closed).
    StopAll,
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
            // File transfer is not spoken by this agent yet: it does not advertise
            // `file-transfer`, so a server sends these only by mistake.
            ServerMessage::FileUpload { channel_id, .. }
            | ServerMessage::FileUploadEnd { channel_id, .. }
            | ServerMessage::FileDownload { channel_id, .. }
            | ServerMessage::FileList { channel_id, .. }
            | ServerMessage::FileUploadStatus { channel_id, .. }
            | ServerMessage::FileAck { channel_id, .. }
            | ServerMessage::FileCancel { channel_id } => {
                refuse(&channel_id, "file transfer is not supported by this agent")
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
            data: TunnelDataPayload::TerminalOutput(crate::protocol::TerminalOutput::default()),
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
