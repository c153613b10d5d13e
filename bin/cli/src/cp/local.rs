//! The local side of a copy: hashing a file (or its first bytes) and the one-line errors of
//! local files.

use std::path::Path;

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;

use super::CliError;
use super::progress::Bar;

/// Bytes read per step while hashing (nothing waits for them, so larger).
const HASH_CHUNK: usize = 1024 * 1024;

/// The SHA-256 (hex) of the first `len` bytes of `file`, read from where it stands; `None`
/// when it has fewer.
pub(super) async fn hash_prefix(
    file: &mut tokio::fs::File,
    len: u64,
    bar: &Bar,
) -> std::io::Result<Option<String>> {
    let mut hasher = Sha256::new();
    let complete = hash_into(file, len, &mut hasher, bar).await?;
    Ok(complete.then(|| hex::encode(hasher.finalize())))
}

/// Feeds the next `len` bytes of `file` to `hasher`; false when the file ends before.
pub(super) async fn hash_into(
    file: &mut tokio::fs::File,
    len: u64,
    hasher: &mut Sha256,
    bar: &Bar,
) -> std::io::Result<bool> {
    let mut buf = vec![0; HASH_CHUNK];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left.min(HASH_CHUNK as u64)).unwrap_or(HASH_CHUNK);
        let Some(space) = buf.get_mut(..want) else {
            break;
        };
        let read = file.read(space).await?;
        let Some(data) = space.get(..read).filter(|data| !data.is_empty()) else {
            return Ok(false);
        };
        hasher.update(data);
        left -= read as u64;
        bar.inc(read as u64);
    }
    Ok(true)
}

pub(super) fn local_error(verb: &str, path: &Path, e: &std::io::Error) -> CliError {
    CliError::Local(format!("cannot {verb} {}: {e}", path.display()))
}

pub(super) fn changed_while_read(path: &Path) -> CliError {
    CliError::Local(format!(
        "{} shrank while it was read; run again when nothing writes to it",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::cp::progress::Progress;

    #[tokio::test]
    async fn hashing_reads_exactly_the_prefix_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::write(&path, b"hello world").unwrap();
        let bar = Progress { visible: false }.bar("hashing", 5, 0);
        let mut file = tokio::fs::File::open(&path).await.unwrap();
        assert_eq!(
            hash_prefix(&mut file, 5, &bar).await.unwrap().unwrap(),
            hex::encode(Sha256::digest(b"hello"))
        );
        let mut file = tokio::fs::File::open(&path).await.unwrap();
        assert_eq!(hash_prefix(&mut file, 12, &bar).await.unwrap(), None);
    }
}
