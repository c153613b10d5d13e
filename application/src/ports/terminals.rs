//! What crosses the gateway port for an interactive terminal (a PTY on the agent) and for a
//! command's stdin. How the bytes travel (binary frames, `channel_ack` credit, the frame and
//! byte windows) is the gateway adapter's business; the use cases see a link of events in and
//! controls out.

use bytes::Bytes;
use rmm_domain::{TermName, TermSize};
use tokio::sync::{mpsc, watch};

/// What to start on the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtySpec {
    pub size: TermSize,
    pub term: TermName,
    /// `None`: the login shell of the agent's user.
    pub command: Option<String>,
}

/// What the agent says about a terminal, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtyEvent {
    /// The process started (the agent's `pty_ready`).
    Ready,
    /// Output bytes, in order. The agent sends no more than the credit it was given (see
    /// [`PtyControl::Ack`]).
    Output(Bytes),
    /// The process ended, after its last output: an exit code, or the number of the signal
    /// that killed it.
    Exit {
        exit_code: Option<i32>,
        signal: Option<i32>,
    },
    /// The agent could not start the terminal, or broke the protocol; the link ends.
    Failed(String),
}

/// What the use cases tell the agent about a terminal, in order with its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtyControl {
    /// Input bytes for the PTY. The gateway holds them back while the agent has not
    /// acknowledged enough of the earlier ones, so a sender awaiting `send` is slowed down.
    Input(Bytes),
    Resize(TermSize),
}

/// A live terminal's connection to its agent. When `events` ends without `Exit`, the agent
/// is gone (disconnected, or the tunnel closed under it).
///
/// Output credit and closing never wait behind input the agent holds back (a process that
/// neither reads its input nor may write its output would otherwise never be unblocked):
/// they are `watch` values, the latest wins.
#[derive(Debug)]
pub struct PtyLink {
    pub events: mpsc::Receiver<PtyEvent>,
    pub control: mpsc::Sender<PtyControl>,
    /// The consumer has taken every output byte before this offset (counted from the
    /// terminal's first byte): the agent may send up to a window beyond it.
    pub acks: watch::Sender<u64>,
    /// `true` ends the terminal (HUP to its process group, then TERM, then KILL); `Exit`
    /// follows. Dropping the link does the same.
    pub close: watch::Sender<bool>,
}

/// Why bytes could not be fed to a command's stdin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StdinError {
    #[error("the agent of this session is not connected")]
    AgentGone,
    /// The command ended, or its stdin was already closed.
    #[error("the command's stdin is closed")]
    Closed,
    /// The client's request body broke off; stdin was closed at what arrived.
    #[error("the stdin upload was interrupted: {0}")]
    ClientAborted(String),
}
