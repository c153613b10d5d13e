//! Runs the file operations of a tunnel (the `file-transfer` extension): one task per
//! operation, each on its own File channel, so a transfer never waits for a command or another
//! transfer. Frames go into the connection's bounded queue ([`Event`]), like command output.
//!
//! - Upload: bytes go to a partial file beside the target, `.<name>.rmm-partial`, which is
//!   renamed over the target only once `file_upload_end` confirmed its size and SHA-256. A
//!   cancel or a lost connection keeps the partial for a resume (`file_upload_status` tells
//!   how much of it there is); the target path never holds a partial file.
//! - Download: the SHA-256 of the whole file first (`file_info`), then data frames under a
//!   window of [`FILE_WINDOW`] unacknowledged bytes, then `file_done`.
//! - Listing: the entries of a directory, sorted by name, bounded.
//!
//! It must not know about the socket or the tunnel's rules: [`TunnelState`] decides what may
//! run and routes the server's input here; this module only does the file work. Blocking file
//! system calls run on tokio's blocking pool, one bounded piece (a frame, a chunk) at a time,
//! so a slow disk stalls only its own transfer.
//!
//! Unix is tested here. Windows is kept in mind (no `mode`, `modified` from the system time,
//! no directory fsync) but untested.
//!
//! [`TunnelState`]: super::TunnelState
//! [`FILE_WINDOW`]: rmm_protocol::limits::FILE_WINDOW

mod disk;
mod download;
mod failure;
mod journal;
mod listing;
mod partial;
#[cfg(test)]
#[cfg(target_os = "linux")]
mod path_tests;
#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests;
mod upload;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use rmm_domain::ChannelId;
use rmm_protocol::limits::FILE_WINDOW;
use rmm_protocol::{AgentMessage, FileErrorCode as Code};
use tokio::sync::{mpsc, oneshot, watch};

use crate::Event;
use crate::config::AgentConfig;
use crate::tunnel::{FileInput, FileOp};
use download::download;
use failure::Failure;
use listing::list;
use upload::{Upload, upload_status};

pub use partial::PathLocks;

/// The locks of upload paths, shared by every connection, with the journal of partial files
/// when `config` names one; and the task that removes the old ones (at start, then every
/// [`journal::sweep_interval`]) for as long as the guard lives.
pub(crate) fn partials(config: &AgentConfig) -> (PathLocks, Option<AbortOnDrop>) {
    let Some(journal) = config.partial_journal.clone() else {
        return (PathLocks::default(), None);
    };
    tracing::info!(journal = %journal.display(), max_age_secs = config.partial_max_age.as_secs(), "interrupted uploads' partial files are removed when this old");
    let locks = PathLocks::with_journal(journal);
    let (sweeping, max_age) = (locks.clone(), config.partial_max_age);
    let task = tokio::spawn(async move {
        let mut every = tokio::time::interval(journal::sweep_interval(max_age));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            // Nothing recorded, nothing to look at: no blocking thread for it (one started
            // at every agent start and held ~200 KiB of the idle agent's RSS, libc's thread
            // code and a stack, for a sweep of nothing).
            if !sweeping.has_partials() {
                continue;
            }
            let locks = sweeping.clone();
            let swept = tokio::task::spawn_blocking(move || locks.sweep(max_age)).await;
            if let Err(e) = swept {
                tracing::error!(error = %e, "the sweep of partial files failed");
            }
        }
    });
    (locks, Some(AbortOnDrop(task)))
}

/// Aborts its task when dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Upload data received but not yet written, at most: twice the window the server promises,
/// so a server off by a frame is not failed while memory stays bounded. Each frame also
/// counts [`FRAME_COST`] so that a flood of tiny frames is bounded too.
const UPLOAD_BUFFER: usize = 2 * FILE_WINDOW as usize;
const FRAME_COST: usize = 128;

/// Identifies one file operation, so a late [`Event::TransferEnded`] of a cancelled one can
/// never close a channel that a newer operation reuses.
pub type TransferId = u64;

/// Why an operation is stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// `file_cancel`, `tunnel_close`, the connection lost or the agent shutting down: stop
    /// without a word (an upload keeps its partial file).
    Cancelled,
    /// The server sent more upload data than its window allows: fail the upload.
    Overrun,
}

/// The file operations running for one connection. Dropping it stops every one of them.
#[derive(Debug)]
pub struct Transfers {
    events: mpsc::Sender<Event>,
    locks: PathLocks,
    next: TransferId,
    running: HashMap<TransferId, Running>,
}

#[derive(Debug)]
struct Running {
    channel: ChannelId,
    stop: Option<oneshot::Sender<Stop>>,
    feed: Feed,
    /// Its channel is no longer in the tunnel state (cancelled, tunnel closed, connection
    /// lost): it receives no more input and finishing must not release anything.
    detached: bool,
}

