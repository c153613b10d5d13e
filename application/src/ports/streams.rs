//! Live fan-out of session output to the technicians watching.

use rmm_domain::{ChannelId, SessionId};

/// One chunk of command output (or its end), as bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutputChunk {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Set on the last chunk only.
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    /// `timed_out` or `cancelled` when the agent killed the command.
    pub end_reason: Option<String>,
}

/// What technicians watching a session see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    Output {
        channel: ChannelId,
        chunk: OutputChunk,
    },
    Error {
        channel: ChannelId,
        error: String,
    },
}

/// Live fan-out of a session's frames to its watchers. Never blocks: a watcher that falls
/// behind is dropped, it never slows the agent or other watchers.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait SessionStreams: Send + Sync + 'static {
    fn publish(&self, session: SessionId, event: &StreamEvent);

    /// The session ended: watchers are told and disconnected, buffers freed.
    fn end_session(&self, session: SessionId);
}
