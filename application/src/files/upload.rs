//! Uploads: the request body streamed to the agent through the gateway port.

use std::time::Duration;

use futures_util::StreamExt as _;
use rmm_domain::{Actor, SessionId};

use super::{Direction, TransferError, failure_result};
use crate::app::{App, Ports};
use crate::ports::{AgentGateway, ByteStream, UploadRequest, Uploaded};

/// How much of a refused upload's body is read and thrown away, at most, and for how long.
const MAX_DRAIN: usize = 64 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);

impl<P: Ports> App<P> {
    /// Uploads `body` to `path` on the session's agent, from byte `offset` (a resume). The
    /// agent puts the file in place only when every byte arrived and the SHA-256 matches
    /// `sha256` (or, for a whole-file upload without one, the hash of what was streamed).
    /// Every upload that got past the access check is audited with its result.
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
        let result = self
            .gateway
            .upload_file(agent, session, &request, &mut body)
            .await;
        match &result {
            Ok(done) => {
                self.file_auditor(actor, session, agent, Direction::Upload, &done.path)
                    .record("ok".into(), Some(done.size), Some(done.sha256.clone()))
                    .await;
            }
            Err(e) => {
                drain(&mut body).await;
                self.file_auditor(actor, session, agent, Direction::Upload, path)
                    .record(failure_result(e), None, None)
                    .await;
            }
        }
        Ok(result?)
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
