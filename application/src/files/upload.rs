//! Uploads: the request body streamed to the agent through the gateway port.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use rmm_domain::{Actor, SessionId};

use super::{ABORTED, Direction, FileAuditor, TransferError, failure_result, moved_size};
use crate::app::{App, Ports};
use crate::ports::{AgentGateway, ByteStream, FileOpError, UploadRequest, Uploaded};

/// How much of a refused upload's body is read and thrown away, at most, and for how long.
const MAX_DRAIN: usize = 64 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);

impl<P: Ports> App<P> {
    /// Uploads `body` to `path` on the session's agent, from byte `offset` (a resume). The
    /// agent puts the file in place only when every byte arrived and the SHA-256 matches
    /// `sha256` (or, for a whole-file upload without one, the hash of what was streamed).
    /// Every upload that got past the access check is audited once: `ok` with the file's
    /// size and SHA-256; `aborted` with the bytes moved to the agent when the client's body
    /// broke off (or the client went away while it was streamed); otherwise the failure, with
    /// the bytes moved.
    ///
    /// When the upload fails (the agent refused, or the client's body broke off), what is
    /// left of the body is read and dropped, within bounds, so the client is still reading
    /// when the error answer comes: an HTTP/1 client that is cut off while it writes sees a
    /// broken pipe instead of the reason.
    ///
    /// # Errors
    /// See [`TransferError`].
    pub async fn upload_file(
        &self,
        actor: Actor,
        session: SessionId,
        path: &str,
        offset: u64,
        sha256: Option<String>,
        mut body: ByteStream,
    ) -> Result<Uploaded, TransferError> {
        let agent = match self.authorize_file(actor, session, path).await {
            Ok(agent) => agent,
            Err(e) => {
                drain(&mut body).await;
                return Err(e.into());
            }
        };
        let request = UploadRequest {
            path: path.to_owned(),
            offset,
            sha256,
        };
        let moved = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&moved);
        let mut body: ByteStream = Box::pin(body.inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
        }));
        let mut guard = Unsettled {
            auditor: Some(self.file_auditor(actor, session, agent, Direction::Upload, path)),
            moved: Arc::clone(&moved),
            offset,
        };
        let result = self
            .gateway
            .upload_file(agent, session, &request, &mut body)
            .await;
        let moved = moved.load(Ordering::Relaxed);
        let Some(mut auditor) = guard.auditor.take() else {
            return Ok(result?);
        };
        match &result {
            Ok(done) => {
                auditor.path.clone_from(&done.path);
                auditor
                    .record_settled("ok".into(), Some(done.size), Some(done.sha256.clone()))
                    .await;
            }
            Err(e) => {
                let why = match e {
                    FileOpError::ClientAborted(why) => {
                        auditor.detail = Some(format!(
                            "the client's body broke off after {moved} bytes from offset {offset}: {why}"
                        ));
                        ABORTED.to_owned()
                    }
                    other => failure_result(other),
                };
                auditor.record_settled(why, moved_size(moved), None).await;
                drain(&mut body).await;
            }
        }
        Ok(result?)
    }
}

/// An upload under way and its audit entry until written: when the request is dropped
/// first (the client went away and the server stopped the handler), it is `aborted`.
struct Unsettled<P: Ports> {
    auditor: Option<FileAuditor<P>>,
    /// Bytes taken from the client's body and streamed to the agent so far.
    moved: Arc<AtomicU64>,
    offset: u64,
}

impl<P: Ports> Drop for Unsettled<P> {
    fn drop(&mut self) {
        if let Some(mut auditor) = self.auditor.take() {
            let moved = self.moved.load(Ordering::Relaxed);
            auditor.detail = Some(format!(
                "the request ended after {moved} bytes from offset {}",
                self.offset
            ));
            auditor.record_detached(ABORTED.to_owned(), moved_size(moved));
        }
    }
}

/// Reads and discards what is left of a body, within bounds; stops at its end or its first
/// error.
async fn drain(body: &mut ByteStream) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut drained = 0usize;
        while let Some(Ok(chunk)) = body.next().await {
            drained += chunk.len();
            if drained > MAX_DRAIN {
                break;
            }
        }
    })
    .await;
}
