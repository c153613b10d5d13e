//! `rmm cp AGENT:/path LOCAL`: into LOCAL.rmm-partial, renamed to LOCAL once the whole file
//! hashes to what the agent announced; `--resume` appends to a kept partial file.

use std::ffi::OsString;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use rmm_client::{ClientError, FileDownload};
use rmm_protocol::limits::PARTIAL_SUFFIX;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};

use super::local::{changed_while_read, hash_into, local_error};
use super::progress::Progress;
use super::{CHUNK, CliError, Transfer};

pub(super) struct Download {
    remote: String,
    /// Where the file goes.
    local: PathBuf,
    /// Where it is written until verified.
    partial: PathBuf,
}

impl Download {
    pub(super) fn prepare(remote: &str, local: &Path, as_given: &str) -> Result<Self, CliError> {
        let local = if local.is_dir() || as_given.ends_with(['/', '\\']) {
            let name = remote
                .trim_end_matches(['/', '\\'])
                .rsplit(['/', '\\'])
                .next()
                .filter(|name| !name.is_empty() && *name != "." && *name != "..")
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "{remote} names no file: rmm cp copies one file at a time"
                    ))
                })?;
            local.join(name)
        } else {
            local.to_owned()
        };
        let parent = match local.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            Some(_) | None => Path::new("."),
        };
        if !parent.is_dir() {
            return Err(CliError::Local(format!(
                "cannot write {}: there is no directory {}; create it first",
                local.display(),
                parent.display()
            )));
        }
        let mut partial = OsString::from(local.as_os_str());
        partial.push(PARTIAL_SUFFIX);
        Ok(Self {
            remote: remote.to_owned(),
            partial: PathBuf::from(partial),
            local,
        })
    }

    pub(super) async fn run(&self, t: &Transfer<'_>) -> Result<String, CliError> {
        let mut download = self.request(t).await?;
        let start = download.offset;
        if start > 0 {
            Transfer::note(&format!(
                "resuming the download at byte {start} of {}",
                download.size
            ));
        }
        let (file, hasher) = self.open_partial(start, t.progress).await?;
        let (file, hasher) = self.receive(&mut download, file, hasher, t).await?;
        file.sync_all()
            .await
            .map_err(|e| local_error("write", &self.partial, &e))?;
        let sha256 = hex::encode(hasher.finalize());
        self.verify_and_place(&sha256, &download.sha256).await?;
        Ok(format!(
            "downloaded {} bytes from {}:{} to {} (sha256 {sha256}, verified)",
            download.size,
            t.agent,
            self.remote,
            self.local.display()
        ))
    }

    /// The download's answer: from the end of a kept partial file with `--resume`, from the
    /// start when that does not fit the remote file any more.
    async fn request(&self, t: &Transfer<'_>) -> Result<FileDownload, CliError> {
        let held = if t.resume {
            match tokio::fs::metadata(&self.partial).await {
                Ok(meta) if meta.is_file() => meta.len(),
                Ok(_) | Err(_) => 0,
            }
        } else {
            0
        };
        let _waiting = t
            .progress
            .spinner(format!("waiting for {} to hash {}", t.agent, self.remote));
        match t.client.download_file(t.session, &self.remote, held).await {
            Ok(download) => Ok(download),
            // The agent refuses a range past the end: the remote file is shorter than the
            // partial one now, so the partial one is of no use.
            Err(ClientError::TransferRefused { .. }) if held > 0 => {
                let download = t
                    .client
                    .download_file(t.session, &self.remote, 0)
                    .await
                    .map_err(|e| t.named(e))?;
                Transfer::note(&format!(
                    "{} does not fit {}:{} any more: downloading it again from the start",
                    self.partial.display(),
                    t.agent,
                    self.remote
                ));
                Ok(download)
            }
            Err(e) => Err(t.explained(e, &self.remote, false)),
        }
    }

    /// Writes the body to the partial file as it arrives, hashing it. What arrived is kept
    /// for a resume, whatever went wrong.
    async fn receive(
        &self,
        download: &mut FileDownload,
        file: tokio::fs::File,
        mut hasher: Sha256,
        t: &Transfer<'_>,
    ) -> Result<(tokio::fs::File, Sha256), CliError> {
        let mut out = tokio::io::BufWriter::with_capacity(CHUNK, file);
        let bar = t
            .progress
            .bar("downloading", download.size, download.offset);
        let mut received = download.offset;
        let copied: Result<(), CliError> = async {
            while let Some(chunk) = download.chunk().await.map_err(|e| t.named(e))? {
                out.write_all(&chunk)
                    .await
                    .map_err(|e| local_error("write", &self.partial, &e))?;
                hasher.update(&chunk);
                received += chunk.len() as u64;
                bar.inc(chunk.len() as u64);
            }
            Ok(())
        }
        .await;
        drop(bar);
        let flushed = out.flush().await;
        copied?;
        flushed.map_err(|e| local_error("write", &self.partial, &e))?;
        if received != download.size {
            return Err(ClientError::TransferStopped(format!(
                "the download ended after {received} of {} bytes",
                download.size
            ))
            .into());
        }
        Ok((out.into_inner(), hasher))
    }

    /// Renames the partial file into place when it hashes to `expected`; keeps it otherwise.
    async fn verify_and_place(&self, sha256: &str, expected: &str) -> Result<(), CliError> {
        if sha256 != expected {
            return Err(CliError::Local(format!(
                "checksum mismatch: the file changed during transfer; run again without --resume (the unverified bytes are kept in {})",
                self.partial.display()
            )));
        }
        tokio::fs::rename(&self.partial, &self.local)
            .await
            .map_err(|e| {
                CliError::Local(format!(
                    "cannot move {} to {}: {e}",
                    self.partial.display(),
                    self.local.display()
                ))
            })
    }

    /// The partial file positioned at `start`, with the hash of the bytes before it: a new
    /// empty one for 0, else the kept one cut back to `start`.
    async fn open_partial(
        &self,
        start: u64,
        progress: Progress,
    ) -> Result<(tokio::fs::File, Sha256), CliError> {
        let path = &self.partial;
        let failed = |e: std::io::Error| local_error("write", path, &e);
        let mut options = tokio::fs::OpenOptions::new();
        options.read(true).write(true).create(true);
        if start == 0 {
            let file = options.truncate(true).open(path).await.map_err(failed)?;
            return Ok((file, Sha256::new()));
        }
        let mut file = options.truncate(false).open(path).await.map_err(failed)?;
        file.set_len(start).await.map_err(failed)?;
        let mut hasher = Sha256::new();
        let bar = progress.bar("checking", start, 0);
        if !hash_into(&mut file, start, &mut hasher, &bar)
            .await
            .map_err(failed)?
        {
            return Err(changed_while_read(path));
        }
        file.seek(SeekFrom::Start(start)).await.map_err(failed)?;
        Ok((file, hasher))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_download_into_a_directory_takes_the_remote_name_and_writes_a_partial_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let as_given = dir.path().to_str().unwrap();
        let download = Download::prepare("/var/log/syslog", dir.path(), as_given).unwrap();
        assert_eq!(download.local, dir.path().join("syslog"));
        assert_eq!(download.partial, dir.path().join("syslog.rmm-partial"));

        let named = dir.path().join("copy.log");
        let download = Download::prepare("/var/log/syslog", &named, "copy.log").unwrap();
        assert_eq!(download.local, named);

        assert!(matches!(
            Download::prepare("/", dir.path(), as_given),
            Err(CliError::Usage(_))
        ));
        let nowhere = dir.path().join("missing").join("x");
        assert!(matches!(
            Download::prepare("/x", &nowhere, "missing/x"),
            Err(CliError::Local(_))
        ));
    }
}
