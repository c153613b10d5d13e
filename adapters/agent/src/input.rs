//! A byte stream from the server into a process: a terminal's input or a command's stdin
//! (extensions `pty` and `command-stdin`). The server's binary data frames are queued in order
//! for the process's task, which writes them and acknowledges them with `channel_ack`.
//!
//! Memory is bounded by the window the server keeps ([`STREAM_WINDOW`] bytes and
//! [`STREAM_WINDOW_FRAMES`] frames beyond the last ack): a frame that would queue more than
//! that is dropped with a warning (rate-limited), and the stream resynchronises on the next
//! frame's offset. The connection never waits for a process that does not read its input.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use rmm_protocol::AgentMessage;
use rmm_protocol::limits::{STREAM_FRAME_DATA, STREAM_WINDOW, STREAM_WINDOW_FRAMES};
use tokio::sync::mpsc;

use crate::Event;

/// What the connection hands to a process's input.
#[derive(Debug)]
enum Piece {
    Data {
        offset: u64,
        data: Bytes,
    },
    /// `stdin_end`: EOF after what is queued.
    End,
}

/// Bytes and frames queued and not yet taken by the writer.
#[derive(Debug, Default)]
struct Queued {
    bytes: AtomicU64,
    frames: AtomicU64,
}

/// The connection's end: never waits.
#[derive(Debug)]
pub(crate) struct InputSender {
    tx: mpsc::UnboundedSender<Piece>,
    queued: Arc<Queued>,
    /// Overruns warned about (the first few are; the rest only at debug level).
    warned: u32,
}

/// The process task's end.
#[derive(Debug)]
pub(crate) struct InputReceiver {
    rx: mpsc::UnboundedReceiver<Piece>,
    queued: Arc<Queued>,
    channel: String,
    /// The offset of the next byte to hand out.
    next: u64,
    /// The last offset acknowledged to the server.
    acked: u64,
}

/// Warnings about a misbehaving server per stream, before they go to debug level.
const WARN_LIMIT: u32 = 3;

/// A new input stream for the process on `channel`.
pub(crate) fn input(channel: &str) -> (InputSender, InputReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(Queued::default());
    (
        InputSender {
            tx,
            queued: Arc::clone(&queued),
            warned: 0,
        },
        InputReceiver {
            rx,
            queued,
            channel: channel.to_owned(),
            next: 0,
            acked: 0,
        },
    )
}

impl InputSender {
    /// Queues a data frame, unless it would take the queue beyond the window (then it is
    /// dropped with a warning).
    pub(crate) fn data(&mut self, channel: &str, offset: u64, data: Bytes) {
        let len = data.len() as u64;
        if offset.checked_add(len).is_none() {
            self.warn(
                channel,
                "input frame dropped: its offset is past the end of any stream",
            );
            return;
        }
        let bytes = self.queued.bytes.load(Ordering::Acquire);
        let frames = self.queued.frames.load(Ordering::Acquire);
        if bytes + len > STREAM_WINDOW || frames + 1 > STREAM_WINDOW_FRAMES {
            self.warn(
                channel,
                "input beyond the window dropped (the server ignores acks)",
            );
            return;
        }
        // Only this (the connection's) side adds, so the check above still holds.
        self.queued.bytes.fetch_add(len, Ordering::AcqRel);
        self.queued.frames.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(Piece::Data { offset, data }).is_err() {
            // The process's task is ending: nothing reads any more.
            tracing::debug!(channel_id = %channel, "input for an ending process dropped");
        }
    }

    /// `stdin_end`: the writer closes the process's input after what is queued.
    pub(crate) fn end(&self) {
        let _ = self.tx.send(Piece::End);
    }

    /// A bad frame from the server, warned about a few times per stream, then at debug level.
    pub(crate) fn warn(&mut self, channel: &str, what: &str) {
        if self.warned < WARN_LIMIT {
            self.warned += 1;
            tracing::warn!(channel_id = %channel, "{what}");
        } else {
            tracing::debug!(channel_id = %channel, "{what}");
        }
    }
}

