//! The live agent connections: a registry of who is connected (with a generation per
//! connection and the agent's mode), the `AgentGateway` port over it (`registry`, `port`,
//! and `files` for its file operations), and the task that runs one agent's WebSocket
//! (`connection`).
//!
//! Nothing here blocks on a peer: messages to an agent go through a bounded queue fed with
//! `try_send`, the registry lock is never held across `.await`, and a socket that stops
//! answering is dropped by the ping/read-idle deadline.

use std::time::Duration;

use poem::web::websocket::{CloseCode, Message};
use rmm_protocol::{
    CAP_COMMAND_BINARY_OUTPUT, CAP_COMMAND_CANCEL, CAP_COMMAND_STDIN, CAP_COMMAND_TIMEOUT,
    CAP_FILE_TRANSFER, CAP_PTY, ServerMessage, encode,
};

mod clock;
mod connection;
mod files;
mod port;
mod pty;
mod registry;
mod stdin;
mod window;

#[cfg(test)]
mod pty_tests;

pub use pty::{PTY_CONTROL_QUEUE, PTY_EVENTS_QUEUE};
pub use stdin::FINAL_ACK_TIMEOUT as STDIN_FINAL_ACK_TIMEOUT;

pub use connection::{Peer, run_agent_connection};
pub(crate) use registry::FileLink;
pub use registry::{Census, Elsewhere, WsAgentGateway};

/// Frames queued for one agent. Small on purpose: an agent that does not read is evicted,
/// it never makes the server hold more.
pub const OUTBOUND_QUEUE: usize = 64;

pub use rmm_protocol::limits::MAX_CHANNELS;

/// Which protocol extensions an agent said it speaks (the `x-rmm-capabilities` header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub command_timeout: bool,
    pub command_cancel: bool,
    pub file_transfer: bool,
    pub pty: bool,
    pub command_stdin: bool,
    pub command_binary_output: bool,
}

impl Capabilities {
    /// Parses the comma-separated header value; unknown names are ignored.
    #[must_use]
    pub fn parse(header: Option<&str>) -> Self {
        let names: Vec<&str> = header.unwrap_or("").split(',').map(str::trim).collect();
        Self {
            command_timeout: names.contains(&CAP_COMMAND_TIMEOUT),
            command_cancel: names.contains(&CAP_COMMAND_CANCEL),
            file_transfer: names.contains(&CAP_FILE_TRANSFER),
            pty: names.contains(&CAP_PTY),
            command_stdin: names.contains(&CAP_COMMAND_STDIN),
            command_binary_output: names.contains(&CAP_COMMAND_BINARY_OUTPUT),
        }
    }
}

/// Timings of an agent connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionTimings {
    /// How often the server pings.
    pub ping_interval: Duration,
    /// A connection with no inbound frame (pongs included) for this long is dead.
    pub read_idle: Duration,
    /// A single write that takes longer than this means the peer stopped reading.
    pub write_timeout: Duration,
}

impl Default for ConnectionTimings {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(20),
            read_idle: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// What goes to an agent: protocol messages, and binary file data frames.
///
/// The message is boxed: tokio allocates a channel's first block of 32 slots when the
/// channel is created, so every idle connection pays 32 × `size_of::<Outbound>()`. Unboxed
/// (`ServerMessage` is 176 bytes) that was 5.5 KiB per agent; boxed it is 32 × 32 bytes.
#[derive(Debug)]
pub enum Outbound {
    Message(Box<ServerMessage>),
    Data(Vec<u8>),
    /// The server ends the connection (the agent was revoked or got a new key): a close
    /// frame (1008) with this reason, and the connection's task ends.
    Close(&'static str),
}

impl Outbound {
    /// A protocol message to queue.
    pub(crate) fn message(message: ServerMessage) -> Self {
        Self::Message(Box::new(message))
    }

    pub(crate) fn into_frame(self) -> Message {
        match self {
            Self::Message(message) => Message::Text(encode(&*message)),
            Self::Data(bytes) => Message::Binary(bytes),
            Self::Close(why) => Message::Close(Some((CloseCode::Policy, why.into()))),
        }
    }
}

/// An event of a file transfer, routed from the agent to the transfer's task.
#[derive(Debug)]
pub enum FileEvent {
    Info {
        size: u64,
        sha256: String,
        mode: Option<u32>,
        modified: Option<i64>,
    },
    Data {
        offset: u64,
        data: bytes::Bytes,
    },
    Done {
        path: String,
        size: u64,
        sha256: String,
    },
    Error {
        code: rmm_protocol::FileErrorCode,
        message: String,
    },
    Listing {
        path: String,
        entries: Vec<rmm_protocol::FileEntry>,
    },
    Partial {
        size: u64,
    },
    Ack {
        offset: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::Outbound;

    #[test]
    fn an_outbound_slot_stays_small() {
        // tokio's first block holds 32 of them per connection, allocated up front.
        assert!(std::mem::size_of::<Outbound>() <= 32);
    }
}
