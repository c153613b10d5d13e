//! Downloads: the agent's bytes streamed to the client, with the audit entry written when
//! the transfer settles: the last byte handed on, an error, or the client gone.

use futures_util::StreamExt as _;
use rmm_domain::{Actor, SessionId};

use super::{ABORTED, Direction, FileAuditor, TransferError, failure_result, moved_size};
use crate::app::{App, Ports};
use crate::ports::{AgentDownload, AgentGateway, ByteStream, FileBytes};

/// A download under way: the file's facts, and its bytes from the requested offset.
pub struct Download {
    pub size: u64,
    /// SHA-256 (hex) of the whole file.
    pub sha256: String,
    pub offset: u64,
    /// The bytes; an error after the first byte ends it with an I/O error.
    pub body: ByteStream,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("size", &self.size)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
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
        let mut watched = Watched {
            auditor: Some(auditor),
            body,
            delivered: offset,
            offset,
            size,
            sha256: sha256.clone(),
        };
        if offset == size {
            // Nothing to send: settled now, the client may never poll an empty body.
            watched.settle(Ok(())).await;
        }
        Ok(Download {
            size,
            sha256,
            offset,
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
    size: u64,
    sha256: String,
}

impl<P: Ports> Watched<P> {
    /// The next chunk for the client.
    async fn step(mut self) -> Option<(Result<bytes::Bytes, std::io::Error>, Self)> {
        self.auditor.as_ref()?;
        match self.body.next().await {
            Some(Ok(data)) => {
                self.delivered += data.len() as u64;
                if self.delivered >= self.size {
                    // The port hands on the last bytes only once the agent confirmed the
                    // file whole, and the client may not ask again: settled now.
                    self.settle(Ok(())).await;
                }
                Some((Ok(data), self))
            }
            Some(Err(e)) => {
                self.settle(Err(failure_result(&e))).await;
                Some((Err(std::io::Error::other(e.to_string())), self))
            }
            None => {
                let result = if self.delivered == self.size {
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
