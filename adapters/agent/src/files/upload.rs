//! `file_upload`: the server's data frames written to the partial file in order, acknowledged
//! every [`FILE_ACK_EVERY`] bytes, and committed once `file_upload_end` confirms the size and
//! SHA-256. And `file_upload_status`: how much of an upload is held.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rmm_protocol::limits::FILE_ACK_EVERY;
use rmm_protocol::{AgentMessage, FileErrorCode as Code};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::disk::{absolute, blocking};
use super::failure::Failure;
use super::partial::{Partial, PathLocks, commit, open_partial, partial_of, partial_size};
use super::{FRAME_COST, Outcome, Stop, Task, UploadInput};

#[derive(Debug)]
pub(super) struct Upload {
    pub(super) path: String,
    pub(super) offset: u64,
    pub(super) input: mpsc::UnboundedReceiver<UploadInput>,
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) locks: PathLocks,
}

impl Upload {
    pub(super) async fn run(mut self, task: &mut Task) -> Result<Outcome, Failure> {
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
        let offset = self.offset;
        let mut partial = open_recorded(&self.locks, &partial_path, offset).await?;
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
                    if let Err(e) = written {
                        return Err(write_failed(partial, path, &e).await);
                    }
                    if partial.len - acked >= FILE_ACK_EVERY {
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

/// Opens the partial file (see [`open_partial`]) and records it in the journal, so that it
/// is removed once old if this upload never ends.
async fn open_recorded(locks: &PathLocks, path: &Path, offset: u64) -> Result<Partial, Failure> {
    let (locks, path) = (locks.clone(), path.to_path_buf());
    blocking(move || {
        let partial = open_partial(&path, offset)?;
        locks.record(&path, partial.file());
        Ok(partial)
    })
    .await?
}

/// Why a write to the partial file failed. When the disk could not hold it, the partial file
/// is removed: a resume cannot help until space is freed, and a partial file that filled the
/// disk would keep the machine's other programs from writing, so the space is given back at
/// once rather than after the journal's day. Best effort: a failure to remove is logged (the
/// journal's sweep still removes the file later).
async fn write_failed(partial: Partial, path: std::path::PathBuf, error: &io::Error) -> Failure {
    let failure = Failure::io("write", &path, error);
    drop(partial);
    if failure.code != Code::DiskFull {
        return failure;
    }
    let shown = path.display().to_string();
    match blocking(move || std::fs::remove_file(&path)).await {
        Ok(Ok(())) => {
            tracing::info!(path = %shown, "disk full: partial file removed");
        }
        Ok(Err(e)) => {
            tracing::warn!(path = %shown, error = %e, "disk full: cannot remove the partial file");
        }
        Err(lost) => {
            tracing::warn!(path = %shown, error = %lost.message, "disk full: cannot remove the partial file");
        }
    }
    failure
}

fn ack(task: &Task, offset: u64) -> AgentMessage {
    AgentMessage::FileAck {
        channel_id: task.channel.as_str().to_owned(),
        offset,
    }
}

/// An upload may create or replace a regular file, never a directory, a device, a FIFO or a
/// socket (writing `/dev/zero` is not putting a file in place; renaming over it would
/// replace the device). A new file needs its directory: a missing one is `not_found` naming
/// it, a file in its place `not_a_directory`.
pub(super) fn check_upload_target(target: &Path) -> Result<(), Failure> {
    match std::fs::metadata(target) {
        Ok(meta) if meta.is_dir() => Err(Failure::new(
            Code::IsDirectory,
            format!("{} is a directory", target.display()),
        )),
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(Failure::not_a_regular_file(target)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => check_parent(target),
        Err(e) => Err(Failure::io("inspect", target, &e)),
    }
}

/// The directory a new file goes in must exist (`/` always does).
fn check_parent(target: &Path) -> Result<(), Failure> {
    let Some(dir) = target.parent() else {
        return Ok(());
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Failure::new(
            Code::NotADirectory,
            format!(
                "{} is not a directory, so {} cannot be created",
                dir.display(),
                target.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Failure::new(
            Code::NotFound,
            format!(
                "the directory {} does not exist; create it first",
                dir.display()
            ),
        )),
        Err(e) => Err(Failure::io("inspect", dir, &e)),
    }
}

pub(super) async fn upload_status(task: &mut Task, path: String) -> Result<Outcome, Failure> {
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
