//! The wire protocol between server and agents (the GuruRMM tunnel protocol), as serde types.
//!
//! Every message is `{"type": "<snake_case name>", "payload": {...}}`. Names and shapes are
//! the reference's; our extensions are additive (new message types, new optional fields) and
//! documented in docs/protocol.md.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub mod api;
mod codes;
pub mod limits;
mod output;

pub use codes::FileErrorCode;
pub use output::{OUTPUT_CHUNK, OutputChannel, OutputStream};

/// The WebSocket upgrade header in which an agent lists the protocol extensions it speaks
/// (comma-separated). The server sends extension frames or fields only to agents that listed
/// them, so an agent written against the reference receives reference frames only.
pub const CAPABILITIES_HEADER: &str = "x-rmm-capabilities";
/// Extension: the agent enforces `timeout_secs` on `terminal` payloads.
pub const CAP_COMMAND_TIMEOUT: &str = "command-timeout";
/// Extension: the agent understands `command_cancel`.
pub const CAP_COMMAND_CANCEL: &str = "command-cancel";
/// Extension: the agent moves files (the `file_*` messages and binary data frames).
pub const CAP_FILE_TRANSFER: &str = "file-transfer";
/// Extension: the agent runs interactive terminals on a PTY (the `pty_*` messages).
pub const CAP_PTY: &str = "pty";
/// Extension: the agent keeps a command's stdin open when asked (`stdin: true` on the
/// `terminal` payload), fed by binary data frames and ended by `stdin_end`.
pub const CAP_COMMAND_STDIN: &str = "command-stdin";
/// Extension: the agent sends a command's stdout and stderr as binary data frames when asked
/// (`binary_output: true` on the `terminal` payload), on the channels [`OutputChannel`] names.
pub const CAP_COMMAND_BINARY_OUTPUT: &str = "command-binary-output";

/// Server → agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum ServerMessage {
    TunnelOpen {
        session_id: String,
        tech_id: Uuid,
    },
    TunnelClose {
        session_id: String,
    },
    TunnelData {
        channel_id: String,
        data: TunnelDataPayload,
    },
    /// Extension (`command-cancel`): kill the command running on this channel (its whole
    /// process group), then report its end as usual with `end_reason: "cancelled"`.
    CommandCancel {
        channel_id: String,
    },
    /// Extension (`file-transfer`): receive a file at `path` (absolute) into a temporary file
    /// beside it, from byte `offset` (a resumed upload keeps what arrived before). Data follows
    /// in binary frames on the channel; `file_upload_end` closes it.
    FileUpload {
        channel_id: String,
        path: String,
        offset: u64,
    },
    /// Extension: every byte of the upload was sent; `size` is the whole file's. The agent
    /// checks the SHA-256 of the whole file against `sha256` (when given), renames the
    /// temporary file into place and answers `file_done`, or `file_error`.
    FileUploadEnd {
        channel_id: String,
        size: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
    /// Extension: send the file at `path` from byte `offset`: `file_info` first, then binary
    /// data frames, then `file_done`.
    FileDownload {
        channel_id: String,
        path: String,
        offset: u64,
    },
    /// Extension: list the directory at `path`; answered by `file_listing`.
    FileList {
        channel_id: String,
        path: String,
    },
    /// Extension: how much of an interrupted upload to `path` the agent holds; answered by
    /// `file_partial`.
    FileUploadStatus {
        channel_id: String,
        path: String,
    },
    /// Extension: the receiver has every byte before `offset` (flow control, both ways).
    FileAck {
        channel_id: String,
        offset: u64,
    },
    /// Extension: abandon the transfer on this channel (an upload's partial file is kept for
    /// a later resume).
    FileCancel {
        channel_id: String,
    },
    /// Extension (`pty`): start `command` (the login shell of the agent's user when absent)
    /// on a new PTY of `cols` x `rows` with `TERM=term`, in its own session with the PTY as
    /// its controlling terminal. Answered by `pty_ready`, or a `tunnel_error` on the channel.
    PtyOpen {
        channel_id: String,
        cols: u16,
        rows: u16,
        term: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command: Option<String>,
    },
    /// Extension (`pty`): the terminal's new size (the window-size ioctl; the process group
    /// gets `SIGWINCH`).
    PtyResize {
        channel_id: String,
        cols: u16,
        rows: u16,
    },
    /// Extension (`pty`): end the terminal: `SIGHUP` to its process group, then `SIGTERM`,
    /// then `SIGKILL`; `pty_exit` follows.
    PtyClose {
        channel_id: String,
    },
    /// Extension (`pty`, `command-stdin`): flow control of a byte stream on a channel, either
    /// way: the receiver has taken every byte before `offset`. The sender keeps at most
    /// [`limits::STREAM_WINDOW`] bytes and [`limits::STREAM_WINDOW_FRAMES`] frames beyond it
    /// in flight.
    ChannelAck {
        channel_id: String,
        offset: u64,
    },
    /// Extension (`command-stdin`): the command's stdin ends here (EOF).
    StdinEnd {
        channel_id: String,
    },
}

