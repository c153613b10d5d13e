//! An upload's partial file, `.<name>.rmm-partial` beside its target: created or resumed
//! without following a planted link, appended to with its running SHA-256, verified and
//! renamed into place at the end. And the locks that keep two uploads of one path apart.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rmm_protocol::FileErrorCode as Code;
use rmm_protocol::limits::PARTIAL_SUFFIX;
use sha2::{Digest as _, Sha256};
use tokio::sync::OwnedMutexGuard;

use super::disk::{HASH_CHUNK, read_some};
use super::failure::Failure;
use super::journal::Journal;

/// The partial file of an upload to `target`: `.<name>.rmm-partial` in the same directory,
/// so the final rename stays within one file system (atomic) and needs no extra space.
pub(super) fn partial_of(target: &Path) -> Result<PathBuf, Failure> {
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

/// The partial file being written and the SHA-256 of everything in it.
pub(super) struct Partial {
    file: File,
    hasher: Sha256,
    pub(super) len: u64,
}

impl std::fmt::Debug for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partial")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Partial {
    pub(super) fn file(&self) -> &File {
        &self.file
    }

    pub(super) fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(())
    }
}

/// Opens the partial file: a fresh one from offset 0, else the existing one cut back to
/// `offset`, with the SHA-256 of what it holds.
///
/// A partial file beside a target in a shared directory (`/tmp`) could be planted by another
/// local user as a symlink to a file the agent (often root) can write. So a fresh one is
/// removed and created exclusively (`create_new` does not follow a symlink), and a resumed
/// one must be the same regular file before and after it is opened.
pub(super) fn open_partial(path: &Path, offset: u64) -> Result<Partial, Failure> {
    if offset == 0 {
        create_partial(path)
    } else {
        resume_partial(path, offset)
    }
}

/// A fresh partial file, created exclusively where an old one (or a planted link) is removed.
fn create_partial(path: &Path) -> Result<Partial, Failure> {
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
    Ok(Partial {
        file,
        hasher: Sha256::new(),
        len: 0,
    })
}

/// The held partial file, cut back to `offset`, with the SHA-256 of what it keeps.
fn resume_partial(path: &Path, offset: u64) -> Result<Partial, Failure> {
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
    let hasher = hash_prefix(&mut file, path, offset)?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| Failure::io("seek in", path, &e))?;
    Ok(Partial {
        file,
        hasher,
        len: offset,
    })
}

/// The SHA-256 of the first `len` bytes of `file`, read from its start.
fn hash_prefix(file: &mut File, path: &Path, len: u64) -> Result<Sha256, Failure> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; HASH_CHUNK];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left.min(HASH_CHUNK as u64)).unwrap_or(HASH_CHUNK);
        let read = read_some(file, &mut buf[..want]).map_err(|e| Failure::io("read", path, &e))?;
        if read == 0 {
            return Err(Failure::new(
                Code::Io,
                format!("{} shrank while it was read", path.display()),
            ));
        }
        hasher.update(&buf[..read]);
        left -= read as u64;
    }
    Ok(hasher)
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

/// The last step of an upload: flush to disk, check the SHA-256 (a mismatch deletes the
/// partial file: its bytes are wrong, so resuming it cannot help), keep the mode of the file
/// it replaces, rename it into place. Returns the SHA-256 (lowercase hex).
pub(super) fn commit(
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
    let replaced = std::fs::metadata(to).ok();
    // Checked at the start too; a device put in the target's place since must not be renamed
    // over. The partial file is of no use for that target: removed.
    if replaced
        .as_ref()
        .is_some_and(|meta| !meta.is_file() && !meta.is_dir())
    {
        drop(file);
        if let Err(e) = std::fs::remove_file(from) {
            tracing::warn!(path = %from.display(), error = %e, "cannot remove a partial file whose target is not a regular file");
        }
        return Err(Failure::not_a_regular_file(to));
    }
    // A replaced file keeps its permissions (an uploaded script stays executable); a new one
    // gets the default of a created file.
    if let Some(meta) = replaced
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

/// How many bytes of an upload are held: 0 when there is no partial file, or something that
/// is not a regular file stands in its place (a resume would refuse it).
pub(super) fn partial_size(partial: &Path) -> Result<u64, Failure> {
    match std::fs::symlink_metadata(partial) {
        Ok(meta) if meta.is_file() => Ok(meta.len()),
        Ok(_) => Ok(0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Failure::io("inspect", partial, &e)),
    }
}

/// Serialises uploads to one target path, process-wide: a resumed upload must not touch the
/// partial file while a cancelled one is still finishing its last write. Entries exist only
/// while someone holds or awaits them.
///
/// It also carries the journal of partial files (see [`Journal`]), when the agent has one.
#[derive(Debug, Clone, Default)]
pub struct PathLocks {
    map: Arc<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>>,
    journal: Option<Arc<Journal>>,
}

/// Held while an upload works on its partial file.
#[derive(Debug)]
pub(super) struct PathGuard {
    locks: PathLocks,
    path: PathBuf,
    guard: Option<OwnedMutexGuard<()>>,
}

impl PathLocks {
    /// Locks that record partial files in the journal at `journal`.
    #[must_use]
    pub fn with_journal(journal: PathBuf) -> Self {
        Self {
            map: Arc::default(),
            journal: Some(Arc::new(Journal::open(journal))),
        }
    }

    /// Whether an upload holds (or awaits) `path`.
    fn is_held(&self, path: &Path) -> bool {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(path)
    }

    /// Records the partial file `path` (just opened as `file`) in the journal. Blocking.
    pub(super) fn record(&self, path: &Path, file: &File) {
        if let Some(journal) = &self.journal {
            journal.record(path, file);
        }
    }

    /// Whether the journal records any partial file (none: a sweep has nothing to do).
    pub(crate) fn has_partials(&self) -> bool {
        self.journal
            .as_ref()
            .is_some_and(|journal| !journal.is_empty())
    }

    /// Removes the journal's partial files untouched for `max_age` that no upload holds.
    /// Blocking. How many it removed.
    pub(crate) fn sweep(&self, max_age: std::time::Duration) -> usize {
        self.journal.as_ref().map_or(0, |journal| {
            journal.sweep(max_age, |path| self.is_held(path))
        })
    }

    pub(super) async fn lock(&self, path: PathBuf) -> PathGuard {
        let mutex = {
            // Never held across an await: this map lock only guards the lookup.
            let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
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
    pub(super) fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for PathGuard {
    fn drop(&mut self) {
        // The guard holds a reference to the mutex: release it before counting who is left.
        drop(self.guard.take());
        let mut map = self
            .locks
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map
            .get(&self.path)
            .is_some_and(|mutex| Arc::strong_count(mutex) == 1)
        {
            map.remove(&self.path);
        }
    }
}