/// How the server's input reaches a running operation.
#[derive(Debug)]
enum Feed {
    /// Unbounded, but bounded in bytes by `queued` (see [`UPLOAD_BUFFER`]): the connection
    /// must never wait for a slow disk, or every other channel would wait with it.
    Upload {
        input: mpsc::UnboundedSender<UploadInput>,
        queued: Arc<AtomicUsize>,
    },
    /// Only the highest ack matters, so a watch holds it: no queue for a server to fill.
    Download { acks: watch::Sender<u64> },
    /// Listings and upload status take no input.
    Nothing,
}

#[derive(Debug)]
enum UploadInput {
    Data { offset: u64, data: Bytes },
    End { size: u64, sha256: Option<String> },
}

impl Transfers {
    /// `locks` is shared by every connection of the agent: an upload cancelled with a lost
    /// connection may still be writing when the next connection resumes it.
    #[must_use]
    pub fn new(events: mpsc::Sender<Event>, locks: PathLocks) -> Self {
        Self {
            events,
            locks,
            next: 0,
            running: HashMap::new(),
        }
    }

    /// Starts `op` on its own task. The tunnel state has already opened its channel.
    pub fn start(&mut self, channel: ChannelId, op: FileOp) {
        let id = self.next;
        self.next += 1;
        let (stop, stopped) = oneshot::channel();
        let task = Task {
            channel: channel.clone(),
            out: self.events.clone(),
            stop: stopped,
        };
        // Each operation on its own task, which ends by reporting its outcome (`finish`).
        let feed = match op {
            FileOp::Upload { path, offset } => {
                let (input, inputs) = mpsc::unbounded_channel();
                let queued = Arc::new(AtomicUsize::new(0));
                let upload = Upload {
                    path,
                    offset,
                    input: inputs,
                    queued: Arc::clone(&queued),
                    locks: self.locks.clone(),
                };
                tokio::spawn(async move {
                    let mut task = task;
                    let outcome = upload.run(&mut task).await;
                    task.finish(id, outcome).await;
                });
                Feed::Upload { input, queued }
            }
            FileOp::Download { path, offset } => {
                let (acks, acked) = watch::channel(offset);
                tokio::spawn(async move {
                    let mut task = task;
                    let outcome = download(&mut task, path, offset, acked).await;
                    task.finish(id, outcome).await;
                });
                Feed::Download { acks }
            }
            FileOp::List { path } => {
                tokio::spawn(async move {
                    let mut task = task;
                    let outcome = list(&mut task, path).await;
                    task.finish(id, outcome).await;
                });
                Feed::Nothing
            }
            FileOp::UploadStatus { path } => {
                tokio::spawn(async move {
                    let mut task = task;
                    let outcome = upload_status(&mut task, path).await;
                    task.finish(id, outcome).await;
                });
                Feed::Nothing
            }
        };
        self.running.insert(
            id,
            Running {
                channel,
                stop: Some(stop),
                feed,
                detached: false,
            },
        );
    }

    /// Hands the server's `input` to the operation on `channel`. Input an operation does not
    /// take (data for a download, say) is a server bug: logged and dropped.
    pub fn input(&mut self, channel: &ChannelId, input: FileInput) {
        let Some(running) = self
            .running
            .values_mut()
            .find(|r| !r.detached && r.channel == *channel)
        else {
            // Its task ended and its channel is being released: the input has no reader.
            return;
        };
        match (&running.feed, input) {
            (Feed::Upload { input, queued }, FileInput::Data { offset, data }) => {
                if running.stop.is_none() || input.is_closed() {
                    // Already overrun, or it failed: the task is on its way out, and what the
                    // server sent before it heard has nowhere to go.
                    return;
                }
                let cost = data.len() + FRAME_COST;
                if queued.fetch_add(cost, Ordering::AcqRel) + cost > UPLOAD_BUFFER {
                    queued.fetch_sub(cost, Ordering::AcqRel);
                    tracing::warn!(channel_id = %channel, "upload data beyond the flow-control window; failing the upload");
                    running.stop_with(Stop::Overrun);
                    return;
                }
                // An error means the task already ended; the data has nowhere to go.
                let _ = input.send(UploadInput::Data { offset, data });
            }
            (Feed::Upload { input, .. }, FileInput::UploadEnd { size, sha256 }) => {
                let _ = input.send(UploadInput::End { size, sha256 });
            }
            (Feed::Download { acks }, FileInput::Ack { offset }) => {
                // Acks only move forward; a stale one changes nothing (and wakes nobody).
                acks.send_if_modified(|acked| {
                    let forward = offset > *acked;
                    if forward {
                        *acked = offset;
                    }
                    forward
                });
            }
            (feed, input) => {
                tracing::warn!(channel_id = %channel, feed = feed.name(), input = input_name(&input), "file input that this operation does not take ignored");
            }
        }
    }

