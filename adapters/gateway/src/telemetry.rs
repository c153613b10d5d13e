//! What the gateway records for `/metrics`, through the `metrics` facade (a no-op when no
//! recorder is installed). Every label value is one of a fixed set.

use rmm_application::OutputStream;

/// The bounded queues whose overflow drops frames: the `queue` label of
/// `rmm_ws_frames_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// A session's live frames, read by its stream watchers: a slow watcher misses frames.
    SessionStream,
    /// Messages to one agent: a full queue refuses a message.
    AgentOutbound,
    /// One file transfer's events from its agent.
    FileEvents,
    /// One terminal's events from its agent.
    TerminalEvents,
}

impl Queue {
    pub const ALL: [Self; 4] = [
        Self::SessionStream,
        Self::AgentOutbound,
        Self::FileEvents,
        Self::TerminalEvents,
    ];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SessionStream => "session_stream",
            Self::AgentOutbound => "agent_outbound",
            Self::FileEvents => "file_events",
            Self::TerminalEvents => "terminal_events",
        }
    }
}

/// `frames` frames dropped by `queue`.
pub fn dropped(queue: Queue, frames: u64) {
    metrics::counter!("rmm_ws_frames_dropped_total", "queue" => queue.as_str()).increment(frames);
}

/// Command output received from an agent, per stream.
pub fn output(stream: OutputStream, bytes: usize) {
    if bytes > 0 {
        metrics::counter!("rmm_command_output_bytes_total", "stream" => stream.as_str())
            .increment(bytes as u64);
    }
}

/// A file transfer's direction: the `direction` label of `rmm_file_transfer_bytes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Upload,
    Download,
}

impl Direction {
    pub const ALL: [Self; 2] = [Self::Upload, Self::Download];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::Download => "download",
        }
    }
}

/// File bytes moved to (upload) or from (download) an agent.
pub fn transferred(direction: Direction, bytes: usize) {
    metrics::counter!("rmm_file_transfer_bytes_total", "direction" => direction.as_str())
        .increment(bytes as u64);
}
