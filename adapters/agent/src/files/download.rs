//! `file_download`: the SHA-256 of the whole file first (`file_info`), then data frames under a
//! window of [`FILE_WINDOW`] unacknowledged bytes, then `file_done`.

use std::fs::{File, Metadata};
use std::io::{Seek as _, SeekFrom};
use std::ops::ControlFlow;
use std::path::Path;

use bytes::Bytes;
use rmm_protocol::limits::{FILE_FRAME_DATA, FILE_WINDOW};
use rmm_protocol::{AgentMessage, DataFrame, FileErrorCode as Code};
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;

use super::disk::{HASH_CHUNK, absolute, blocking, mode_of, modified_of, read_exactly, read_some};
use super::failure::Failure;
use super::{Outcome, Stop, Task, send_event, until_stopped};
use crate::Event;

pub(super) async fn download(
    task: &mut Task,
    path: String,
    offset: u64,
    mut acks: watch::Receiver<u64>,
) -> Result<Outcome, Failure> {
    let started = Instant::now();
    let target = absolute(&path)?;
    let (file, meta) = {
        let target = target.clone();
        blocking(move || open_regular(&target)).await??
    };
    // Pass 1: the SHA-256 of the whole file for `file_info`, and of the range to send, to
    // check what pass 2 sends against (a file changed in between would otherwise arrive with a
    // hash that does not match it). Appending beyond the hashed size does not matter: only
    // that many bytes are sent.
    let (file, hashes) = match hash_file(task, file, &target, offset).await? {
        ControlFlow::Continue(hashed) => hashed,
        ControlFlow::Break(stop) => return Ok(Outcome::Stopped(stop)),
    };
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
    let sent = match send_range(task, file, &target, offset..size, &mut acks).await? {
        ControlFlow::Continue(sent) => sent,
        ControlFlow::Break(stop) => return Ok(Outcome::Stopped(stop)),
    };
    if sent != range_sha256 {
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

/// Pass 1: reads `file` to its end, a chunk at a time on the blocking pool, into the
/// [`Hashes`] of a download from `offset`; stops between chunks when told to.
async fn hash_file(
    task: &mut Task,
    mut file: File,
    target: &Path,
    offset: u64,
) -> Result<ControlFlow<Stop, (File, Hashes)>, Failure> {
    let mut hashes = Hashes::new(offset);
    let mut buf = vec![0; HASH_CHUNK];
    loop {
        if let Some(stop) = task.stopped() {
            return Ok(ControlFlow::Break(stop));
        }
        // The chunk is hashed on the blocking pool too: the agent's tasks share one thread
        // (bin/agent/src/runtime.rs), and a megabyte of SHA-256 would hold up every other.
        let (back_file, back_buf, back_hashes, read) = blocking(move || {
            let read = read_some(&mut file, &mut buf);
            if let Ok(read) = read {
                hashes.update(&buf[..read]);
            }
            (file, buf, hashes, read)
        })
        .await?;
        (file, buf, hashes) = (back_file, back_buf, back_hashes);
        let read = read.map_err(|e| Failure::io("read", target, &e))?;
        if read == 0 {
            break;
        }
    }
    Ok(ControlFlow::Continue((file, hashes)))
}

/// Pass 2: the bytes of `range` in frames of at most [`FILE_FRAME_DATA`], each sent only once
/// it ends within [`FILE_WINDOW`] of the server's last ack. The SHA-256 of what was sent.
async fn send_range(
    task: &mut Task,
    mut file: File,
    target: &Path,
    range: std::ops::Range<u64>,
    acks: &mut watch::Receiver<u64>,
) -> Result<ControlFlow<Stop, String>, Failure> {
    let std::ops::Range { start, end: size } = range;
    file = blocking(move || file.seek(SeekFrom::Start(start)).map(|_| file))
        .await?
        .map_err(|e| Failure::io("seek in", target, &e))?;
    let mut sent = Sha256::new();
    let mut at = start;
    while at < size {
        let len =
            usize::try_from((size - at).min(FILE_FRAME_DATA as u64)).unwrap_or(FILE_FRAME_DATA);
        let end = at + len as u64;
        tokio::select! {
            biased;
            stop = task.until_stopped() => return Ok(ControlFlow::Break(stop)),
            acked = acks.wait_for(|acked| end <= acked.saturating_add(FILE_WINDOW)) => {
                if acked.is_err() {
                    // The registry is gone with its connection.
                    return Ok(ControlFlow::Break(Stop::Cancelled));
                }
            }
        }
        // Hashed where it is read, off the agent's one runtime thread (as in pass 1).
        let (back, back_sent, chunk) = blocking(move || {
            let chunk = read_exactly(&mut file, len);
            if let Ok(Some(bytes)) = &chunk {
                sent.update(bytes);
            }
            (file, sent, chunk)
        })
        .await?;
        (file, sent) = (back, back_sent);
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
            Err(e) => return Err(Failure::io("read", target, &e)),
        };
        let frame = DataFrame {
            channel_id: task.channel.as_str().to_owned(),
            offset: at,
            data: Bytes::from(chunk),
        };
        // Waiting for room in the connection's queue too, but never past a stop.
        let queued = tokio::select! {
            biased;
            stop = until_stopped(&mut task.stop) => return Ok(ControlFlow::Break(stop)),
            queued = send_event(&task.out, Event::Data(frame)) => queued,
        };
        if !queued {
            return Ok(ControlFlow::Break(Stop::Cancelled));
        }
        at = end;
    }
    Ok(ControlFlow::Continue(hex::encode(sent.finalize())))
}

/// The hashes of the first pass of a download: of the whole file, and of the bytes from
/// `offset` on (the same hash when `offset` is 0).
pub(super) struct Hashes {
    whole: Sha256,
    range: Option<Sha256>,
    offset: u64,
    len: u64,
}

impl Hashes {
    pub(super) fn new(offset: u64) -> Self {
        Self {
            whole: Sha256::new(),
            range: (offset > 0).then(Sha256::new),
            offset,
            len: 0,
        }
    }

    pub(super) fn update(&mut self, bytes: &[u8]) {
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
    pub(super) fn finish(self) -> (u64, String, String) {
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
/// not a regular file (a device, a FIFO: endless or blocking) is `not_a_regular_file`.
pub(super) fn open_regular(path: &Path) -> Result<(File, Metadata), Failure> {
    // Looked at before opening: opening a FIFO blocks until a writer comes, which could hold
    // a blocking thread forever.
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Err(Failure::new(
                Code::IsDirectory,
                format!("{} is a directory", path.display()),
            ));
        }
        Ok(meta) if !meta.is_file() => return Err(Failure::not_a_regular_file(path)),
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
        return Err(Failure::not_a_regular_file(path));
    }
    Ok((file, meta))
}
