//! `file_list`: the entries of a directory, sorted by name, bounded in count and in bytes.

use std::collections::BinaryHeap;
use std::ffi::OsString;
use std::fs::Metadata;
use std::path::Path;

use rmm_protocol::limits::MAX_LISTING_ENTRIES;
use rmm_protocol::{AgentMessage, FileEntry};

use super::disk::{absolute, blocking, mode_of, modified_of};
use super::failure::Failure;
use super::{Outcome, Task};

/// A `file_listing` stays under this many bytes of JSON: the server refuses agent frames over
/// 1 MiB, and 10,000 long names would be more.
pub(super) const LISTING_BYTES: usize = 900 * 1024;

pub(super) async fn list(task: &mut Task, path: String) -> Result<Outcome, Failure> {
    let dir = absolute(&path)?;
    let entries = tokio::select! {
        biased;
        stop = task.until_stopped() => return Ok(Outcome::Stopped(stop)),
        // Read-only work: abandoning it on a stop is harmless.
        entries = blocking(move || list_dir(&dir, MAX_LISTING_ENTRIES, LISTING_BYTES)) => entries??,
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
pub(super) fn list_dir(
    dir: &Path,
    max_entries: usize,
    max_bytes: usize,
) -> Result<Vec<FileEntry>, Failure> {
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
