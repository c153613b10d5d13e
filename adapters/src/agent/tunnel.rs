//! The agent's tunnel state for one connection: the domain's [`AgentMode`] and the open
//! [`Channels`], driven by decoded server frames. It answers with the frames to send back and
//! does no I/O, so every rule is tested here with scripted frames.
//!
//! It must not know about sockets or timers. Work attached to channels (commands, a later
//! issue) is stopped by whoever holds it, from the channels [`TunnelState::reset`] and a
//! `tunnel_close` hand back.

use rmm_domain::{AgentMode, Channel, Channels, ModeError, SessionId};

use crate::protocol::{AgentMessage, ServerMessage};

/// At most this many channels at once in a tunnel: a server cannot make us hold more.
pub const MAX_CHANNELS: usize = 16;

/// Told to the server for every `tunnel_data` until command execution lands (honest: the
/// frame was understood and nothing ran).
pub const COMMANDS_UNSUPPORTED: &str = "commands are not supported by this agent version";

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

    /// Applies one server frame; the frames to send back, in order.
    pub fn handle(&mut self, message: ServerMessage) -> Vec<AgentMessage> {
        match message {
            ServerMessage::TunnelOpen { session_id, .. } => self.open(session_id),
            ServerMessage::TunnelClose { session_id } => {
                self.close(&session_id);
                Vec::new()
            }
            ServerMessage::TunnelData { channel_id, .. } => {
                let error = match self.mode {
                    AgentMode::Heartbeat => "no tunnel is open",
                    AgentMode::Tunnel { .. } => COMMANDS_UNSUPPORTED,
                };
                tracing::debug!(channel_id = %clip(&channel_id), error, "tunnel_data refused");
                vec![AgentMessage::TunnelError {
                    channel_id: clip(&channel_id),
                    error: error.to_owned(),
                }]
            }
        }
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

    fn close(&mut self, session_id: &str) -> Vec<Channel> {
        let Ok(session) = SessionId::parse(session_id) else {
            tracing::warn!(session_id = %clip(session_id), "tunnel_close with a bad session id ignored");
            return Vec::new();
        };
        match self.mode.close(session) {
            Ok(mode) => {
                self.mode = mode;
                let closed = self.channels.close_all();
                tracing::info!(session_id = %session, channels = closed.len(), "tunnel closed");
                closed
            }
            Err(e) => {
                // A late or duplicate close (the server's view raced ours): nothing to undo.
                tracing::debug!(session_id = %session, error = %e, "tunnel_close ignored");
                Vec::new()
            }
        }
    }
}

/// Ids echoed back are bounded so a hostile frame cannot make us send (or log) megabytes.
fn clip(id: &str) -> String {
    id.chars().take(128).collect()
}

#[cfg(test)]
mod tests {
    use rmm_domain::{ChannelId, ChannelKind};
    use uuid::Uuid;

    use super::*;
    use crate::protocol::TunnelDataPayload;

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

    fn data(channel: &str) -> ServerMessage {
        ServerMessage::TunnelData {
            channel_id: channel.to_owned(),
            data: TunnelDataPayload::Terminal {
                command: "ls".into(),
            },
        }
    }

    #[test]
    fn an_open_enters_tunnel_mode_and_answers_ready() {
        let mut state = TunnelState::default();
        assert_eq!(
            state.handle(open(S1)),
            vec![AgentMessage::TunnelReady {
                session_id: S1.into()
            }]
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
        state
            .channels
            .open(
                ChannelId::parse("terminal-1").unwrap(),
                ChannelKind::Terminal,
            )
            .unwrap();
        let before = state.clone();
        let reply = state.handle(open(S2));
        assert!(matches!(
            reply.as_slice(),
            [AgentMessage::TunnelError { channel_id, error }] if channel_id == S2 && error.contains("busy")
        ));
        assert_eq!(state, before);
        // The same session again is a protocol error too, not a second ready.
        assert!(matches!(
            state.handle(open(S1)).as_slice(),
            [AgentMessage::TunnelError { channel_id, .. }] if channel_id == S1
        ));
        assert_eq!(state, before);
    }

    #[test]
    fn a_close_returns_to_heartbeat_and_clears_the_channels() {
        let mut state = TunnelState::default();
        state.handle(open(S1));
        state
            .channels
            .open(
                ChannelId::parse("terminal-1").unwrap(),
                ChannelKind::Terminal,
            )
            .unwrap();
        assert_eq!(state.handle(close(S1)), vec![]);
        assert_eq!(state.mode(), AgentMode::Heartbeat);
        assert!(state.channels().is_empty());
        // And a new tunnel may open.
        assert!(matches!(
            state.handle(open(S2)).as_slice(),
            [AgentMessage::TunnelReady { .. }]
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
    fn tunnel_data_is_answered_with_an_honest_error_on_its_channel() {
        let mut state = TunnelState::default();
        state.handle(open(S1));
        assert_eq!(
            state.handle(data("terminal-1")),
            vec![AgentMessage::TunnelError {
                channel_id: "terminal-1".into(),
                error: COMMANDS_UNSUPPORTED.into(),
            }]
        );
        assert!(state.channels().is_empty());
        let mut idle = TunnelState::default();
        assert!(matches!(
            idle.handle(data("terminal-1")).as_slice(),
            [AgentMessage::TunnelError { error, .. }] if error == "no tunnel is open"
        ));
    }

    #[test]
    fn an_open_with_a_bad_session_id_is_refused_and_changes_nothing() {
        let mut state = TunnelState::default();
        assert!(matches!(
            state.handle(open("nope")).as_slice(),
            [AgentMessage::TunnelError { channel_id, error }] if channel_id == "nope" && error == "invalid session id"
        ));
        assert_eq!(state, TunnelState::default());
        let long = "x".repeat(10_000);
        assert!(matches!(
            state.handle(open(&long)).as_slice(),
            [AgentMessage::TunnelError { channel_id, .. }] if channel_id.len() == 128
        ));
    }

    #[test]
    fn a_reset_drops_the_tunnel_and_hands_back_its_channels() {
        let mut state = TunnelState::default();
        state.handle(open(S1));
        state
            .channels
            .open(
                ChannelId::parse("terminal-1").unwrap(),
                ChannelKind::Terminal,
            )
            .unwrap();
        let closed = state.reset();
        assert_eq!(closed.len(), 1);
        assert_eq!(state, TunnelState::default());
    }
}
