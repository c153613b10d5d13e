//! A terminal's recording: an asciicast v2 file written to the store in chunks as output
//! arrives, capped in size, never holding more than [`MAX_UNFLUSHED`] in memory.

use std::sync::Arc;
use std::time::Duration;

use rmm_domain::{CastWriter, TRUNCATED_MARKER};
use rmm_domain::{TermSize, TerminalId};
use tokio::time::Instant;

use super::TerminalView;
use crate::app::{App, Ports};
use crate::ports::{Clock, RecordingRepository};

/// A chunk is written once this much is buffered (and every second).
const CHUNK: usize = 64 * 1024;
/// While the store refuses writes, output is buffered up to this; beyond it the terminal
/// takes no more output from the agent (which then stops reading the PTY) until the store
/// is back: a terminal never runs unrecorded.
const MAX_UNFLUSHED: usize = 8 * 1024 * 1024;
/// Room kept under the cap for the marker that says the recording was cut.
const MARKER_ROOM: u64 = 256;

pub(crate) struct Recorder<P: Ports> {
    app: Arc<App<P>>,
    id: TerminalId,
    start: Instant,
    encoder: CastWriter,
    buf: Vec<u8>,
    seq: u32,
    /// Bytes of the cast so far, stored or buffered.
    size: u64,
    cap: u64,
    truncated: bool,
    /// The store refused the last write (logged once per outage).
    failing: bool,
}

impl<P: Ports> Recorder<P> {
    pub(crate) fn new(app: Arc<App<P>>, view: &TerminalView) -> Self {
        let header = CastWriter::header(
            view.size.cols(),
            view.size.rows(),
            view.started_at.as_unix_micros() / 1_000_000,
            &view.term,
        );
        let cap = app.config.max_recording_bytes;
        Self {
            app,
            id: view.id,
            start: Instant::now(),
            encoder: CastWriter::new(),
            size: header.len() as u64,
            buf: header.into_bytes(),
            seq: 0,
            cap,
            truncated: false,
            failing: false,
        }
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Whether more output may be taken now (the store keeps up).
    pub(crate) fn may_take(&self) -> bool {
        self.buf.len() < MAX_UNFLUSHED
    }

    pub(crate) async fn output(&mut self, bytes: &[u8]) {
        if self.truncated {
            return;
        }
        if let Some(line) = self.encoder.output(self.elapsed(), bytes) {
            self.push(&line);
        }
        if self.buf.len() >= CHUNK {
            self.flush().await;
        }
    }

    pub(crate) fn resize(&mut self, size: TermSize) {
        if !self.truncated {
            let line = CastWriter::resize(self.elapsed(), size.cols(), size.rows());
            self.push(&line);
        }
    }

    fn push(&mut self, line: &str) {
        if line.is_empty() {
            return;
        }
        if self.size + line.len() as u64 + MARKER_ROOM > self.cap {
            let marker = CastWriter::marker(self.elapsed(), TRUNCATED_MARKER);
            self.size += marker.len() as u64;
            self.buf.extend_from_slice(marker.as_bytes());
            self.truncated = true;
            tracing::warn!(terminal_id = %self.id, cap = self.cap, "terminal recording reached its size cap; the rest is not recorded");
            return;
        }
        self.size += line.len() as u64;
        self.buf.extend_from_slice(line.as_bytes());
    }

    /// Writes what is buffered as the next chunk; on a refusal keeps it for the next try.
    pub(crate) async fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self
            .app
            .recordings
            .append(self.id, self.seq, &self.buf)
            .await
        {
            Ok(()) => {
                if self.failing {
                    tracing::info!(terminal_id = %self.id, "terminal recording written again");
                }
                self.failing = false;
                self.seq += 1;
                self.buf.clear();
            }
            Err(e) => {
                if !self.failing {
                    tracing::error!(terminal_id = %self.id, error = %e, buffered = self.buf.len(), "could not write the terminal recording; keeping it to write again");
                }
                self.failing = true;
            }
        }
    }

    /// The terminal ended: the rest written (a few tries) and the recording closed.
    pub(crate) async fn finish(&mut self) {
        if !self.truncated
            && let Some(tail) = self.encoder.finish(self.elapsed())
        {
            self.push(&tail);
        }
        for attempt in 0..5 {
            self.flush().await;
            if self.buf.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
        }
        if !self.buf.is_empty() {
            tracing::error!(terminal_id = %self.id, lost = self.buf.len(), "the end of a terminal recording could not be written");
        }
        let now = self.app.clock.now();
        if let Err(e) = self
            .app
            .recordings
            .finish(self.id, now, self.truncated)
            .await
        {
            tracing::error!(terminal_id = %self.id, error = %e, "could not close a terminal recording");
        }
    }
}
