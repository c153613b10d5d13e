//! Downloads: the agent's bytes streamed to the client, with the audit entry written when
//! the transfer settles: the last byte handed on, an error, or the client gone.

use futures_util::StreamExt as _;
use rmm_domain::{Actor, SessionId};

use super::{ABORTED, Direction, FileAuditor, TransferError, failure_result, moved_size};
use crate::app::{App, Ports};
use crate::ports::FileOpError;
use crate::ports::{AgentDownload, AgentGateway, ByteStream, FileBytes};

/// A download under way: the file's facts, and its bytes from the requested offset.
pub struct Download {
    pub size: u64,
    /// SHA-256 (hex) of the whole file.
    pub sha256: String,
    pub offset: u64,
    /// One past the last byte the body carries: `size`, or the end of a closed range.
    pub end: u64,
    /// The bytes; an error after the first byte ends it with an I/O error.
    pub body: ByteStream,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("size", &self.size)
            .field("offset", &self.offset)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

/// The bytes a client asked for: from `start`, to the end or to `last` (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub last: Option<u64>,
}

impl<P: Ports> App<P> {
    /// Downloads `path` from the session's agent, from byte `offset`. The body streams as
    /// the client reads it. The transfer is audited once: `ok` with size and SHA-256 when the
    /// last byte is handed on, the error when it fails, and how far it got when the client
    /// stops reading first.
    ///
    /// # Errors
    /// See [`TransferError`]; errors after the first byte end the body with an I/O error.
    pub async fn download_file(
        &self,
        actor: Actor,
        session: SessionId,
        path: &str,
        offset: u64,
    ) -> Result<Download, TransferError> {
        self.download(actor, session, path, offset, None).await
    }

    /// Downloads the bytes of `range` (an HTTP `Range`), audited like [`Self::download_file`]:
    /// `ok` once its last byte is handed on. The agent's hash covers the whole file, so a
    /// range that ends before the file does is not checked against it.
    ///
    /// # Errors
    /// As [`Self::download_file`]; [`FileOpError::RangeNotSatisfiable`] when the range starts
    /// at or past the end of the file (audited as refused).
    pub async fn download_range(
        &self,
        actor: Actor,
        session: SessionId,
        path: &str,
        range: ByteRange,
    ) -> Result<Download, TransferError> {
        self.download(actor, session, path, range.start, Some(range.last))
            .await
    }

    /// `range`: `None` for a plain download or resume (from `offset` to the end, an empty
    /// body when `offset` is the size), `Some(last)` for an HTTP range.
    async fn download(
        &self,
        actor: Actor,
        session: SessionId,
        path: &str,
        offset: u64,
        range: Option<Option<u64>>,
    ) -> Result<Download, TransferError> {
        let agent = self.authorize_file(actor, session, path).await?;
        let auditor = self.file_auditor(actor, session, agent, Direction::Download, path);
        let started = match self
            .gateway
            .download_file(agent, session, path, offset)
            .await
        {
            Ok(started) => started,
            Err(e) => {
                auditor.record(failure_result(&e), None, None).await;
                return Err(e.into());
            }
        };
        let AgentDownload { size, sha256, body } = started;
        if range.is_some() && offset >= size {
            let refused = FileOpError::RangeNotSatisfiable { size };
            auditor.record(failure_result(&refused), None, None).await;
            return Err(refused.into());
        }
        let end = match range {
            Some(Some(last)) => last.saturating_add(1).min(size),
            Some(None) | None => size,
        };
        let mut watched = Watched {
            auditor: Some(auditor),
            body,
            delivered: offset,
            offset,
            end,
            size,
            sha256: sha256.clone(),
        };
        if offset >= end {
            // Nothing to send: settled now, the client may never poll an empty body.
            watched.settle(Ok(())).await;
        }
        Ok(Download {
            size,
            sha256,
            offset,
            end,
            body: Box::pin(futures_util::stream::unfold(watched, Watched::step)),
        })
    }
}

/// A download's bytes on their way to the client, and its audit entry until written.
struct Watched<P: Ports> {
    /// `None` once the entry is written.
    auditor: Option<FileAuditor<P>>,
    body: FileBytes,
    /// The offset of the next byte.
    delivered: u64,
    /// Where the transfer started.
    offset: u64,
    /// One past the last byte to hand on.
    end: u64,
    size: u64,
    sha256: String,
}

impl<P: Ports> Watched<P> {
    /// The next chunk for the client.
    async fn step(mut self) -> Option<(Result<bytes::Bytes, std::io::Error>, Self)> {
        self.auditor.as_ref()?;
        match self.body.next().await {
            Some(Ok(mut data)) => {
                let wanted = self.end.saturating_sub(self.delivered);
                if data.len() as u64 > wanted {
                    // A range ends inside this chunk (usize::MAX only on 32-bit overflow,
                    // where the chunk is smaller anyway).
                    data.truncate(usize::try_from(wanted).unwrap_or(usize::MAX));
                }
                self.delivered += data.len() as u64;
                if self.delivered >= self.end {
                    // For the whole file, the port hands on the last bytes only once the
                    // agent confirmed the file whole; a range has all it asked for. The
                    // client may not ask again: settled now.
                    self.settle(Ok(())).await;
                }
                Some((Ok(data), self))
            }
            Some(Err(e)) => {
                self.settle(Err(failure_result(&e))).await;
                Some((Err(std::io::Error::other(e.to_string())), self))
            }
            None => {
                let result = if self.delivered == self.end {
                    Ok(())
                } else {
                    Err(format!(
                        "the agent ended the download after {} of {} bytes",
                        self.delivered, self.size
                    ))
                };
                self.settle(result).await;
                None
            }
        }
    }

    /// Writes the audit entry, once.
    async fn settle(&mut self, result: Result<(), String>) {
        let Some(auditor) = self.auditor.take() else {
            return;
        };
        match result {
            Ok(()) => {
                auditor
                    .record("ok".into(), Some(self.size), Some(self.sha256.clone()))
                    .await;
            }
            Err(why) => {
                let moved = self.delivered.saturating_sub(self.offset);
                auditor.record(why, moved_size(moved), None).await;
            }
        }
    }
}

impl<P: Ports> Drop for Watched<P> {
    /// The client stopped reading before the transfer settled: `aborted`, with the bytes
    /// moved.
    fn drop(&mut self) {
        if let Some(mut auditor) = self.auditor.take() {
            auditor.detail = Some(format!(
                "the client stopped reading after byte {} of {} (from offset {})",
                self.delivered, self.size, self.offset
            ));
            let moved = self.delivered.saturating_sub(self.offset);
            auditor.record_detached(ABORTED.to_owned(), moved_size(moved));
        }
    }
}
