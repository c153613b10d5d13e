//! A command's output: each pipe streamed as `terminal_output` frames while it is produced,
//! then exactly one final frame with the exit code, the signal and why the agent killed it.

use std::process::ExitStatus;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::ChildStdin;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::StopReason;
use crate::Event;
use crate::chunker::Chunker;
use crate::input::InputReceiver;
use rmm_protocol::{
    AgentMessage, DataFrame, OUTPUT_CHUNK, OutputChannel, OutputStream, TerminalOutput,
    TunnelDataPayload,
};

/// Which pipe a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    const fn wire(self) -> OutputStream {
        match self {
            Self::Stdout => OutputStream::Stdout,
            Self::Stderr => OutputStream::Stderr,
        }
    }

    fn chunk(self, bytes: &[u8]) -> TerminalOutput {
        match self {
            Self::Stdout => TerminalOutput::chunk(bytes, b""),
            Self::Stderr => TerminalOutput::chunk(b"", bytes),
        }
    }
}

/// Streams one pipe until EOF, one frame per chunk, as soon as it is read: `terminal_output`
/// frames, or with `binary` (extension `command-binary-output`) binary data frames of up to
/// [`OUTPUT_CHUNK`] bytes, their offsets the position in the stream. Either way a chunk never
/// splits a UTF-8 character, so a watcher given the server's JSON translation reads the same
/// text.
pub(super) async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    stream: Stream,
    channel: &str,
    binary: bool,
    out: &mpsc::Sender<Event>,
) {
    let mut chunker = if binary {
        Chunker::with_size(OUTPUT_CHUNK)
    } else {
        Chunker::default()
    };
    let mut frames = Frames {
        channel,
        stream,
        binary,
        offset: 0,
    };
    loop {
        let read = match pipe.read(chunker.spare()).await {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(channel_id = %channel, stream = ?stream, error = %e, "reading command output failed");
                break;
            }
        };
        if let Some(chunk) = chunker.filled(read) {
            frames.send(out, chunk).await;
        }
    }
    if let Some(rest) = chunker.finish() {
        frames.send(out, rest).await;
    }
}

/// The frames of one stream.
struct Frames<'a> {
    channel: &'a str,
    stream: Stream,
    binary: bool,
    /// Bytes of the stream sent so far.
    offset: u64,
}

impl Frames<'_> {
    async fn send(&mut self, out: &mpsc::Sender<Event>, chunk: Vec<u8>) {
        let (channel, stream) = (self.channel, self.stream);
        if !self.binary {
            send_with(out, || {
                Event::Frame(output_frame(channel, stream.chunk(&chunk)))
            })
            .await;
            return;
        }
        let offset = self.offset;
        self.offset += chunk.len() as u64;
        let frame = DataFrame {
            channel_id: OutputChannel {
                channel,
                stream: stream.wire(),
            }
            .id(),
            offset,
            data: chunk.into(),
        };
        send_with(out, || Event::Data(frame)).await;
    }
}

/// Writes the server's stdin bytes to the command in order, acknowledging them, and closes
/// the pipe at `stdin_end`. A command that stops reading (or exits) makes the writes fail: the
/// rest is discarded but still acknowledged, so the server's sender is not left waiting.
/// Never resolves: the command's end drops it (and the pipe with it).
pub(super) async fn feed_stdin(
    stdin: Option<ChildStdin>,
    input: Option<InputReceiver>,
    channel: &str,
    out: &mpsc::Sender<Event>,
) {
    if let (Some(mut stdin), Some(mut input)) = (stdin, input) {
        let mut broken = false;
        while let Some(bytes) = input.recv().await {
            if !broken && let Err(e) = stdin.write_all(&bytes).await {
                tracing::debug!(channel_id = %channel, error = %e, "the command no longer reads its stdin");
                broken = true;
            }
            input.written(out).await;
        }
        // EOF for the command.
        drop(stdin);
    }
    std::future::pending::<()>().await;
}

/// Queues a frame, waiting for room: this wait is the backpressure on the command's output.
pub(super) async fn send(out: &mpsc::Sender<Event>, frame: AgentMessage) {
    send_with(out, || Event::Frame(frame)).await;
}

/// Like [`send`], but the frame (up to ~4x its raw chunk once encoded losslessly) is built
/// only once there is room for it, so a waiting command holds just its raw chunk.
async fn send_with(out: &mpsc::Sender<Event>, frame: impl FnOnce() -> Event) {
    // An error means the connection is gone; its registry went with it, so the command is
    // being killed and its output has nowhere to go. Reading on lets the pipes reach EOF.
    if let Ok(permit) = out.reserve().await {
        permit.send(frame());
    }
}

fn output_frame(channel: &str, output: TerminalOutput) -> AgentMessage {
    AgentMessage::TunnelData {
        channel_id: channel.to_owned(),
        data: TunnelDataPayload::TerminalOutput(output),
    }
}

pub(super) fn error_frame(channel: &str, error: &str) -> AgentMessage {
    AgentMessage::TunnelError {
        channel_id: channel.to_owned(),
        error: error.to_owned(),
    }
}

/// Reports how the command ended: its final frame, queued.
pub(super) async fn report_end(
    out: &mpsc::Sender<Event>,
    channel: &str,
    status: Option<std::io::Result<ExitStatus>>,
    reason: Option<StopReason>,
    started: Instant,
) {
    let (exit_code, signal) = match status {
        Some(Ok(status)) => exit_fields(status),
        Some(Err(e)) => {
            tracing::warn!(channel_id = %channel, error = %e, "cannot read the command's exit status");
            (-1, None)
        }
        // The loop ends only with a status; kept total rather than unwrapped.
        None => (-1, None),
    };
    tracing::info!(channel_id = %channel, exit_code, signal = ?signal, end_reason = ?reason.map(StopReason::as_str), elapsed_ms = started.elapsed().as_millis(), "command ended");
    let last = TerminalOutput {
        exit_code: Some(exit_code),
        signal,
        end_reason: reason.map(|r| r.as_str().to_owned()),
        ..TerminalOutput::default()
    };
    send(out, output_frame(channel, last)).await;
}

/// The final frame's `exit_code` and `signal`: a process killed by a signal reports 128 + its
/// number (the shells' convention) and the signal's name.
fn exit_fields(status: ExitStatus) -> (i32, Option<String>) {
    if let Some(code) = status.code() {
        return (code, None);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(signo) = status.signal() {
            let name = nix::sys::signal::Signal::try_from(signo)
                .map_or_else(|_| format!("SIG{signo}"), |s| s.as_str().to_owned());
            return (128 + signo, Some(name));
        }
    }
    (-1, None)
}
