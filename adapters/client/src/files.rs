//! File transfer: uploads whose body is pulled from the caller's stream as the connection
//! takes it, downloads read chunk by chunk, so memory stays bounded whatever the file's size;
//! a transfer fails when it stops moving, not after a fixed time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use rmm_domain::SessionId;

use crate::classify::{About, FileOp};
use crate::error::root_cause;
use crate::{ApiClient, ClientError, REQUEST_TIMEOUT, UploadStatusResponse, UploadedResponse};

/// How long a file transfer may show no progress (no upload chunk taken, no download chunk
/// given, no answer) before it is given up. Longer than the server's own wait for its agent
/// (600 s, hashing a large file included), which answers 504 first: this only catches a
/// server that went silent.
const TRANSFER_STALL: Duration = Duration::from_secs(630);

impl ApiClient {
    /// Uploads `body` to `path` on the session's agent, from byte `offset`: 0 for a whole
    /// file; to resume, the `received` of [`Self::upload_status`], with `body` the rest of the
    /// file. `sha256` is the whole file's (hex): the agent renames the file into place only
    /// when what it holds hashes to it. The body is pulled as the connection takes it, so
    /// memory stays bounded; an upload broken off leaves the agent's partial file for a resume.
    ///
    /// # Errors
    /// [`ClientError::ChecksumMismatch`] (422), [`ClientError::RemoteDirNotFound`] (404),
    /// [`ClientError::RemotePermissionDenied`] (403), [`ClientError::TransferRefused`] (400:
    /// not absolute, a directory, an offset the agent does not hold),
    /// [`ClientError::AgentDiskFull`] (507), [`ClientError::FilesUnsupported`] and
    /// [`ClientError::SessionInactive`] (409), [`ClientError::TransferStopped`] (503),
    /// [`ClientError::AgentTimedOut`] (504), [`ClientError::TimedOut`] when nothing moves for
    /// 630 s; session, auth, transport and server errors. A connection that breaks once the
    /// body flows, and a `body` that fails (the caller knows its own error better), read as
    /// [`ClientError::TransferStopped`]. Name the agent with [`ClientError::naming_agent`].
    pub async fn upload_file<S>(
        &self,
        session: SessionId,
        path: &str,
        offset: u64,
        sha256: &str,
        body: S,
    ) -> Result<UploadedResponse, ClientError>
    where
        S: Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static,
    {
        let mut url = self.url(&format!("api/v1/tunnel/{session}/files"))?;
        url.query_pairs_mut()
            .append_pair("path", path)
            .append_pair("offset", &offset.to_string())
            .append_pair("sha256", sha256);
        let activity = Activity::new();
        let body = {
            let activity = activity.clone();
            body.inspect(move |_| activity.touch())
        };
        let request = self
            .authorized(self.http.put(url))?
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body));
        let about = About::File {
            session,
            op: FileOp::Upload,
            path: path.to_owned(),
        };
        // No timeout on the whole request: the body may take hours. It fails when it stops
        // moving instead.
        let response = tokio::select! {
            response = self.send(request, about, None) => response.map_err(|e| match e {
                // Once the body flows, a broken connection is a transfer cut short (or an early
                // answer lost: an HTTP/1 server that refuses mid-body answers and closes, and
                // the write can fail before the answer is read). Either way the agent keeps
                // what it received.
                ClientError::Unreachable { cause, .. } if activity.moved() => {
                    ClientError::TransferStopped(format!("the connection broke during the upload ({cause})"))
                }
                other => other,
            })?,
            () = activity.stalled(TRANSFER_STALL) => return Err(self.timed_out(TRANSFER_STALL)),
        };
        self.read_json(response, REQUEST_TIMEOUT).await
    }

    /// How many bytes of an interrupted upload to `path` the agent holds: the offset to
    /// resume from (0 when none).
    ///
    /// # Errors
    /// As [`Self::upload_file`], less the checksum and disk errors.
    pub async fn upload_status(
        &self,
        session: SessionId,
        path: &str,
    ) -> Result<UploadStatusResponse, ClientError> {
        let mut url = self.url(&format!("api/v1/tunnel/{session}/files/upload-status"))?;
        url.query_pairs_mut().append_pair("path", path);
        let request = self.authorized(self.http.get(url))?;
        let about = About::File {
            session,
            op: FileOp::UploadStatus,
            path: path.to_owned(),
        };
        self.json(request, about, REQUEST_TIMEOUT).await
    }

    /// Downloads `path` from the session's agent, from byte `from` (`Range: bytes=from-`
    /// when not 0). Answers once the agent has hashed the file: the answer carries the whole
    /// file's size and SHA-256, and the body follows through [`FileDownload::chunk`].
    ///
    /// # Errors
    /// [`ClientError::RemoteFileNotFound`] (404), [`ClientError::RemotePermissionDenied`]
    /// (403), [`ClientError::TransferRefused`] (400: not absolute, a directory, `from` past
    /// the end), [`ClientError::FilesUnsupported`] and [`ClientError::SessionInactive`]
    /// (409), [`ClientError::TransferStopped`] (503), [`ClientError::AgentTimedOut`] (504),
    /// [`ClientError::Protocol`] when the size, range or SHA-256 headers are missing or do not
    /// fit; session, auth, transport and server errors. Name the agent with
    /// [`ClientError::naming_agent`].
    pub async fn download_file(
        &self,
        session: SessionId,
        path: &str,
        from: u64,
    ) -> Result<FileDownload, ClientError> {
        let mut url = self.url(&format!("api/v1/tunnel/{session}/files"))?;
        url.query_pairs_mut().append_pair("path", path);
        let mut request = self.authorized(self.http.get(url))?;
        if from > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={from}-"));
        }
        let about = About::File {
            session,
            op: FileOp::Download,
            path: path.to_owned(),
        };
        // The agent hashes the whole file before the answer: its head may take minutes.
        let response = tokio::time::timeout(TRANSFER_STALL, self.send(request, about, None))
            .await
            .map_err(|_| self.timed_out(TRANSFER_STALL))??;
        FileDownload::new(response, from, self.server.clone())
    }
}

