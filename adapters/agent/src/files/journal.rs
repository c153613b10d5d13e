//! Where this agent made upload partial files (`.NAME.rmm-partial`), so that the ones an
//! interrupted upload left behind can be removed once they are old, wherever they are.
//!
//! The journal is a small text file in the agent's state folder, one line per partial file:
//! `<device> <inode> <hex of the path's bytes>`; a later line for a path replaces an earlier
//! one. Only a file at a recorded path, with the recorded identity (device and inode: the same
//! file the agent created, not one put there since), named like a partial file, is ever
//! removed; and never while an upload holds its path's lock. It holds at most
//! [`MAX_ENTRIES`] files; beyond that new partial files are not recorded (with a warning).

use std::collections::HashMap;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rmm_protocol::limits::PARTIAL_SUFFIX;

/// Partial files tracked at most.
pub(crate) const MAX_ENTRIES: usize = 4096;

/// A file's identity: device and inode (0, 0 where the platform has none).
type Identity = (u64, u64);

#[derive(Debug)]
pub(crate) struct Journal {
    file: PathBuf,
    entries: Mutex<HashMap<PathBuf, Identity>>,
}

impl Journal {
    /// The journal at `file`, with what it already records (an unreadable or missing one is
    /// empty; unreadable lines are skipped).
    pub(crate) fn open(file: PathBuf) -> Self {
        let entries = match std::fs::read(&file) {
            Ok(bytes) => parse(&bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => {
                tracing::warn!(path = %file.display(), error = %e, "cannot read the journal of partial files; starting a new one");
                HashMap::new()
            }
        };
        Self {
            file,
            entries: Mutex::new(entries),
        }
    }

    /// Records that this agent made (or resumed) the partial file `path`, opened as `opened`.
    /// Blocking; errors are logged, never an upload's failure.
    pub(crate) fn record(&self, path: &Path, opened: &File) {
        let Ok(meta) = opened.metadata() else { return };
        let id = identity(&meta);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.get(path) == Some(&id) {
            return;
        }
        if !entries.contains_key(path) && entries.len() >= MAX_ENTRIES {
            tracing::warn!(path = %path.display(), max = MAX_ENTRIES, "the journal of partial files is full: this one will not be removed when old");
            return;
        }
        entries.insert(path.to_path_buf(), id);
        if let Err(e) = self.append(path, id) {
            tracing::warn!(journal = %self.file.display(), error = %e, "cannot record a partial file in the journal");
        }
    }

    fn append(&self, path: &Path, (dev, ino): Identity) -> io::Result<()> {
        if let Some(folder) = self.file.parent() {
            private_folder(folder)?;
        }
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&self.file)?;
        file.write_all(format!("{dev} {ino} {}\n", hex::encode(path_bytes(path))).as_bytes())
    }

    /// Whether any partial file is recorded (a sweep would have something to look at).
    pub(crate) fn is_empty(&self) -> bool {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Removes the recorded partial files untouched for `max_age`, except those `live`
    /// says an upload holds; forgets the ones that are gone (committed, removed, replaced).
    /// Blocking. Returns how many files it removed.
    pub(crate) fn sweep(&self, max_age: Duration, live: impl Fn(&Path) -> bool) -> usize {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let before = entries.len();
        let mut removed = 0;
        entries.retain(|path, id| match verdict(path, *id, max_age, &live) {
            Verdict::Keep => true,
            Verdict::Forget => false,
            Verdict::Remove => match std::fs::remove_file(path) {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(path = %path.display(), max_age_secs = max_age.as_secs(), "removed an interrupted upload's partial file");
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove an old partial file");
                    true
                }
            },
        });
        if entries.len() != before
            && let Err(e) = self.rewrite(&entries)
        {
            tracing::warn!(journal = %self.file.display(), error = %e, "cannot rewrite the journal of partial files");
        }
        removed
    }

    /// Writes the journal anew (beside it, then renamed over it).
    fn rewrite(&self, entries: &HashMap<PathBuf, Identity>) -> io::Result<()> {
        let mut text = String::new();
        for (path, (dev, ino)) in entries {
            text.push_str(&format!("{dev} {ino} {}\n", hex::encode(path_bytes(path))));
        }
        let mut name = self.file.as_os_str().to_owned();
        name.push(".new");
        let next = PathBuf::from(name);
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&next)?.write_all(text.as_bytes())?;
        std::fs::rename(&next, &self.file)
    }
}

enum Verdict {
    Keep,
    Forget,
    Remove,
}

