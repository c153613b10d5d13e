//! The file system work every operation shares: blocking calls on tokio's blocking pool,
//! absolute paths, reads retried on EINTR, and the metadata the protocol reports.

use std::fs::{File, Metadata};
use std::io::{self, Read as _};
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use super::failure::Failure;
use rmm_protocol::FileErrorCode as Code;

/// Reads of a hashing pass; larger than a frame because nothing waits for them.
pub(super) const HASH_CHUNK: usize = 1024 * 1024;

/// Runs blocking file work on the blocking pool. The work is always awaited to its end, never
/// abandoned: a write still in flight after its upload was cancelled could land after a
/// resumed upload truncated the partial file.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!(error = %e, "file work panicked or was cancelled");
        Failure::new(Code::Io, "internal error in the agent".into())
    })
}

/// The path of a frame: it must be absolute, since the agent's working directory means
/// nothing to the technician.
///
/// A path with a NUL byte names no file on any system (the server refuses it before it gets
/// here; an older server may not).
pub(super) fn absolute(path: &str) -> Result<PathBuf, Failure> {
    if let Some(at) = path.find('\0') {
        return Err(Failure::new(
            Code::InvalidPath,
            format!("the path contains a NUL byte (at byte {at}); no file name can hold one"),
        ));
    }
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

/// One read, retried on EINTR.
pub(super) fn read_some(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Exactly `len` bytes, or `None` when the file ends first.
pub(super) fn read_exactly(file: &mut File, len: usize) -> io::Result<Option<Vec<u8>>> {
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

#[cfg(unix)]
pub(super) fn mode_of(meta: &Metadata) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    Some(meta.mode() & 0o7777)
}

/// Windows has no Unix mode to report.
#[cfg(not(unix))]
pub(super) fn mode_of(_meta: &Metadata) -> Option<u32> {
    None
}

/// Seconds since the Unix epoch (negative before it).
pub(super) fn modified_of(meta: &Metadata) -> Option<i64> {
    let modified = meta.modified().ok()?;
    match modified.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).ok(),
        Err(before) => i64::try_from(before.duration().as_secs()).ok().map(|s| -s),
    }
}
