//! The agent runtime: one WebSocket to the server, heartbeats every interval in both modes,
//! tunnel state kept by the domain's `AgentMode` (see [`TunnelState`]), commands run on the
//! tunnel's channels with live output (see `exec`), interactive terminals on PTYs (see
//! `terminals`), files moved and listed on File channels
//! (see `files`), redial with exponential backoff and full jitter, dead-peer detection by read
//! deadline, and a clean close on shutdown (see `connection`).
//!
//! It must not know about command-line flags, environment variables or config files (the
//! binary turns those into an [`AgentConfig`]), nor about the server's internals: it speaks
//! only the wire protocol of [`rmm_protocol`], whose `limits` hold every number both ends
//! must agree on.

mod backoff;
mod chunker;
mod config;
mod connection;
mod enroll;
mod exec;
mod files;
mod host;
mod input;
mod proxy;
mod terminals;
mod tls;
mod tunnel;

pub use backoff::{Backoff, parse_retry_after, random_unit, rejected_delay};
pub use chunker::CHUNK;
pub use config::{
    AgentConfig, AgentKey, AgentTimings, ConfigError, DEFAULT_PARTIAL_MAX_AGE, ServerUrl,
};
pub use connection::{AgentError, run};
pub use enroll::{EnrollError, Enrolled, enroll, enroll_url};
pub use exec::{KillTimings, StopReason};
#[cfg(target_os = "linux")]
pub use exec::{supervise, supervise_commands_with};
pub use host::facts as host_facts;
pub use proxy::{ProxyEnv, ProxyError, ProxyRoute, ProxyUrl};
pub use tls::TlsError;
pub use tunnel::{
    Action, FileInput, FileOp, NO_TUNNEL, PTY_UNSUPPORTED, PtyInput, PtyRequest, TunnelState,
};

use exec::RunId;
use files::TransferId;
use rmm_protocol::{AgentMessage, DataFrame};
use terminals::TerminalRunId;

/// What the tasks of a connection hand to it, through one bounded queue, in order.
#[derive(Debug)]
enum Event {
    /// A frame to send.
    Frame(AgentMessage),
    /// A binary data frame to send (a download's bytes, a terminal's output).
    Data(DataFrame),
    /// The command's last frame has been queued: its channel may be released.
    CommandEnded(RunId),
    /// The file operation's last frame (if any) has been queued: its channel may be released.
    TransferEnded(TransferId),
    /// The terminal's `pty_exit` (or refusal) has been queued: its channel may be released.
    TerminalEnded(TerminalRunId),
}

#[cfg(test)]
mod tests;
