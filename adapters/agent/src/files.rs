//! Runs the file operations of a tunnel (the `file-transfer` extension): one task per
//! operation, each on its own File channel, so a transfer never waits for a command or another
//! transfer. Frames go into the connection's bounded queue ([`Event`]), like command output.
//!
//! - Upload: bytes go to a partial file beside the target, `.<name>.rmm-partial`, which is
//!   renamed over the target only once `file_upload_end` confirmed its size and SHA-256. A
//!   cancel or a lost connection keeps the partial for a resume (`file_upload_status` tells
//!   how much of it there is); the target path never holds a partial file.
//! - Download: the SHA-256 of the whole file first (`file_info`), then data frames under a
//!   window of [`WINDOW`] unacknowledged bytes, then `file_done`.
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

use std::collections::{BinaryHeap, HashMap};
use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use rmm_domain::ChannelId;
use sha2::{Digest as _, Sha256};
use tokio::sync::{OwnedMutexGuard, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::Event;
use super::tunnel::{FileInput, FileOp};
use rmm_protocol::{AgentMessage, DataFrame, FileEntry, FileErrorCode as Code};

pub use rmm_protocol::limits::{
    FILE_ACK_EVERY as ACK_EVERY, FILE_FRAME_DATA as FRAME_DATA, FILE_WINDOW as WINDOW,
    MAX_LISTING_ENTRIES as MAX_ENTRIES, PARTIAL_SUFFIX,
};

/// A `file_listing` stays under this many bytes of JSON: the server refuses agent frames over
/// 1 MiB, and 10,000 long names would be more.
const LISTING_BYTES: usize = 900 * 1024;
/// Upload data received but not yet written, at most: twice the window the server promises,
/// so a server off by a frame is not failed while memory stays bounded. Each frame also
/// counts [`FRAME_COST`] so that a flood of tiny frames is bounded too.
const UPLOAD_BUFFER: usize = 2 * WINDOW as usize;
const FRAME_COST: usize = 128;
/// Reads of the hashing pass; larger than a frame because nothing waits for them.
const HASH_CHUNK: usize = 1024 * 1024;

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

// ---------------------------------------------------------------------------------------------
// Errors

/// The `file_error` code of an I/O error.
fn code_of(error: &io::Error) -> Code {
    match error.kind() {
        io::ErrorKind::NotFound => Code::NotFound,
        io::ErrorKind::PermissionDenied => Code::PermissionDenied,
        io::ErrorKind::IsADirectory => Code::IsDirectory,
        io::ErrorKind::NotADirectory => Code::NotADirectory,
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Code::DiskFull,
        _ => Code::Io,
    }
}

/// Why a file operation failed: its `file_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    code: Code,
    message: String,
}

impl Failure {
    fn new(code: Code, message: String) -> Self {
        Self { code, message }
    }

    /// An I/O error while doing `what` to `path`. The message carries the operating system's
    /// reason: the technician needs it (a 403 says which permission), and the paths are the
    /// technician's own.
    fn io(what: &str, path: &Path, error: &io::Error) -> Self {
        Self::new(
            code_of(error),
            format!("cannot {what} {}: {error}", path.display()),
        )
    }

    fn bad_offset(message: String) -> Self {
        Self::new(Code::BadOffset, message)
    }

    fn frame(&self, channel_id: &str) -> AgentMessage {
        AgentMessage::FileError {
            channel_id: channel_id.to_owned(),
            code: self.code,
            message: self.message.clone(),
        }
    }
}

/// Runs blocking file work on the blocking pool. The work is always awaited to its end, never
/// abandoned: a write still in flight after its upload was cancelled could land after a
/// resumed upload truncated the partial file.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!(error = %e, "file work panicked or was cancelled");
        Failure::new(Code::Io, "internal error in the agent".into())
    })
}

// ---------------------------------------------------------------------------------------------
// Paths

/// The path of a frame: it must be absolute, since the agent's working directory means
/// nothing to the technician.
fn absolute(path: &str) -> Result<PathBuf, Failure> {
    let path = PathBuf::from(path);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(Failure::new(
            Code::NotAbsolute,
            format!("path {} is not absolute", path.display()),
        ))
    }
}

