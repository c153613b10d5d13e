//! The numbers both ends of the tunnel must agree on, defined once.

/// The agents' WebSocket endpoint on the server.
pub const AGENT_WS_PATH: &str = "/api/v1/agent/ws";

/// Channels (running commands and file operations together) one tunnel may hold at once. The
/// server's gateway admits this many per agent connection and the agent refuses more, so work
/// the server accepts is never refused by the agent.
pub const MAX_CHANNELS: usize = 64;

/// The largest data a binary file frame carries, either direction.
pub const FILE_FRAME_DATA: usize = 256 * 1024;

/// File bytes a sender may have in flight beyond the receiver's last `file_ack`.
pub const FILE_WINDOW: u64 = 4 * 1024 * 1024;

/// A receiver acknowledges (`file_ack`) at least every this many bytes, and at the end.
pub const FILE_ACK_EVERY: u64 = 1024 * 1024;

/// Terminal output, terminal input and command stdin: bytes a sender may have in flight
/// beyond the receiver's last `channel_ack`.
pub const STREAM_WINDOW: u64 = 1024 * 1024;

/// ... and frames: a peer sending tiny frames cannot make the receiver queue millions.
pub const STREAM_WINDOW_FRAMES: u64 = 256;

/// The largest data one terminal or stdin frame carries.
pub const STREAM_FRAME_DATA: usize = 64 * 1024;

/// At most this many entries in one `file_listing` (the first ones by name).
pub const MAX_LISTING_ENTRIES: usize = 10_000;

/// The suffix of a file being received, before it is verified and renamed into place: the
/// agent writes `.NAME` + this beside an upload's target, the CLI `LOCAL` + this for a download.
pub const PARTIAL_SUFFIX: &str = ".rmm-partial";
