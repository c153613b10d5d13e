//! Identifiers as newtypes, so a session id can never be passed where an agent id is meant.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must be a UUID, got {value:?}")]
    NotAUuid { kind: &'static str, value: String },
    #[error("channel id must be 1 to 64 characters of A-Z a-z 0-9 . _ : -, got {0:?}")]
    BadChannelId(String),
}

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps a UUID that is already known to name this kind of thing.
            #[must_use]
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            #[must_use]
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// Parses the textual (hyphenated, simple or braced) form of a UUID.
            ///
            /// # Errors
            /// [`IdError::NotAUuid`] when `value` is not a UUID.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                Uuid::parse_str(value).map(Self).map_err(|_| IdError::NotAUuid {
                    kind: $kind,
                    value: value.chars().take(64).collect(),
                })
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.hyphenated())
            }
        }
    };
}

uuid_id!(
    /// A tunnel session between one technician and one agent.
    SessionId,
    "session_id"
);
uuid_id!(
    /// A managed machine's agent.
    AgentId,
    "agent_id"
);
uuid_id!(
    /// A user of the server: an admin, a technician or an auditor (the reference's `tech_id`).
    UserId,
    "user_id"
);
uuid_id!(
    /// One command run in a tunnel.
    CommandId,
    "command_id"
);
uuid_id!(
    /// One interactive terminal (a PTY on an agent) in a tunnel; its recording has the same id.
    TerminalId,
    "terminal_id"
);
uuid_id!(
    /// One issued access token (its JWT `jti`): what logout and revocation name.
    TokenId,
    "token_id"
);
uuid_id!(
    /// One enrollment token: what lets machines register themselves as agents of a group.
    EnrollmentId,
    "enrollment_id"
);

/// A channel inside a tunnel. The reference uses free-form strings such as `terminal-1`; we
/// accept a conservative alphabet so ids are safe to log, put in URLs and use as map keys.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(String);

impl ChannelId {
    pub const MAX_LEN: usize = 64;

    /// # Errors
    /// [`IdError::BadChannelId`] when `value` is empty, longer than [`Self::MAX_LEN`] or has a
    /// character outside `A-Z a-z 0-9 . _ : -`.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let ok = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(IdError::BadChannelId(value.chars().take(80).collect()))
        }
    }

    /// The channel that names a session itself: the reference has no session-level error
    /// message, so a refused `tunnel_open` is a `tunnel_error` on this channel.
    #[must_use]
    pub fn for_session(session: SessionId) -> Self {
        Self(session.to_string())
    }

    /// The channel of a file transfer.
    #[must_use]
    pub fn for_file(transfer: Uuid) -> Self {
        Self(format!("file-{transfer}"))
    }

    /// The channel of an interactive terminal.
    #[must_use]
    pub fn for_terminal(terminal: TerminalId) -> Self {
        Self(format!("pty-{terminal}"))
    }

    /// The channel a command runs on.
    #[must_use]
    pub fn for_command(command: CommandId) -> Self {
        Self(format!("cmd-{command}"))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uuid_parses_and_prints_hyphenated() {
        let id = SessionId::parse("550E8400E29B41D4A716446655440000").unwrap();
        assert_eq!(id.to_string(), "550e8400-e29b-41d4-a716-446655440000");
    }

    #[test]
    fn a_non_uuid_is_rejected_naming_the_field() {
        let err = AgentId::parse("not-a-uuid").unwrap_err();
        assert_eq!(
            err.to_string(),
            "agent_id must be a UUID, got \"not-a-uuid\""
        );
    }

    #[test]
    fn channel_ids_accept_the_reference_examples() {
        assert_eq!(
            ChannelId::parse("terminal-1").unwrap().as_str(),
            "terminal-1"
        );
        let session = SessionId::parse("550e8400-e29b-41d4-a716-446655440000").unwrap();
        assert_eq!(
            ChannelId::for_session(session).as_str(),
            session.to_string()
        );
    }

    #[test]
    fn channel_ids_reject_empty_long_and_odd_characters() {
        assert!(ChannelId::parse("").is_err());
        assert!(ChannelId::parse(&"a".repeat(65)).is_err());
        assert!(ChannelId::parse("a b").is_err());
        assert!(ChannelId::parse("a/b").is_err());
        assert!(ChannelId::parse(&"a".repeat(64)).is_ok());
    }
}