/// The partial file of an upload to `target`: `.<name>.rmm-partial` in the same directory,
/// so the final rename stays within one file system (atomic) and needs no extra space.
fn partial_of(target: &Path) -> Result<PathBuf, Failure> {
    let Some(name) = target.file_name() else {
        // `/` or a path ending in `..`: names a directory, never a file.
        return Err(Failure::new(
            Code::IsDirectory,
            format!("{} is a directory", target.display()),
        ));
    };
    let mut partial = OsString::from(".");
    partial.push(name);
    partial.push(PARTIAL_SUFFIX);
    Ok(target.with_file_name(partial))
}

/// Serialises uploads to one target path, process-wide: a resumed upload must not touch the
/// partial file while a cancelled one is still finishing its last write. Entries exist only
/// while someone holds or awaits them.
#[derive(Debug, Clone, Default)]
pub struct PathLocks(Arc<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>>);

/// Held while an upload works on its partial file.
#[derive(Debug)]
struct PathGuard {
    locks: PathLocks,
    path: PathBuf,
    guard: Option<OwnedMutexGuard<()>>,
}

impl PathLocks {
    async fn lock(&self, path: PathBuf) -> PathGuard {
        let mutex = {
            // Never held across an await: this map lock only guards the lookup.
            let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(map.entry(path.clone()).or_default())
        };
        let guard = mutex.lock_owned().await;
        PathGuard {
            locks: self.clone(),
            path,
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Drop for PathGuard {
    fn drop(&mut self) {
        // The guard holds a reference to the mutex: release it before counting who is left.
        drop(self.guard.take());
        let mut map = self.locks.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map
            .get(&self.path)
            .is_some_and(|mutex| Arc::strong_count(mutex) == 1)
        {
            map.remove(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Upload

#[derive(Debug)]
struct Upload {
    path: String,
    offset: u64,
    input: mpsc::UnboundedReceiver<UploadInput>,
    queued: Arc<AtomicUsize>,
    locks: PathLocks,
}

/// The partial file being written and the SHA-256 of everything in it.
struct Partial {
    file: File,
    hasher: Sha256,
    len: u64,
}

impl std::fmt::Debug for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partial")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Upload {
    async fn run(mut self, task: &mut Task) -> Result<Outcome, Failure> {
        let started = Instant::now();
        let target = absolute(&self.path)?;
        let partial_path = partial_of(&target)?;
        {
            let target = target.clone();
            blocking(move || check_upload_target(&target)).await??;
        }
        // Waiting here is short: only a stopped upload of the same path can hold the lock
        // (or a concurrent one, whose server then waits for our acks).
        let _guard = tokio::select! {
            biased;
            stop = task.until_stopped() => return Ok(Outcome::Stopped(stop)),
            guard = self.locks.lock(partial_path.clone()) => guard,
        };
        let (offset, path) = (self.offset, partial_path.clone());
        let mut partial = blocking(move || open_partial(&path, offset)).await??;
        tracing::info!(channel_id = %task.channel, path = %target.display(), offset, "upload started");
        let mut acked = offset;
        loop {
            let input = tokio::select! {
                biased;
                stop = task.until_stopped() => return Ok(Outcome::Stopped(stop)),
                input = self.input.recv() => input,
            };
            match input {
                // The registry is gone with its connection.
                None => return Ok(Outcome::Stopped(Stop::Cancelled)),
                Some(UploadInput::Data { offset, data }) => {
                    let cost = data.len() + FRAME_COST;
                    if offset != partial.len {
                        return Err(Failure::bad_offset(format!(
                            "data at offset {offset}, expected offset {}",
                            partial.len
                        )));
                    }
                    let path = partial_path.clone();
                    let (back, written) = blocking(move || {
                        let written = partial.append(&data);
                        (partial, written)
                    })
                    .await?;
                    partial = back;
                    self.queued.fetch_sub(cost, Ordering::AcqRel);
                    written.map_err(|e| Failure::io("write", &path, &e))?;
                    if partial.len - acked >= ACK_EVERY {
                        acked = partial.len;
                        if !task.send(ack(task, acked)).await {
                            return Ok(Outcome::Stopped(Stop::Cancelled));
                        }
                    }
                }
                Some(UploadInput::End { size, sha256 }) => {
                    if !task.send(ack(task, partial.len)).await {
                        return Ok(Outcome::Stopped(Stop::Cancelled));
                    }
                    if partial.len != size {
                        return Err(Failure::bad_offset(format!(
                            "received {} bytes, but the upload's size is {size}",
                            partial.len
                        )));
                    }
                    let (from, to) = (partial_path.clone(), target.clone());
                    let sha256 =
                        blocking(move || commit(partial, &from, &to, sha256.as_deref())).await??;
                    tracing::info!(channel_id = %task.channel, path = %target.display(), size, sha256 = %sha256, elapsed_ms = started.elapsed().as_millis(), "upload done");
                    return Ok(Outcome::Done(AgentMessage::FileDone {
                        channel_id: task.channel.as_str().to_owned(),
                        path: self.path,
                        size,
                        sha256,
                    }));
                }
            }
        }
    }
}

fn ack(task: &Task, offset: u64) -> AgentMessage {
    AgentMessage::FileAck {
        channel_id: task.channel.as_str().to_owned(),
        offset,
    }
}

/// An upload may create or replace a file, never a directory.
fn check_upload_target(target: &Path) -> Result<(), Failure> {
    match std::fs::metadata(target) {
        Ok(meta) if meta.is_dir() => Err(Failure::new(
            Code::IsDirectory,
            format!("{} is a directory", target.display()),
        )),
        // A missing parent directory is reported when the partial file cannot be created.
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Failure::io("inspect", target, &e)),
    }
}

/// Opens the partial file: a fresh one from offset 0, else the existing one cut back to
/// `offset`, with the SHA-256 of what it holds.
///
/// A partial file beside a target in a shared directory (`/tmp`) could be planted by another
/// local user as a symlink to a file the agent (often root) can write. So a fresh one is
/// removed and created exclusively (`create_new` does not follow a symlink), and a resumed
/// one must be the same regular file before and after it is opened.
fn open_partial(path: &Path, offset: u64) -> Result<Partial, Failure> {
    if offset == 0 {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Failure::io("remove the old partial file", path, &e)),
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Failure::io("create", path, &e))?;
        return Ok(Partial {
            file,
            hasher: Sha256::new(),
            len: 0,
        });
    }
    let held = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => meta,
        Ok(_) => {
            return Err(Failure::bad_offset(format!(
                "cannot resume at offset {offset}: {} is not a regular file (0 bytes held)",
                path.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Failure::bad_offset(format!(
                "cannot resume at offset {offset}: no partial upload is held (0 bytes)"
            )));
        }
        Err(e) => return Err(Failure::io("inspect", path, &e)),
    };
    if held.len() < offset {
        return Err(Failure::bad_offset(format!(
            "cannot resume at offset {offset}: the partial upload holds {} bytes",
            held.len()
        )));
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Failure::io("open", path, &e))?;
    let opened = file
        .metadata()
        .map_err(|e| Failure::io("inspect", path, &e))?;
    if !same_file(&held, &opened) {
        return Err(Failure::new(
            Code::Io,
            format!("{} was replaced while it was opened", path.display()),
        ));
    }
    file.set_len(offset)
        .map_err(|e| Failure::io("truncate", path, &e))?;
    // The final check covers the whole file, so what arrived before counts too.
    let mut hasher = Sha256::new();
    let mut buf = vec![0; HASH_CHUNK];
    let mut left = offset;
    while left > 0 {
        let want = usize::try_from(left.min(HASH_CHUNK as u64)).unwrap_or(HASH_CHUNK);
        let read =
            read_some(&mut file, &mut buf[..want]).map_err(|e| Failure::io("read", path, &e))?;
        if read == 0 {
            return Err(Failure::new(
                Code::Io,
                format!("{} shrank while it was read", path.display()),
            ));
        }
        hasher.update(&buf[..read]);
        left -= read as u64;
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| Failure::io("seek in", path, &e))?;
    Ok(Partial {
        file,
        hasher,
        len: offset,
    })
}

#[cfg(unix)]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Windows has no stable file identity in std; no symlinks are created by unprivileged users
/// there by default either. Untested.
#[cfg(not(unix))]
fn same_file(_a: &Metadata, b: &Metadata) -> bool {
    b.is_file()
}

impl Partial {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(())
    }
}

/// The last step of an upload: flush to disk, check the SHA-256 (a mismatch deletes the
/// partial file: its bytes are wrong, so resuming it cannot help), keep the mode of the file
/// it replaces, rename it into place. Returns the SHA-256 (lowercase hex).
fn commit(
    partial: Partial,
    from: &Path,
    to: &Path,
    expected: Option<&str>,
) -> Result<String, Failure> {
    let Partial { file, hasher, .. } = partial;
    file.sync_all()
        .map_err(|e| Failure::io("flush", from, &e))?;
    let actual = hex::encode(hasher.finalize());
    if let Some(expected) = expected
        && !expected.eq_ignore_ascii_case(&actual)
    {
        drop(file);
        if let Err(e) = std::fs::remove_file(from) {
            tracing::warn!(path = %from.display(), error = %e, "cannot remove a partial file that failed its checksum");
        }
        return Err(Failure::new(
            Code::ChecksumMismatch,
            format!("the received file's SHA-256 is {actual}, expected {expected}"),
        ));
    }
    // A replaced file keeps its permissions (an uploaded script stays executable); a new one
    // gets the default of a created file.
    if let Ok(meta) = std::fs::metadata(to)
        && meta.is_file()
        && let Err(e) = file.set_permissions(kept_permissions(&meta))
    {
        tracing::warn!(path = %to.display(), error = %e, "cannot keep the replaced file's permissions");
    }
    drop(file);
    std::fs::rename(from, to).map_err(|e| Failure::io("rename the upload into", to, &e))?;
    sync_dir(to);
    Ok(actual)
}

/// The permissions an upload takes over from the file it replaces: the read, write and
/// execute bits only. Setuid and setgid would turn new content, written by the agent (often
/// root), into a privileged program nobody vetted.
#[cfg(unix)]
fn kept_permissions(replaced: &Metadata) -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::Permissions::from_mode(replaced.permissions().mode() & 0o777)
}

/// Windows keeps the read-only flag only.
#[cfg(not(unix))]
fn kept_permissions(replaced: &Metadata) -> std::fs::Permissions {
    replaced.permissions()
}

/// Makes the rename durable. Best effort: the file's data is already on disk.
#[cfg(unix)]
fn sync_dir(file: &Path) {
    if let Some(dir) = file.parent()
        && let Err(e) = File::open(dir).and_then(|d| d.sync_all())
    {
        tracing::debug!(path = %dir.display(), error = %e, "cannot sync the directory");
    }
}

#[cfg(not(unix))]
fn sync_dir(_file: &Path) {}

// ---------------------------------------------------------------------------------------------
// Upload status

async fn upload_status(task: &mut Task, path: String) -> Result<Outcome, Failure> {
    let target = absolute(&path)?;
    let partial = partial_of(&target)?;
    let size = tokio::select! {
        biased;
        stop = task.until_stopped() => return Ok(Outcome::Stopped(stop)),
        size = blocking(move || partial_size(&partial)) => size??,
    };
    Ok(Outcome::Done(AgentMessage::FilePartial {
        channel_id: task.channel.as_str().to_owned(),
        path,
        size,
    }))
}

/// How many bytes of an upload are held: 0 when there is no partial file, or something that
/// is not a regular file stands in its place (a resume would refuse it).
fn partial_size(partial: &Path) -> Result<u64, Failure> {
    match std::fs::symlink_metadata(partial) {
        Ok(meta) if meta.is_file() => Ok(meta.len()),
        Ok(_) => Ok(0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Failure::io("inspect", partial, &e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Download

async fn download(
    task: &mut Task,
    path: String,
    offset: u64,
    mut acks: watch::Receiver<u64>,
) -> Result<Outcome, Failure> {
    let started = Instant::now();
    let target = absolute(&path)?;
    let (mut file, meta) = {
        let target = target.clone();
        blocking(move || open_regular(&target)).await??
    };
    // Pass 1: the SHA-256 of the whole file for `file_info`, and of the range to send, to
    // check what pass 2 sends against (a file changed in between would otherwise arrive with a
    // hash that does not match it). Appending beyond the hashed size does not matter: only
    // that many bytes are sent.
    let mut hashes = Hashes::new(offset);
    let mut buf = vec![0; HASH_CHUNK];
    loop {
        if let Some(stop) = task.stopped() {
            return Ok(Outcome::Stopped(stop));
        }
        let (back_file, back_buf, read) = blocking(move || {
            let read = read_some(&mut file, &mut buf);
            (file, buf, read)
        })
        .await?;
        (file, buf) = (back_file, back_buf);
        let read = read.map_err(|e| Failure::io("read", &target, &e))?;
        if read == 0 {
            break;
        }
        hashes.update(&buf[..read]);
    }
    drop(buf);
    let (size, sha256, range_sha256) = hashes.finish();
    if offset > size {
        return Err(Failure::bad_offset(format!(
            "offset {offset} is past the end of the file ({size} bytes)"
        )));
    }
    let info = AgentMessage::FileInfo {
        channel_id: task.channel.as_str().to_owned(),
        size,
        sha256: sha256.clone(),
        mode: mode_of(&meta),
        modified: modified_of(&meta),
    };
    if !task.send(info).await {
        return Ok(Outcome::Stopped(Stop::Cancelled));
    }
    tracing::info!(channel_id = %task.channel, path = %target.display(), size, offset, "download started");

    // Pass 2: the data, never more than the window beyond the server's last ack.
    file = blocking(move || file.seek(SeekFrom::Start(offset)).map(|_| file))
        .await?
        .map_err(|e| Failure::io("seek in", &target, &e))?;
    let mut sent = Sha256::new();
    let mut at = offset;
    while at < size {
        let len = usize::try_from((size - at).min(FRAME_DATA as u64)).unwrap_or(FRAME_DATA);
        let end = at + len as u64;
        tokio::select! {
            biased;
            stop = task.until_stopped() => return Ok(Outcome::Stopped(stop)),
            acked = acks.wait_for(|acked| end <= acked.saturating_add(WINDOW)) => {
                if acked.is_err() {
                    // The registry is gone with its connection.
                    return Ok(Outcome::Stopped(Stop::Cancelled));
                }
            }
        }
        let (back, chunk) = blocking(move || {
            let chunk = read_exactly(&mut file, len);
            (file, chunk)
        })
        .await?;
        file = back;
        let chunk = match chunk {
            Ok(Some(chunk)) => chunk,
            Ok(None) => {
                return Err(Failure::new(
                    Code::Io,
                    format!(
                        "{} shrank while it was sent; download it again",
                        target.display()
                    ),
                ));
            }
            Err(e) => return Err(Failure::io("read", &target, &e)),
        };
        sent.update(&chunk);
        let frame = DataFrame {
            channel_id: task.channel.as_str().to_owned(),
            offset: at,
            data: Bytes::from(chunk),
        };
        // Waiting for room in the connection's queue too, but never past a stop.
        let queued = tokio::select! {
            biased;
            stop = until_stopped(&mut task.stop) => return Ok(Outcome::Stopped(stop)),
            queued = send_event(&task.out, Event::Data(frame)) => queued,
        };
        if !queued {
            return Ok(Outcome::Stopped(Stop::Cancelled));
        }
        at = end;
    }
    if hex::encode(sent.finalize()) != range_sha256 {
        return Err(Failure::new(
            Code::Io,
            format!(
                "{} changed while it was sent; download it again",
                target.display()
            ),
        ));
    }
    tracing::info!(channel_id = %task.channel, path = %target.display(), size, offset, elapsed_ms = started.elapsed().as_millis(), "download done");
    Ok(Outcome::Done(AgentMessage::FileDone {
        channel_id: task.channel.as_str().to_owned(),
        path,
        size,
        sha256,
    }))
}

/// The hashes of the first pass of a download: of the whole file, and of the bytes from
/// `offset` on (the same hash when `offset` is 0).
struct Hashes {
    whole: Sha256,
    range: Option<Sha256>,
    offset: u64,
    len: u64,
}

impl Hashes {
    fn new(offset: u64) -> Self {
        Self {
            whole: Sha256::new(),
            range: (offset > 0).then(Sha256::new),
            offset,
            len: 0,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.whole.update(bytes);
        if let Some(range) = self.range.as_mut() {
            let end = self.len + bytes.len() as u64;
            if end > self.offset {
                let skip = usize::try_from(self.offset.saturating_sub(self.len)).unwrap_or(0);
                range.update(&bytes[skip.min(bytes.len())..]);
            }
        }
        self.len += bytes.len() as u64;
    }

    /// The size, the whole file's SHA-256 and the range's.
    fn finish(self) -> (u64, String, String) {
        let whole = hex::encode(self.whole.finalize());
        let range = self
            .range
            .map_or_else(|| whole.clone(), |range| hex::encode(range.finalize()));
        (self.len, whole, range)
    }
}

impl std::fmt::Debug for Hashes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hashes")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Opens a regular file for a download; a directory is `is_directory`, anything else that is
/// not a regular file (a device, a FIFO: endless or blocking) is refused.
fn open_regular(path: &Path) -> Result<(File, Metadata), Failure> {
    // Looked at before opening: opening a FIFO blocks until a writer comes, which could hold
    // a blocking thread forever.
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Err(Failure::new(
                Code::IsDirectory,
                format!("{} is a directory", path.display()),
            ));
        }
        Ok(meta) if !meta.is_file() => {
            return Err(Failure::new(
                Code::Io,
                format!("{} is not a regular file", path.display()),
            ));
        }
        Ok(_) => {}
        Err(e) => return Err(Failure::io("open", path, &e)),
    }
    let file = match File::open(path) {
        Ok(file) => file,
        // Windows refuses to open a directory as a file (access denied): say what it is.
        Err(_) if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) => {
            return Err(Failure::new(
                Code::IsDirectory,
                format!("{} is a directory", path.display()),
            ));
        }
        Err(e) => return Err(Failure::io("open", path, &e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| Failure::io("inspect", path, &e))?;
    if meta.is_dir() {
        return Err(Failure::new(
            Code::IsDirectory,
            format!("{} is a directory", path.display()),
        ));
    }
    if !meta.is_file() {
        return Err(Failure::new(
            Code::Io,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok((file, meta))
}

/// One read, retried on EINTR.
fn read_some(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Exactly `len` bytes, or `None` when the file ends first.
fn read_exactly(file: &mut File, len: usize) -> io::Result<Option<Vec<u8>>> {
    let mut chunk = vec![0; len];
    let mut filled = 0;
    while filled < len {
        let read = read_some(file, &mut chunk[filled..])?;
        if read == 0 {
            return Ok(None);
        }
        filled += read;
    }
    Ok(Some(chunk))
}

// ---------------------------------------------------------------------------------------------
// Listing

async fn list(task: &mut Task, path: String) -> Result<Outcome, Failure> {
    let dir = absolute(&path)?;
    let entries = tokio::select! {
        biased;
        stop = task.until_stopped() => return Ok(Outcome::Stopped(stop)),
        // Read-only work: abandoning it on a stop is harmless.
        entries = blocking(move || list_dir(&dir, MAX_ENTRIES, LISTING_BYTES)) => entries??,
    };
    Ok(Outcome::Done(AgentMessage::FileListing {
        channel_id: task.channel.as_str().to_owned(),
        path,
        entries,
    }))
}

/// The entries of `dir` sorted by name (bytewise), at most `max_entries` of them and at most
/// `max_bytes` of JSON: the first ones by name when there are more. Symlinks are not followed
/// (their type is `symlink`, their size the link's). An entry that vanishes while it is read
/// is left out.
fn list_dir(dir: &Path, max_entries: usize, max_bytes: usize) -> Result<Vec<FileEntry>, Failure> {
    // The smallest names in a max-heap bounded to `max_entries`: memory stays bounded in a
    // directory of millions of entries, and only the entries sent are inspected.
    let mut names: BinaryHeap<OsString> = BinaryHeap::new();
    let mut total = 0usize;
    for entry in std::fs::read_dir(dir).map_err(|e| Failure::io("list", dir, &e))? {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                tracing::debug!(path = %dir.display(), error = %e, "directory entry skipped");
                continue;
            }
        };
        total += 1;
        names.push(entry.file_name());
        if names.len() > max_entries {
            names.pop();
        }
    }
    let mut entries = Vec::with_capacity(names.len());
    let mut bytes = 0usize;
    for name in names.into_sorted_vec() {
        let Ok(meta) = std::fs::symlink_metadata(dir.join(&name)) else {
            continue;
        };
        let entry = FileEntry {
            name: name.to_string_lossy().into_owned(),
            kind: kind_of(&meta).to_owned(),
            size: meta.len(),
            mode: mode_of(&meta),
            modified: modified_of(&meta),
        };
        // The entry's JSON and its comma.
        bytes += serde_json::to_string(&entry).map_or(0, |json| json.len()) + 1;
        if bytes > max_bytes {
            break;
        }
        entries.push(entry);
    }
    if entries.len() < total {
        tracing::info!(path = %dir.display(), total, sent = entries.len(), "directory listing truncated");
    }
    Ok(entries)
}

fn kind_of(meta: &Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_symlink() {
        "symlink"
    } else if kind.is_dir() {
        "dir"
    } else if kind.is_file() {
        "file"
    } else {
        "other"
    }
}

#[cfg(unix)]
fn mode_of(meta: &Metadata) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    Some(meta.mode() & 0o7777)
}

/// Windows has no Unix mode to report.
#[cfg(not(unix))]
fn mode_of(_meta: &Metadata) -> Option<u32> {
    None
}

/// Seconds since the Unix epoch (negative before it).
fn modified_of(meta: &Metadata) -> Option<i64> {
    let modified = meta.modified().ok()?;
    match modified.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).ok(),
        Err(before) => i64::try_from(before.duration().as_secs()).ok().map(|s| -s),
    }
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn partial_files_sit_beside_their_target_behind_a_dot() {
        assert_eq!(
            partial_of(Path::new("/srv/app/run.sh")).unwrap(),
            Path::new("/srv/app/.run.sh.rmm-partial")
        );
        assert_eq!(
            partial_of(Path::new("/x")).unwrap(),
            Path::new("/.x.rmm-partial")
        );
        for directory in ["/", "/tmp/.."] {
            assert_eq!(
                partial_of(Path::new(directory)).unwrap_err().code,
                Code::IsDirectory
            );
        }
        assert_eq!(absolute("tmp/x").unwrap_err().code, Code::NotAbsolute);
        assert_eq!(absolute("").unwrap_err().code, Code::NotAbsolute);
        assert_eq!(absolute("/tmp/x").unwrap(), Path::new("/tmp/x"));
    }

    #[test]
    fn operating_system_errors_map_to_the_protocols_codes() {
        let code = |errno| code_of(&io::Error::from_raw_os_error(errno)).as_str();
        assert_eq!(code(2), "not_found"); // ENOENT
        assert_eq!(code(13), "permission_denied"); // EACCES
        assert_eq!(code(1), "permission_denied"); // EPERM
        assert_eq!(code(21), "is_directory"); // EISDIR
        assert_eq!(code(20), "not_a_directory"); // ENOTDIR
        assert_eq!(code(28), "disk_full"); // ENOSPC
        assert_eq!(code(122), "disk_full"); // EDQUOT
        assert_eq!(code(5), "io"); // EIO
        let failure = Failure::io("create", Path::new("/x"), &io::Error::from_raw_os_error(13));
        assert_eq!(
            failure.message,
            "cannot create /x: Permission denied (os error 13)"
        );
    }

    #[test]
    fn a_listing_is_sorted_by_name_typed_without_following_links_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("b.txt"), b"hello").unwrap();
        std::fs::write(root.join("a.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(root.join("a.sh"), std::fs::Permissions::from_mode(0o4750))
            .unwrap();
        std::fs::create_dir(root.join("c")).unwrap();
        std::os::unix::fs::symlink("b.txt", root.join("d")).unwrap();
        std::os::unix::fs::symlink("c", root.join("e")).unwrap();
        let entries = list_dir(root, MAX_ENTRIES, LISTING_BYTES).unwrap();
        let summary: Vec<(&str, &str, u64)> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.kind.as_str(), e.size))
            .collect();
        assert_eq!(
            summary[..],
            [
                ("a.sh", "file", 10),
                ("b.txt", "file", 5),
                ("c", "dir", summary[2].2),
                // A link's size is its own (the length of the path it holds).
                ("d", "symlink", 5),
                ("e", "symlink", 1),
            ]
        );
        assert_eq!(entries[0].mode, Some(0o4750));
        let now = now_secs();
        assert!(
            entries
                .iter()
                .all(|e| e.modified.is_some_and(|m| (now - m).abs() < 60))
        );

        let first_two = list_dir(root, 2, LISTING_BYTES).unwrap();
        assert_eq!(
            first_two
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>(),
            ["a.sh", "b.txt"]
        );
        // The byte bound keeps a whole prefix too.
        let one = serde_json::to_string(&entries[0]).unwrap().len() + 1;
        let by_bytes = list_dir(root, MAX_ENTRIES, one + 1).unwrap();
        assert_eq!(by_bytes.len(), 1);
        assert_eq!(
            list_dir(&root.join("b.txt"), 10, LISTING_BYTES)
                .unwrap_err()
                .code,
            Code::NotADirectory
        );
        assert_eq!(
            list_dir(&root.join("missing"), 10, LISTING_BYTES)
                .unwrap_err()
                .code,
            Code::NotFound
        );
    }

    fn now_secs() -> i64 {
        let since = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap();
        i64::try_from(since.as_secs()).unwrap()
    }

    #[test]
    fn a_partial_file_planted_as_a_symlink_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious data").unwrap();
        let partial = dir.path().join(".upload.rmm-partial");
        std::os::unix::fs::symlink(&victim, &partial).unwrap();
        // A resume refuses it without touching what it points to.
        let refused = open_partial(&partial, 5).unwrap_err();
        assert_eq!(refused.code, Code::BadOffset);
        assert_eq!(partial_size(&partial).unwrap(), 0);
        // A fresh upload replaces the link by a file of its own.
        let mut fresh = open_partial(&partial, 0).unwrap();
        fresh.append(b"new").unwrap();
        assert!(
            std::fs::symlink_metadata(&partial)
                .unwrap()
                .file_type()
                .is_file()
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious data");
        assert_eq!(partial_size(&partial).unwrap(), 3);
    }

    #[test]
    fn a_resume_cuts_the_partial_back_to_its_offset_and_hashes_what_it_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join(".f.rmm-partial");
        std::fs::write(&partial, b"hello world").unwrap();
        let mut resumed = open_partial(&partial, 5).unwrap();
        assert_eq!(resumed.len, 5);
        resumed.append(b", you").unwrap();
        let target = dir.path().join("f");
        let sha = commit(resumed, &partial, &target, None).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"hello, you");
        assert_eq!(sha, hex::encode(Sha256::digest(b"hello, you")));
        assert!(!partial.exists());
        let short = open_partial(&partial, 1).unwrap_err();
        assert_eq!(short.code, Code::BadOffset);
    }

    #[test]
    fn a_replaced_file_keeps_its_permissions_but_not_setuid() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("run.sh");
        std::fs::write(&target, b"old").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o4751)).unwrap();
        let partial = partial_of(&target).unwrap();
        let mut upload = open_partial(&partial, 0).unwrap();
        upload.append(b"new").unwrap();
        commit(
            upload,
            &partial,
            &target,
            Some(&hex::encode(Sha256::digest(b"new")).to_uppercase()),
        )
        .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o751);
    }

    #[test]
    fn the_range_hash_of_a_download_covers_the_bytes_from_its_offset() {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        for offset in [0u64, 1, 4095, 4096, 9_999, 10_000] {
            let mut hashes = Hashes::new(offset);
            for piece in data.chunks(4096) {
                hashes.update(piece);
            }
            let (size, whole, range) = hashes.finish();
            assert_eq!(size, 10_000);
            assert_eq!(whole, hex::encode(Sha256::digest(&data)));
            let from = usize::try_from(offset).unwrap();
            assert_eq!(
                range,
                hex::encode(Sha256::digest(&data[from..])),
                "{offset}"
            );
        }
    }

    #[tokio::test]
    async fn path_locks_serialise_one_path_and_are_forgotten_when_free() {
        let locks = PathLocks::default();
        let first = locks.lock(PathBuf::from("/a")).await;
        let other = locks.lock(PathBuf::from("/b")).await;
        assert_eq!(locks.len(), 2);
        let waiting = tokio::spawn({
            let locks = locks.clone();
            async move { locks.lock(PathBuf::from("/a")).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        let second = waiting.await.unwrap();
        drop((second, other));
        assert_eq!(locks.len(), 0);
    }

    #[tokio::test]
    async fn an_upload_beyond_the_window_fails_without_the_connection_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("big");
        let (tx, mut rx) = mpsc::channel(8);
        let mut transfers = Transfers::new(tx, PathLocks::default());
        let channel = ChannelId::parse("file-1").unwrap();
        transfers.start(
            channel.clone(),
            FileOp::Upload {
                path: target.display().to_string(),
                offset: 0,
            },
        );
        // A server ignoring the window: far more than it may send, in one go. `input` never
        // waits (the task does not even get to run in between).
        let frame = Bytes::from(vec![7u8; FRAME_DATA]);
        for n in 0..(3 * WINDOW / FRAME_DATA as u64) {
            transfers.input(
                &channel,
                FileInput::Data {
                    offset: n * FRAME_DATA as u64,
                    data: frame.clone(),
                },
            );
        }
        let mut errors = Vec::new();
        loop {
            match rx.recv().await.unwrap() {
                Event::Frame(AgentMessage::FileError { code, message, .. }) => {
                    errors.push((code, message));
                }
                Event::Frame(AgentMessage::FileAck { .. }) => {}
                Event::TransferEnded(id) => {
                    assert_eq!(transfers.finished(id), Some(channel));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, Code::Io);
        assert!(errors[0].1.contains("flow-control window"), "{errors:?}");
        assert!(!target.exists());
        assert!(transfers.is_empty());
    }
}