fn verdict(path: &Path, id: Identity, max_age: Duration, live: impl Fn(&Path) -> bool) -> Verdict {
    if live(path) {
        return Verdict::Keep;
    }
    let is_partial_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') && n.ends_with(PARTIAL_SUFFIX));
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Verdict::Forget,
        Err(_) => return Verdict::Keep,
    };
    // Not the file the agent made: not its to remove.
    if !is_partial_name || !meta.is_file() || identity(&meta) != id {
        return Verdict::Forget;
    }
    let untouched = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default();
    if untouched >= max_age {
        Verdict::Remove
    } else {
        Verdict::Keep
    }
}

fn parse(bytes: &[u8]) -> HashMap<PathBuf, Identity> {
    let mut entries = HashMap::new();
    for line in String::from_utf8_lossy(bytes).lines() {
        let mut fields = line.split(' ');
        let (Some(dev), Some(ino), Some(path), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (Ok(dev), Ok(ino), Ok(path)) = (dev.parse(), ino.parse(), hex::decode(path)) else {
            continue;
        };
        if entries.len() < MAX_ENTRIES {
            entries.insert(path_from_bytes(path), (dev, ino));
        }
    }
    entries
}

#[cfg(unix)]
fn identity(meta: &Metadata) -> Identity {
    use std::os::unix::fs::MetadataExt as _;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn identity(_meta: &Metadata) -> Identity {
    (0, 0)
}

#[cfg(unix)]
fn path_bytes(path: &Path) -> Vec<u8> {
    std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec()
}

#[cfg(not(unix))]
fn path_bytes(path: &Path) -> Vec<u8> {
    path.to_string_lossy().into_owned().into_bytes()
}

#[cfg(unix)]
fn path_from_bytes(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(bytes))
}

#[cfg(not(unix))]
fn path_from_bytes(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(&bytes).into_owned())
}

/// Creates the state folder (mode 0700) when missing.
fn private_folder(folder: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(folder)
}

/// How often the journal is swept: a quarter of the age, between 1 s and an hour.
pub(crate) fn sweep_interval(max_age: Duration) -> Duration {
    (max_age / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;

    fn made(dir: &Path, name: &str) -> (PathBuf, File) {
        let path = dir.join(name);
        std::fs::write(&path, b"part").unwrap();
        let file = File::open(&path).unwrap();
        (path, file)
    }

    #[test]
    fn old_recorded_partials_go_live_replaced_and_unrecorded_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path().join("state/partials.journal"));
        assert!(journal.is_empty(), "a new journal records nothing to sweep");
        let (old, f) = made(dir.path(), ".old.rmm-partial");
        journal.record(&old, &f);
        assert!(!journal.is_empty());
        let (live, f) = made(dir.path(), ".live.rmm-partial");
        journal.record(&live, &f);
        let (replaced, f) = made(dir.path(), ".replaced.rmm-partial");
        journal.record(&replaced, &f);
        std::fs::remove_file(&replaced).unwrap();
        std::fs::write(&replaced, b"someone else's").unwrap();
        let (not_partial, f) = made(dir.path(), "plain.txt");
        journal.record(&not_partial, &f);
        let (foreign, _) = made(dir.path(), ".foreign.rmm-partial");

        // Reloaded from the file: what the previous run recorded (so the first sweep runs).
        let journal = Journal::open(dir.path().join("state/partials.journal"));
        assert_eq!(journal.entries.lock().unwrap().len(), 4);
        assert!(!journal.is_empty());
        let removed = journal.sweep(Duration::ZERO, |p| p == live);
        assert_eq!(removed, 1);
        assert!(!old.exists());
        for kept in [&live, &replaced, &not_partial, &foreign] {
            assert!(kept.exists(), "{}", kept.display());
        }
        // Only the live one is left to watch, on disk too.
        let reloaded = Journal::open(dir.path().join("state/partials.journal"));
        let entries = reloaded.entries.lock().unwrap();
        assert_eq!(entries.keys().collect::<Vec<_>>(), vec![&live]);
    }

    #[test]
    fn young_partials_stay_and_the_interval_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path().join("j"));
        let (young, f) = made(dir.path(), ".young.rmm-partial");
        journal.record(&young, &f);
        assert_eq!(journal.sweep(Duration::from_secs(3600), |_| false), 0);
        assert!(young.exists());
        assert_eq!(
            sweep_interval(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(40)),
            Duration::from_secs(10)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(86_400)),
            Duration::from_secs(3600)
        );
        assert!(parse(b"garbage\n1 2 zz\n1 2 2f61\n").len() == 1);
    }
}