impl InputReceiver {
    /// The next bytes to write, in stream order: `None` at `stdin_end` or when the
    /// connection's end is gone. Overlaps with bytes already handed out are cut off; a gap
    /// (frames dropped as over the window) is skipped with a warning.
    pub(crate) async fn recv(&mut self) -> Option<Bytes> {
        loop {
            let (offset, mut data) = match self.rx.recv().await? {
                Piece::Data { offset, data } => (offset, data),
                Piece::End => return None,
            };
            self.queued
                .bytes
                .fetch_sub(data.len() as u64, Ordering::AcqRel);
            self.queued.frames.fetch_sub(1, Ordering::AcqRel);
            let end = offset + data.len() as u64;
            if end <= self.next {
                continue;
            }
            if offset > self.next {
                tracing::warn!(channel_id = %self.channel, expected = self.next, offset, "input stream has a gap; resuming at the frame's offset");
                self.next = offset;
            }
            let skip = usize::try_from(self.next - offset).unwrap_or(data.len());
            data = data.slice(skip.min(data.len())..);
            self.next = end;
            return Some(data);
        }
    }

    /// The bytes last handed out are written (or discarded): acknowledge them when the queue
    /// is empty or a frame's worth is unacknowledged.
    pub(crate) async fn written(&mut self, out: &mpsc::Sender<Event>) {
        let empty = self.queued.frames.load(Ordering::Acquire) == 0;
        if self.next > self.acked && (empty || self.next - self.acked >= STREAM_FRAME_DATA as u64) {
            self.acked = self.next;
            let ack = AgentMessage::ChannelAck {
                channel_id: self.channel.clone(),
                offset: self.next,
            };
            // An error means the connection is gone: nobody waits for the ack.
            let _ = out.send(Event::Frame(ack)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acks(rx: &mut mpsc::Receiver<Event>) -> Vec<u64> {
        let mut offsets = Vec::new();
        while let Ok(event) = rx.try_recv() {
            if let Event::Frame(AgentMessage::ChannelAck { offset, .. }) = event {
                offsets.push(offset);
            }
        }
        offsets
    }

    #[tokio::test]
    async fn bytes_come_out_in_order_without_overlaps_and_are_acked_when_the_queue_empties() {
        let (out, mut events) = mpsc::channel(16);
        let (mut tx, mut rx) = input("pty-1");
        tx.data("pty-1", 0, Bytes::from_static(b"abc"));
        // A duplicate, then an overlap of which only "de" is new.
        tx.data("pty-1", 1, Bytes::from_static(b"bc"));
        tx.data("pty-1", 2, Bytes::from_static(b"cde"));
        assert_eq!(rx.recv().await.unwrap(), "abc");
        rx.written(&out).await;
        // Frames still queued: no ack yet.
        assert!(acks(&mut events).is_empty());
        assert_eq!(rx.recv().await.unwrap(), "de");
        rx.written(&out).await;
        assert_eq!(acks(&mut events), vec![5]);
        tx.end();
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_frame_whose_end_overflows_is_dropped_and_the_stream_goes_on() {
        let (mut tx, mut rx) = input("pty-1");
        tx.data("pty-1", u64::MAX - 1, Bytes::from_static(b"abc"));
        assert_eq!(tx.queued.frames.load(Ordering::Acquire), 0);
        tx.data("pty-1", 0, Bytes::from_static(b"ok"));
        assert_eq!(rx.recv().await.unwrap(), "ok");
    }

    #[tokio::test]
    async fn a_server_beyond_the_window_has_its_excess_dropped_and_the_stream_resumes() {
        let (out, mut events) = mpsc::channel(16);
        let (mut tx, mut rx) = input("pty-1");
        let frame = Bytes::from(vec![7u8; STREAM_FRAME_DATA]);
        let frames = STREAM_WINDOW / STREAM_FRAME_DATA as u64;
        for n in 0..=frames {
            tx.data("pty-1", n * STREAM_FRAME_DATA as u64, frame.clone());
        }
        assert_eq!(tx.queued.bytes.load(Ordering::Acquire), STREAM_WINDOW);
        let mut taken = 0;
        for _ in 0..frames {
            taken += rx.recv().await.unwrap().len() as u64;
        }
        assert_eq!(taken, STREAM_WINDOW);
        rx.written(&out).await;
        assert_eq!(acks(&mut events), vec![STREAM_WINDOW]);
        // The dropped frame leaves a gap; the next one is written from its offset.
        tx.data("pty-1", STREAM_WINDOW + 100, Bytes::from_static(b"x"));
        assert_eq!(rx.recv().await.unwrap(), "x");
        // Tiny frames are bounded by count.
        for n in 0..STREAM_WINDOW_FRAMES + 10 {
            tx.data("pty-1", STREAM_WINDOW + 101 + n, Bytes::from_static(b"y"));
        }
        assert_eq!(
            tx.queued.frames.load(Ordering::Acquire),
            STREAM_WINDOW_FRAMES
        );
    }
}
