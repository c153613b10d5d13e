//! What nodes say to each other to set up a cross-node stream, and what the dialled node
//! serves: the messages of a dial over NATS ([`crate::forward`] asks, [`crate::answer`]
//! answers), and the connection it brings.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

/// How long a dial waits for the other node's answer (a request for an agent on a node out
/// of reach answers 503 within it).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// What the dialling node tells the node it dials.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dial {
    /// Where the dialled node sends its bytes.
    pub reply_to: String,
    /// The dialling node.
    pub from: String,
    /// The client's address as the dialling node saw it (empty when it had none).
    pub remote: String,
    pub local: String,
    /// Whether the client used HTTPS.
    pub https: bool,
    /// Whether the dialling node would connect to a cluster address ([`crate::direct`]).
    #[serde(default)]
    pub direct: bool,
}

/// The dialled node's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    /// Where the dialling node sends its bytes over NATS (empty on the direct path).
    pub reply_to: String,
    /// The direct path: where to connect, with which ticket.
    #[serde(default)]
    pub direct: Option<DirectAnswer>,
}

/// The dialled node's answer on the direct path: connect here, say this ticket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectAnswer {
    pub addr: String,
    pub ticket: String,
}

/// A cross-node connection's bytes.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A cross-node connection: a TCP connection to a cluster address, or a stream over NATS.
pub type Connection = Box<dyn Stream>;

/// A stream another node dialled: serve it as a connection from `remote`.
pub struct Forwarded {
    pub io: Connection,
    pub remote: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub https: bool,
    /// The node that forwarded it.
    pub from: String,
}

impl std::fmt::Debug for Forwarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarded")
            .field("remote", &self.remote)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}