    /// `file_cancel`: stops the operation on `channel` without a word; its channel is
    /// already closed, so the id may be reused at once (an upload's partial file stays
    /// guarded by its path lock until the stopped task lets go of it).
    pub fn cancel(&mut self, channel: &ChannelId) {
        for running in self.running.values_mut() {
            if !running.detached && running.channel == *channel {
                running.detached = true;
                running.stop_with(Stop::Cancelled);
            }
        }
    }

    /// The tunnel closed or the connection ends: stops every operation.
    pub fn stop_all(&mut self) {
        for running in self.running.values_mut() {
            running.detached = true;
            running.stop_with(Stop::Cancelled);
        }
    }

    /// Operation `id` ended: the channel to release in the tunnel state, unless it is
    /// already gone.
    pub fn finished(&mut self, id: TransferId) -> Option<ChannelId> {
        let running = self.running.remove(&id)?;
        (!running.detached).then_some(running.channel)
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.running.len()
    }
}

impl Running {
    fn stop_with(&mut self, stop: Stop) {
        if let Some(sender) = self.stop.take() {
            // The task may have just ended on its own; then there is nothing to stop.
            let _ = sender.send(stop);
        }
    }
}

impl Feed {
    fn name(&self) -> &'static str {
        match self {
            Self::Upload { .. } => "upload",
            Self::Download { .. } => "download",
            Self::Nothing => "query",
        }
    }
}

fn input_name(input: &FileInput) -> &'static str {
    match input {
        FileInput::Data { .. } => "data",
        FileInput::UploadEnd { .. } => "file_upload_end",
        FileInput::Ack { .. } => "file_ack",
    }
}

/// What every operation's task has: its channel, the connection's queue and its stop signal.
#[derive(Debug)]
struct Task {
    channel: ChannelId,
    out: mpsc::Sender<Event>,
    stop: oneshot::Receiver<Stop>,
}

/// How an operation ended.
#[derive(Debug)]
enum Outcome {
    /// Its final frame (`file_done`, `file_listing`, `file_partial`), to send.
    Done(AgentMessage),
    /// Stopped from outside, or the connection is gone: nothing to say.
    Stopped(Stop),
}

impl Task {
    /// Sends the operation's final frame (or its `file_error`), then tells the connection
    /// that it ended, in the same queue: its channel is released only after the server has
    /// been told.
    async fn finish(self, id: TransferId, outcome: Result<Outcome, Failure>) {
        let channel_id = self.channel.as_str();
        let final_frame = match outcome {
            Ok(Outcome::Done(frame)) => Some(frame),
            Ok(Outcome::Stopped(Stop::Cancelled)) => None,
            Ok(Outcome::Stopped(Stop::Overrun)) => Some(
                Failure::new(
                    Code::Io,
                    "the server sent more data than the flow-control window allows".into(),
                )
                .frame(channel_id),
            ),
            Err(failure) => {
                tracing::info!(channel_id, code = failure.code.as_str(), message = %failure.message, "file operation failed");
                Some(failure.frame(channel_id))
            }
        };
        if let Some(frame) = final_frame {
            self.send(frame).await;
        }
        let _ = self.out.send(Event::TransferEnded(id)).await;
    }

    /// Queues a frame, waiting for room (the backpressure of a download). `false` when the
    /// connection is gone: the operation has no one to talk to and stops.
    async fn send(&self, frame: AgentMessage) -> bool {
        send_event(&self.out, Event::Frame(frame)).await
    }

    /// A stop that arrived already, without waiting. A dropped sender (the registry gone with
    /// its connection) is a cancel.
    fn stopped(&mut self) -> Option<Stop> {
        match self.stop.try_recv() {
            Ok(stop) => Some(stop),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Stop::Cancelled),
        }
    }

    /// Waits for the stop signal (for `select!`).
    async fn until_stopped(&mut self) -> Stop {
        until_stopped(&mut self.stop).await
    }
}

async fn until_stopped(stop: &mut oneshot::Receiver<Stop>) -> Stop {
    stop.await.unwrap_or(Stop::Cancelled)
}

/// Queues an event, waiting for room. `false` when the connection is gone.
async fn send_event(out: &mpsc::Sender<Event>, event: Event) -> bool {
    match out.reserve().await {
        Ok(permit) => {
            permit.send(event);
            true
        }
        Err(_) => false,
    }
}