/// Agent → server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum AgentMessage {
    TunnelReady {
        session_id: String,
    },
    TunnelData {
        channel_id: String,
        data: TunnelDataPayload,
    },
    TunnelError {
        channel_id: String,
        error: String,
    },
    /// Extension: liveness and host facts, every N seconds in both modes.
    Heartbeat(HeartbeatPayload),
    /// Extension: the file a download will send.
    FileInfo {
        channel_id: String,
        size: u64,
        sha256: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
        /// Seconds since the Unix epoch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        modified: Option<i64>,
    },
    /// Extension: a transfer finished: the whole file's size and SHA-256.
    FileDone {
        channel_id: String,
        path: String,
        size: u64,
        sha256: String,
    },
    /// Extension: a file operation failed, for the reason [`FileErrorCode`] names.
    FileError {
        channel_id: String,
        #[serde(with = "codes::wire")]
        code: FileErrorCode,
        message: String,
    },
    /// Extension (`pty`): the terminal's process started; output follows in binary data
    /// frames on the channel.
    PtyReady {
        channel_id: String,
    },
    /// Extension (`pty`): the terminal's process ended, after its last output frame:
    /// `exit_code` when it exited, `signal` (the number) when a signal killed it.
    PtyExit {
        channel_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
    },
    /// Extension (`pty`, `command-stdin`): the agent has written every input byte before
    /// `offset` (see the server's `channel_ack`).
    ChannelAck {
        channel_id: String,
        offset: u64,
    },
    /// Extension: a directory's entries.
    FileListing {
        channel_id: String,
        path: String,
        entries: Vec<FileEntry>,
    },
    /// Extension: bytes held of an interrupted upload (0 when none).
    FilePartial {
        channel_id: String,
        path: String,
        size: u64,
    },
    /// Extension: the receiver has every byte before `offset`.
    FileAck {
        channel_id: String,
        offset: u64,
    },
}

/// One directory entry of a `file_listing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<i64>,
}

/// A binary WebSocket frame carrying file data (extension `file-transfer`), terminal bytes
/// (`pty`) or a command's stdin (`command-stdin`): one byte of channel id length, the channel
/// id, the data's offset (in the file; in the channel's byte stream for terminals and stdin)
/// as a big-endian u64, then the data. JSON would cost a third more in base64 and a parse per chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFrame {
    pub channel_id: String,
    pub offset: u64,
    pub data: bytes::Bytes,
}

/// Why a binary frame is not a [`DataFrame`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed binary data frame")]
pub struct BadDataFrame;

impl DataFrame {
    /// # Errors
    /// [`BadDataFrame`] when the frame is shorter than its header says, or the channel id is
    /// not UTF-8.
    pub fn decode(frame: bytes::Bytes) -> Result<Self, BadDataFrame> {
        let len = usize::from(*frame.first().ok_or(BadDataFrame)?);
        let header = 1 + len + 8;
        if frame.len() < header {
            return Err(BadDataFrame);
        }
        let channel_id = std::str::from_utf8(&frame[1..=len])
            .map_err(|_| BadDataFrame)?
            .to_owned();
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&frame[1 + len..header]);
        Ok(Self {
            channel_id,
            offset: u64::from_be_bytes(offset),
            data: frame.slice(header..),
        })
    }

    /// The frame's bytes. Channel ids are at most 64 bytes, so the length fits a byte.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        Self::encode_parts(&self.channel_id, self.offset, &self.data)
    }

    /// The bytes of a frame of these parts, with the data copied once.
    #[must_use]
    pub fn encode_parts(channel_id: &str, offset: u64, data: &[u8]) -> Vec<u8> {
        let id = channel_id.as_bytes();
        let id = &id[..id.len().min(255)];
        let mut out = Vec::with_capacity(1 + id.len() + 8 + data.len());
        out.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(id);
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(data);
        out
    }
}

/// The data carried on a channel, both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum TunnelDataPayload {
    Terminal {
        command: String,
        /// Extension (`command-timeout`): kill the command after this many seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_secs: Option<u64>,
        /// Extension (`command-stdin`): keep the command's stdin open; bytes arrive in binary
        /// data frames on the channel (offset = position in stdin), `stdin_end` closes it.
        /// Absent or false: stdin is closed (`/dev/null`), as in the reference.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stdin: bool,
        /// Extension (`command-binary-output`): send stdout and stderr as binary data frames
        /// (see [`OutputChannel`]); `terminal_output` frames then carry only the end. Absent
        /// or false: the reference's `terminal_output` chunks.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        binary_output: bool,
    },
    TerminalOutput(TerminalOutput),
}