/// A download under way: the whole file's facts, and its bytes from [`Self::offset`].
#[derive(Debug)]
pub struct FileDownload {
    /// The whole file's size.
    pub size: u64,
    /// SHA-256 of the whole file (lowercase hex), as the agent computed it before sending.
    pub sha256: String,
    /// The byte the body starts at: the one asked for, or 0 when the server sent the whole
    /// file (a server that ignores ranges).
    pub offset: u64,
    response: reqwest::Response,
    server: String,
}

impl FileDownload {
    fn new(response: reqwest::Response, from: u64, server: String) -> Result<Self, ClientError> {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let bad = |what: &str| ClientError::Protocol(format!("the download {what}"));
        let sha256 = header("x-content-sha256")
            .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| bad("has no valid X-Content-SHA256 header"))?
            .to_ascii_lowercase();
        let length: u64 = header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("has no Content-Length"))?;
        let (offset, size) = if response.status() == reqwest::StatusCode::PARTIAL_CONTENT {
            header("content-range")
                .and_then(content_range)
                .ok_or_else(|| bad("has no valid Content-Range"))?
        } else {
            (0, length)
        };
        if (offset != from && offset != 0) || offset > size || size - offset != length {
            return Err(bad(&format!(
                "does not fit: asked from byte {from}, got {length} bytes from {offset} of {size}"
            )));
        }
        Ok(Self {
            size,
            sha256,
            offset,
            response,
            server,
        })
    }

    /// The next chunk; `None` at the end of the body.
    ///
    /// # Errors
    /// [`ClientError::TransferStopped`] when the body breaks off (the agent went away, the
    /// connection failed), [`ClientError::TimedOut`] when no chunk arrives for 630 s.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, ClientError> {
        match tokio::time::timeout(TRANSFER_STALL, self.response.chunk()).await {
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(e)) => Err(ClientError::TransferStopped(format!(
                "the download broke off ({})",
                root_cause(&e)
            ))),
            Err(_) => Err(ClientError::TimedOut {
                server: self.server.clone(),
                secs: TRANSFER_STALL.as_secs(),
            }),
        }
    }
}

/// `bytes START-END/TOTAL`: START and TOTAL.
fn content_range(value: &str) -> Option<(u64, u64)> {
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// When a transfer last moved, shared with the body stream that moves it.
#[derive(Debug, Clone)]
struct Activity {
    start: tokio::time::Instant,
    /// Milliseconds from `start` to the last move.
    last: Arc<AtomicU64>,
    /// Whether it ever moved.
    moved: Arc<AtomicBool>,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: tokio::time::Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
            moved: Arc::new(AtomicBool::new(false)),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
        self.moved.store(true, Ordering::Relaxed);
    }

    fn moved(&self) -> bool {
        self.moved.load(Ordering::Relaxed)
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Resolves once nothing has moved for `limit`.
    async fn stalled(&self, limit: Duration) {
        loop {
            let idle = self.idle();
            if idle >= limit {
                return;
            }
            tokio::time::sleep(limit - idle).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_give_the_start_and_the_total() {
        assert_eq!(content_range("bytes 100-199/200"), Some((100, 200)));
        assert_eq!(content_range("bytes 200-200/200"), Some((200, 200)));
        assert_eq!(content_range("bytes */200"), None);
        assert_eq!(content_range("items 1-2/3"), None);
    }

    #[tokio::test]
    async fn a_transfer_is_stalled_only_after_the_limit_without_a_move() {
        let activity = Activity::new();
        let limit = Duration::from_millis(400);
        tokio::time::sleep(Duration::from_millis(300)).await;
        activity.touch();
        let started = tokio::time::Instant::now();
        activity.stalled(limit).await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(350), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
    }
}
