//! A terminal's output: read from the PTY master while the server has granted credit, one
//! binary data frame per read (coalesced up to [`STREAM_FRAME_DATA`]), offsets cumulative.
//! Out of credit, the PTY is not read, so the process blocks on its writes and the agent's
//! memory stays flat.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::FutureExt as _;
use rmm_protocol::DataFrame;
use rmm_protocol::limits::{STREAM_FRAME_DATA, STREAM_WINDOW, STREAM_WINDOW_FRAMES};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::Event;

/// When the output last moved (bytes read, credit granted), shared by the terminal's futures
/// on its one task (an atomic only because the task must be `Send`).
#[derive(Debug)]
pub(super) struct Progress {
    base: Instant,
    micros: AtomicU64,
}

impl Progress {
    pub(super) fn new() -> Self {
        Self {
            base: Instant::now(),
            micros: AtomicU64::new(0),
        }
    }

    pub(super) fn mark(&self) {
        let micros = u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_max(micros, Ordering::Relaxed);
    }

    pub(super) fn last(&self) -> Instant {
        self.base + std::time::Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }
}

/// What the server has not acknowledged yet.
#[derive(Debug, Default)]
pub(super) struct Credit {
    /// Bytes sent: the offset of the next frame.
    sent: u64,
    acked: u64,
    /// The end offsets of the frames beyond the ack.
    frames: VecDeque<u64>,
    /// The server's acks are gone (the connection ended): read and discard until EOF.
    unlimited: bool,
}

impl Credit {
    pub(super) fn acked(&mut self, offset: u64) {
        // An ack beyond what was sent is a confused server; it cannot grant future credit.
        self.acked = self.acked.max(offset.min(self.sent));
        while self.frames.front().is_some_and(|end| *end <= self.acked) {
            self.frames.pop_front();
        }
    }

    /// How many bytes the next frame may carry: 0 when out of credit.
    pub(super) fn room(&self) -> usize {
        if self.unlimited {
            return STREAM_FRAME_DATA;
        }
        let in_flight = self.sent - self.acked;
        if in_flight >= STREAM_WINDOW || self.frames.len() as u64 >= STREAM_WINDOW_FRAMES {
            return 0;
        }
        usize::try_from(STREAM_WINDOW - in_flight)
            .map_or(STREAM_FRAME_DATA, |left| left.min(STREAM_FRAME_DATA))
    }

    /// A frame of `len` bytes goes out: its offset.
    pub(super) fn sent(&mut self, len: usize) -> u64 {
        let offset = self.sent;
        self.sent += len as u64;
        self.frames.push_back(self.sent);
        offset
    }
}

/// Streams the PTY's output until EOF (EIO once no process holds the PTY's other end).
/// `progress` is set whenever bytes are read or credit arrives (the drain after the process's
/// exit gives up only once nothing moves).
pub(super) async fn pump(
    mut pty: impl AsyncRead + Unpin,
    mut acks: watch::Receiver<u64>,
    channel: &str,
    out: &mpsc::Sender<Event>,
    progress: &Progress,
) {
    let mut credit = Credit::default();
    let mut buf = vec![0; STREAM_FRAME_DATA];
    loop {
        credit.acked(*acks.borrow_and_update());
        let room = credit.room();
        if room == 0 {
            if acks.changed().await.is_err() {
                credit.unlimited = true;
            }
            progress.mark();
            continue;
        }
        let Some(read) = read_some(&mut pty, &mut buf[..room], channel).await else {
            return;
        };
        progress.mark();
        let frame = DataFrame {
            channel_id: channel.to_owned(),
            offset: credit.sent(read),
            data: Bytes::copy_from_slice(&buf[..read]),
        };
        // An error means the connection is gone: read on to EOF, sending nothing.
        let _ = out.send(Event::Data(frame)).await;
    }
}

/// Reads what is ready, up to `buf`'s length: one read that may wait, then more without
/// waiting. `None` at EOF or on an error (EIO is the PTY's EOF).
async fn read_some(
    pty: &mut (impl AsyncRead + Unpin),
    buf: &mut [u8],
    channel: &str,
) -> Option<usize> {
    let mut filled = loop {
        match pty.read(buf).await {
            Ok(0) => return None,
            Ok(read) => break read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                if e.raw_os_error() != Some(nix::libc::EIO) {
                    tracing::warn!(channel_id = %channel, error = %e, "reading the terminal failed");
                }
                return None;
            }
        }
    };
    while filled < buf.len() {
        match pty.read(&mut buf[filled..]).now_or_never() {
            Some(Ok(read)) if read > 0 => filled += read,
            // Nothing more ready now, or EOF/an error, which the next read reports.
            _ => break,
        }
    }
    Some(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_stops_at_the_window_in_bytes_or_frames_and_acks_restore_it() {
        let mut credit = Credit::default();
        let frame = STREAM_FRAME_DATA;
        let frames = STREAM_WINDOW / frame as u64;
        for n in 0..frames {
            assert_eq!(credit.room(), frame);
            assert_eq!(credit.sent(frame), n * frame as u64);
        }
        assert_eq!(credit.room(), 0);
        // An ack beyond what was sent grants nothing more than everything sent.
        credit.acked(u64::MAX);
        assert_eq!(credit.acked, STREAM_WINDOW);
        assert_eq!(credit.room(), frame);
        // A partial window left: the frame is cut to it.
        credit.sent(frame * (frames as usize - 1) + 10);
        assert_eq!(credit.room(), frame - 10);

        let mut tiny = Credit::default();
        for _ in 0..STREAM_WINDOW_FRAMES {
            tiny.sent(1);
        }
        assert_eq!(tiny.room(), 0);
        tiny.acked(1);
        assert_eq!(tiny.room(), frame);
        // A stale ack changes nothing.
        tiny.acked(0);
        assert_eq!(tiny.acked, 1);
    }
}