/// Output of a command, in chunks: `exit_code` is null until the last frame.
///
/// Lossless extension: when a chunk's bytes are not valid UTF-8, `stdout`/`stderr` carry them
/// decoded lossily (for readers of the reference) and `stdout_b64`/`stderr_b64` carry the exact
/// bytes (standard base64). Valid UTF-8 travels only as the reference's strings, and a chunk
/// never splits a character.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TerminalOutput {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_b64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_b64: Option<String>,
    /// Extension, last frame only: the signal that killed the process (`exit_code` is then
    /// 128 + its number), e.g. `"SIGKILL"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Extension, last frame only: `"timed_out"` or `"cancelled"` when the agent killed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
}

/// Why a `*_b64` field could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{field} is not valid base64")]
pub struct BadBase64 {
    pub field: &'static str,
}

impl TerminalOutput {
    /// Encodes one chunk of each stream losslessly (see the type's docs).
    #[must_use]
    pub fn chunk(stdout: &[u8], stderr: &[u8]) -> Self {
        let (stdout, stdout_b64) = encode_bytes(stdout);
        let (stderr, stderr_b64) = encode_bytes(stderr);
        Self {
            stdout,
            stderr,
            stdout_b64,
            stderr_b64,
            ..Self::default()
        }
    }

    /// The exact bytes of each stream: from `*_b64` when present, else the strings.
    ///
    /// # Errors
    /// [`BadBase64`] when a `*_b64` field is not base64.
    pub fn bytes(&self) -> Result<(Vec<u8>, Vec<u8>), BadBase64> {
        Ok((
            decode_bytes(&self.stdout, self.stdout_b64.as_deref(), "stdout_b64")?,
            decode_bytes(&self.stderr, self.stderr_b64.as_deref(), "stderr_b64")?,
        ))
    }
}

fn encode_bytes(bytes: &[u8]) -> (String, Option<String>) {
    use base64::Engine as _;
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), None),
        Err(_) => (
            String::from_utf8_lossy(bytes).into_owned(),
            Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    }
}

fn decode_bytes(text: &str, b64: Option<&str>, field: &'static str) -> Result<Vec<u8>, BadBase64> {
    use base64::Engine as _;
    match b64 {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| BadBase64 { field }),
        None => Ok(text.as_bytes().to_vec()),
    }
}

/// Extension: what a heartbeat says. Every field is optional so minimal agents can send `{}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HeartbeatPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
}

/// Why an inbound text frame could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("malformed {kind} message: {error}")]
    Malformed {
        kind: String,
        error: serde_json::Error,
    },
}

impl AgentMessage {
    /// Parses one text frame, telling unknown message types (tolerated: newer agents may
    /// speak extensions we do not know) from malformed ones.
    ///
    /// # Errors
    /// [`DecodeError`] naming what was wrong.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        decode(text, AGENT_TYPES)
    }
}

impl ServerMessage {
    /// Parses one text frame (the agent side).
    ///
    /// # Errors
    /// [`DecodeError`] naming what was wrong.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        decode(text, SERVER_TYPES)
    }
}

/// Every [`AgentMessage`] type by its wire name: a frame of one of these that does not parse
/// is malformed, not a newer agent's extension (a test checks every variant is here).
const AGENT_TYPES: &[&str] = &[
    "tunnel_ready",
    "tunnel_data",
    "tunnel_error",
    "heartbeat",
    "file_info",
    "file_done",
    "file_error",
    "pty_ready",
    "pty_exit",
    "channel_ack",
    "file_listing",
    "file_partial",
    "file_ack",
];

/// Every [`ServerMessage`] type by its wire name (as [`AGENT_TYPES`]).
const SERVER_TYPES: &[&str] = &[
    "tunnel_open",
    "tunnel_close",
    "tunnel_data",
    "command_cancel",
    "file_upload",
    "file_upload_end",
    "file_download",
    "file_list",
    "file_upload_status",
    "file_ack",
    "file_cancel",
    "pty_open",
    "pty_resize",
    "pty_close",
    "channel_ack",
    "stdin_end",
];

fn decode<T: serde::de::DeserializeOwned>(text: &str, known: &[&str]) -> Result<T, DecodeError> {
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(rename = "type")]
        kind: String,
    }
    match serde_json::from_str::<T>(text) {
        Ok(message) => Ok(message),
        Err(error) => match serde_json::from_str::<Envelope>(text) {
            Ok(Envelope { kind }) if !known.contains(&kind.as_str()) => {
                Err(DecodeError::UnknownType(kind.chars().take(64).collect()))
            }
            Ok(Envelope { kind }) => Err(DecodeError::Malformed { kind, error }),
            Err(_) if serde_json::from_str::<serde_json::Value>(text).is_err() => {
                Err(DecodeError::NotJson(error))
            }
            Err(_) => Err(DecodeError::Malformed {
                kind: "untyped".into(),
                error,
            }),
        },
    }
}

/// Encodes a message as one text frame.
#[must_use]
pub fn encode<T: Serialize>(message: &T) -> String {
    // Serializing these types cannot fail: every map key is a string and no value is a float.
    serde_json::to_string(message)
        .unwrap_or_else(|e| format!(r#"{{"type":"encode_error","payload":"{e}"}}"#))
}

#[cfg(test)]
mod tests;
