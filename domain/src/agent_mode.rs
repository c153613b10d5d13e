//! The agent's mode: heartbeat, or one tunnel. Shared by the server (which tracks each
//! connected agent's mode) and the agent (which switches on `tunnel_open`/`tunnel_close`).

use crate::ids::SessionId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgentMode {
    /// Connected, sending heartbeats, no tunnel.
    #[default]
    Heartbeat,
    /// One tunnel is open (heartbeats continue).
    Tunnel { session: SessionId },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ModeError {
    #[error("a tunnel is already open (session {current})")]
    Busy { current: SessionId },
    #[error("no tunnel is open")]
    NoTunnel,
    #[error("the open tunnel is session {current}, not {requested}")]
    OtherSession {
        current: SessionId,
        requested: SessionId,
    },
}

impl AgentMode {
    /// Enters tunnel mode for `session`.
    ///
    /// # Errors
    /// [`ModeError::Busy`] when a tunnel is already open, even for the same session: a
    /// repeated open is a protocol error, not a no-op.
    pub fn open(self, session: SessionId) -> Result<Self, ModeError> {
        match self {
            Self::Heartbeat => Ok(Self::Tunnel { session }),
            Self::Tunnel { session: current } => Err(ModeError::Busy { current }),
        }
    }

    /// Leaves tunnel mode, if `session` is the open tunnel.
    ///
    /// # Errors
    /// [`ModeError::NoTunnel`] in heartbeat mode, [`ModeError::OtherSession`] when another
    /// session is open (that tunnel is left untouched).
    pub fn close(self, session: SessionId) -> Result<Self, ModeError> {
        match self {
            Self::Tunnel { session: current } if current == session => Ok(Self::Heartbeat),
            Self::Tunnel { session: current } => Err(ModeError::OtherSession {
                current,
                requested: session,
            }),
            Self::Heartbeat => Err(ModeError::NoTunnel),
        }
    }

    #[must_use]
    pub fn session(self) -> Option<SessionId> {
        match self {
            Self::Heartbeat => None,
            Self::Tunnel { session } => Some(session),
        }
    }

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Heartbeat => "heartbeat",
            Self::Tunnel { .. } => "tunnel",
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn s(n: u128) -> SessionId {
        SessionId::from_uuid(Uuid::from_u128(n))
    }

    #[test]
    fn heartbeat_opens_a_tunnel() {
        assert_eq!(
            AgentMode::Heartbeat.open(s(1)),
            Ok(AgentMode::Tunnel { session: s(1) })
        );
        assert_eq!(AgentMode::default(), AgentMode::Heartbeat);
    }

    #[test]
    fn a_second_open_is_busy_whatever_the_session() {
        let mode = AgentMode::Tunnel { session: s(1) };
        assert_eq!(mode.open(s(2)), Err(ModeError::Busy { current: s(1) }));
        assert_eq!(mode.open(s(1)), Err(ModeError::Busy { current: s(1) }));
    }

    #[test]
    fn closing_the_open_tunnel_returns_to_heartbeat() {
        let mode = AgentMode::Tunnel { session: s(1) };
        assert_eq!(mode.close(s(1)), Ok(AgentMode::Heartbeat));
    }

    #[test]
    fn closing_another_session_leaves_the_tunnel_alone() {
        let mode = AgentMode::Tunnel { session: s(1) };
        assert_eq!(
            mode.close(s(2)),
            Err(ModeError::OtherSession {
                current: s(1),
                requested: s(2)
            })
        );
    }

    #[test]
    fn closing_in_heartbeat_mode_is_an_error() {
        assert_eq!(AgentMode::Heartbeat.close(s(1)), Err(ModeError::NoTunnel));
    }

    #[test]
    fn modes_name_themselves_and_their_session() {
        assert_eq!(AgentMode::Heartbeat.as_str(), "heartbeat");
        assert_eq!(AgentMode::Heartbeat.session(), None);
        let t = AgentMode::Tunnel { session: s(7) };
        assert_eq!((t.as_str(), t.session()), ("tunnel", Some(s(7))));
    }
}
