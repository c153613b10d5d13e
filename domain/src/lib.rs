//! The pure model of the rmm tunnel: who may open a tunnel to which agent, what states a
//! session goes through, how channels multiplex inside a tunnel, and which mode an agent is in.
//!
//! This crate must not know about I/O, serialization, clocks or randomness: time and fresh ids
//! come in as arguments, so every rule here is testable as a plain function.

mod agent_mode;
mod asciicast;
mod channel;
mod command;
mod file;
mod ids;
mod names;
mod session;
mod terminal;
mod time;

pub use agent_mode::{AgentMode, ModeError};
pub use asciicast::{CastWriter, TRUNCATED_MARKER};
pub use channel::{Channel, ChannelError, ChannelKind, Channels};
pub use command::{
    CommandEnd, CommandEndParts, CommandEndReason, CommandRun, CommandStatus, CommandStatusError,
    CommandText, CommandTextError,
};
pub use file::{FileErrorCode, MAX_NAME_CHARS, MAX_PATH_BYTES, PathProblem, check_agent_path};
pub use ids::{
    AgentId, ChannelId, CommandId, EnrollmentId, IdError, SessionId, TerminalId, TokenId, UserId,
};
pub use names::{Actor, AgentName, GroupName, NameError, Role, Username};
pub use session::{
    AccessError, CloseReason, Session, SessionAction, SessionError, SessionState, SessionStatus,
};
pub use terminal::{
    DEFAULT_TERM, MAX_TERMINAL_SIDE, TermName, TermSize, TerminalEnd, TerminalSpecError,
};
pub use time::Timestamp;
