//! `rmm cp LOCAL AGENT:/path`: the local file hashed, then streamed as the request body; a
//! broken connection goes on from what the agent holds.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::Stream;
use indicatif::ProgressBar;
use rmm_client::{ClientError, UploadedResponse};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use super::local::{changed_while_read, hash_prefix, local_error};
use super::progress::Progress;
use super::{CHUNK, CliError, Transfer};

/// Upload requests per copy: the first, and those going on after a broken connection.
const UPLOAD_ATTEMPTS: u32 = 3;
/// A careful upload's first chunks: small, each followed by a pause.
const CAREFUL_CHUNKS: usize = 3;
const CAREFUL_CHUNK: usize = 64 * 1024;
const CAREFUL_PAUSE: Duration = Duration::from_millis(300);

/// The size and SHA-256 (hex) of a local file.
#[derive(Debug, Clone)]
pub(super) struct Digest {
    size: u64,
    sha256: String,
}

pub(super) struct Upload {
    local: PathBuf,
    remote: String,
}

impl Upload {
    /// A local file to send: it must be there and not be a directory.
    pub(super) async fn check(local: &Path, remote: &str) -> Result<Self, CliError> {
        let meta = tokio::fs::metadata(local)
            .await
            .map_err(|e| local_error("read", local, &e))?;
        if meta.is_dir() {
            return Err(CliError::Usage(format!(
                "{} is a directory: rmm cp copies one file at a time",
                local.display()
            )));
        }
        Ok(Self {
            local: local.to_owned(),
            remote: remote.to_owned(),
        })
    }

    /// The file's size and SHA-256, taken before the transfer: the agent verifies against it.
    pub(super) async fn hash(&self, progress: Progress) -> Result<Digest, CliError> {
        let local = &self.local;
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| local_error("read", local, &e))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| local_error("read", local, &e))?
            .len();
        let bar = progress.bar("hashing", size, 0);
        let sha256 = hash_prefix(&mut file, size, &bar)
            .await
            .map_err(|e| local_error("read", local, &e))?
            .ok_or_else(|| changed_while_read(local))?;
        Ok(Digest { size, sha256 })
    }

    pub(super) async fn run(&self, digest: &Digest, t: &Transfer<'_>) -> Result<String, CliError> {
        let local = &self.local;
        let (size, sha256) = (digest.size, digest.sha256.as_str());
        let mut offset = if t.resume {
            let held = self.held(t, size).await?;
            if held > 0 {
                Transfer::note(&format!("resuming the upload at byte {held} of {size}"));
            }
            held
        } else {
            0
        };
        let mut attempt = 1;
        let done = loop {
            match self.send(t, offset, size, sha256, attempt > 1).await {
                // The connection broke: a real break, or the agent's refusal lost to the race
                // of an HTTP/1 server that answers mid-body. Go on from what the agent holds,
                // starting slowly: an answer that comes then is read, not lost.
                Err(Sent::Stopped(_)) if attempt < UPLOAD_ATTEMPTS => {
                    attempt += 1;
                    offset = self.held(t, size).await?;
                }
                Err(Sent::Stopped(e) | Sent::Failed(e)) => return Err(e),
                Ok(done) => break done,
            }
        };
        if done.size != size || !done.sha256.eq_ignore_ascii_case(sha256) {
            return Err(ClientError::Protocol(format!(
                "the agent reports {} bytes with sha256 {}, but {} has {size} bytes with sha256 {sha256}",
                done.size,
                done.sha256,
                local.display()
            ))
            .into());
        }
        Ok(format!(
            "uploaded {size} bytes to {}:{} (sha256 {sha256}, verified)",
            t.agent, self.remote
        ))
    }

    /// The bytes of an interrupted upload the agent holds, when they can be the start of
    /// this file (no more than it has); else 0, and it is sent again whole.
    async fn held(&self, t: &Transfer<'_>, size: u64) -> Result<u64, CliError> {
        let held = t
            .client
            .upload_status(t.session, &self.remote)
            .await
            .map_err(|e| t.named(e))?
            .received;
        if held > size {
            Transfer::note(&format!(
                "{}:{} holds {held} bytes of an upload, more than {} has: sending it all again",
                t.agent,
                self.remote,
                self.local.display()
            ));
            return Ok(0);
        }
        Ok(held)
    }

    /// One upload request: the file from `offset` on.
    async fn send(
        &self,
        t: &Transfer<'_>,
        offset: u64,
        size: u64,
        sha256: &str,
        careful: bool,
    ) -> Result<UploadedResponse, Sent> {
        let local = &self.local;
        let failed = |e: std::io::Error| Sent::Failed(local_error("read", local, &e));
        let mut file = tokio::fs::File::open(local).await.map_err(failed)?;
        file.seek(SeekFrom::Start(offset)).await.map_err(failed)?;
        let bar = t.progress.bar("uploading", size, offset);
        let read_failure = Arc::new(Mutex::new(None));
        let body = read_chunks(
            file,
            size.saturating_sub(offset),
            bar.handle(),
            Arc::clone(&read_failure),
            careful,
        );
        let result = t
            .client
            .upload_file(t.session, &self.remote, offset, sha256, body)
            .await;
        drop(bar);
        // A failed read of ours breaks the request: say so, not that the connection broke.
        if let Some(cause) = read_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(Sent::Failed(CliError::Local(format!(
                "cannot read {}: {cause}; run again with --resume",
                local.display()
            ))));
        }
        result.map_err(|e| match e {
            ClientError::TransferStopped(_) => Sent::Stopped(t.named(e)),
            other => Sent::Failed(t.explained(other, &self.remote, true)),
        })
    }
}

/// Why an upload request failed.
enum Sent {
    /// The connection broke or the agent went away: going on from what it holds may work.
    Stopped(CliError),
    Failed(CliError),
}

/// The first `len` bytes of `file` as the upload body, in chunks of at most [`CHUNK`]. A
/// file that shrank meanwhile ends the body early: the agent's checksum check reports it. A
/// read error ends it with an error, kept in `failure` for the message.
///
/// `careful` starts with [`CAREFUL_CHUNKS`] small chunks, each followed by a pause, so that a
/// refusal the server sends right away arrives while nothing is being written (and is read).
fn read_chunks(
    file: tokio::fs::File,
    len: u64,
    bar: ProgressBar,
    failure: Arc<Mutex<Option<String>>>,
    careful: bool,
) -> impl Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    let slow = if careful { CAREFUL_CHUNKS } else { 0 };
    futures_util::stream::unfold((file, len, 0), move |(mut file, left, index)| {
        let (bar, failure) = (bar.clone(), Arc::clone(&failure));
        async move {
            if left == 0 {
                return None;
            }
            if index > 0 && index <= slow {
                tokio::time::sleep(CAREFUL_PAUSE).await;
            }
            let chunk = if index < slow { CAREFUL_CHUNK } else { CHUNK };
            let want = usize::try_from(left.min(chunk as u64)).unwrap_or(chunk);
            let mut buf = vec![0; want];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(read) => {
                    buf.truncate(read);
                    bar.inc(read as u64);
                    Some((Ok(buf), (file, left - read as u64, index + 1)))
                }
                Err(e) => {
                    let message = e.to_string();
                    *failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(message);
                    Some((Err(e), (file, 0, index + 1)))
                }
            }
        }
    })
}
