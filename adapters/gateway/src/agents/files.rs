//! File transfers through a session's tunnel: the server's half of the `file-transfer`
//! extension, behind the gateway port's file operations. An upload streams the client's
//! bytes to the agent in binary data frames; a download streams the agent's frames back.
//! Either way at most a window of [`WINDOW`] bytes is in flight, so memory stays bounded
//! whatever the file size.
//!
//! Who may transfer, the audit entry of every transfer and what to do when the client
//! breaks off are the application's (`App::upload_file`, ...); this module only moves bytes.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use rmm_application::{AgentDownload, ByteStream, FileEntry, FileOpError, UploadRequest, Uploaded};
use rmm_protocol::{DataFrame, ServerMessage};
use sha2::{Digest as _, Sha256};

use super::{FileEvent, FileLink, Outbound};
use crate::telemetry::{self, Direction};

pub use rmm_protocol::limits::{
    FILE_ACK_EVERY as ACK_EVERY, FILE_FRAME_DATA as CHUNK, FILE_WINDOW as WINDOW,
};
/// How long an agent may take to answer a request (hashing a large file included).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(600);

impl FileLink {
    fn id(&self) -> String {
        self.channel.to_string()
    }

    async fn send(&self, message: ServerMessage) -> Result<(), FileOpError> {
        self.outbound
            .send(Outbound::message(message))
            .await
            .map_err(|_| FileOpError::AgentGone)
    }

    /// The next event; `AgentGone` when the channel closed (tunnel closed, agent gone).
    async fn next(&mut self, wait: Duration) -> Result<FileEvent, FileOpError> {
        match tokio::time::timeout(wait, self.events.recv()).await {
            Ok(Some(FileEvent::Error { code, message })) => {
                Err(FileOpError::Agent { code, message })
            }
            Ok(Some(event)) => Ok(event),
            Ok(None) => Err(FileOpError::AgentGone),
            Err(_) => Err(FileOpError::Timeout),
        }
    }
}

/// Uploads `body` through `link` (see `AgentGateway::upload_file`).
pub(crate) async fn upload(
    mut link: FileLink,
    upload: &UploadRequest,
    body: &mut ByteStream,
) -> Result<Uploaded, FileOpError> {
    link.send(ServerMessage::FileUpload {
        channel_id: link.id(),
        path: upload.path.clone(),
        offset: upload.offset,
    })
    .await?;
    let mut hasher = (upload.offset == 0 && upload.sha256.is_none()).then(Sha256::new);
    let (mut sent, mut acked) = (upload.offset, upload.offset);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| FileOpError::ClientAborted(e.to_string()))?;
        for piece in chunk.chunks(CHUNK) {
            // An early refusal (no such directory, ...) arrives while we stream: stop then.
            while let Ok(event) = link.events.try_recv() {
                acked = on_upload_event(event, acked)?;
            }
            while sent - acked >= WINDOW {
                acked = on_upload_event(link.next(ANSWER_TIMEOUT).await?, acked)?;
            }
            let frame = DataFrame {
                channel_id: link.id(),
                offset: sent,
                data: Bytes::copy_from_slice(piece),
            };
            link.outbound
                .send(Outbound::Data(frame.encode()))
                .await
                .map_err(|_| FileOpError::AgentGone)?;
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(piece);
            }
            sent += piece.len() as u64;
            telemetry::transferred(Direction::Upload, piece.len());
        }
    }
    let expected = upload
        .sha256
        .as_ref()
        .map(|s| s.to_ascii_lowercase())
        .or_else(|| hasher.map(|h| hex::encode(h.finalize())));
    link.send(ServerMessage::FileUploadEnd {
        channel_id: link.id(),
        size: sent,
        sha256: expected,
    })
    .await?;
    loop {
        match link.next(ANSWER_TIMEOUT).await? {
            FileEvent::Done { path, size, sha256 } => {
                link.finished = true;
                return Ok(Uploaded { path, size, sha256 });
            }
            FileEvent::Ack { .. } => {}
            other => {
                return Err(FileOpError::Protocol(format!(
                    "unexpected {other:?} at the end of an upload"
                )));
            }
        }
    }
}

fn on_upload_event(event: FileEvent, acked: u64) -> Result<u64, FileOpError> {
    match event {
        FileEvent::Ack { offset } => Ok(acked.max(offset)),
        FileEvent::Error { code, message } => Err(FileOpError::Agent { code, message }),
        other => Err(FileOpError::Protocol(format!(
            "unexpected {other:?} during an upload"
        ))),
    }
}

/// Starts a download through `link` (see `AgentGateway::download_file`): asks for the file,
/// waits for its description, and streams its bytes as they are read. The agent is
/// acknowledged only for bytes handed on.
pub(crate) async fn download(
    mut link: FileLink,
    path: &str,
    offset: u64,
) -> Result<AgentDownload, FileOpError> {
    link.send(ServerMessage::FileDownload {
        channel_id: link.id(),
        path: path.to_owned(),
        offset,
    })
    .await?;
    let (size, sha256) = match link.next(ANSWER_TIMEOUT).await? {
        FileEvent::Info { size, sha256, .. } => (size, sha256),
        other => {
            return Err(FileOpError::Protocol(format!(
                "expected file_info, got {other:?}"
            )));
        }
    };
    let state = DownloadState {
        link,
        delivered: offset,
        last_ack: offset,
        size,
        ended: false,
        complete: offset == size,
    };
    Ok(AgentDownload {
        size,
        sha256,
        body: Box::pin(futures_util::stream::unfold(state, DownloadState::step)),
    })
}

struct DownloadState {
    link: FileLink,
    delivered: u64,
    last_ack: u64,
    size: u64,
    ended: bool,
    /// The agent confirmed the whole file (`file_done`).
    complete: bool,
}

impl DownloadState {
    /// The next chunk of the body; the last one only with the agent's `file_done`.
    async fn step(mut self) -> Option<(Result<Bytes, FileOpError>, Self)> {
        if self.ended {
            return None;
        }
        if self.complete {
            self.finish();
            return None;
        }
        match self.next_chunk().await {
            Ok(Some(data)) => {
                if self.complete {
                    // Settled with this chunk: the client may not poll again.
                    self.finish();
                }
                Some((Ok(data), self))
            }
            Ok(None) => {
                self.finish();
                None
            }
            Err(e) => {
                self.ended = true;
                Some((Err(e), self))
            }
        }
    }

    fn finish(&mut self) {
        self.ended = true;
        self.link.finished = true;
    }

    /// The agent's `file_done` for the whole file, after its last data.
    async fn expect_done(&mut self) -> Result<(), FileOpError> {
        match self.link.next(ANSWER_TIMEOUT).await? {
            FileEvent::Done { size, .. } if size == self.size => {
                self.complete = true;
                Ok(())
            }
            other => Err(FileOpError::Protocol(format!(
                "expected file_done, got {other:?}"
            ))),
        }
    }

    /// The next data, `None` at the agent's `file_done`.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, FileOpError> {
        if self.delivered - self.last_ack >= ACK_EVERY {
            self.last_ack = self.delivered;
            self.link
                .send(ServerMessage::FileAck {
                    channel_id: self.link.id(),
                    offset: self.delivered,
                })
                .await?;
        }
        match self.link.next(ANSWER_TIMEOUT).await? {
            FileEvent::Data { offset, data } if offset == self.delivered => {
                self.delivered =
                    self.delivered
                        .checked_add(data.len() as u64)
                        .ok_or_else(|| {
                            FileOpError::Protocol("a data frame past any file's end".into())
                        })?;
                telemetry::transferred(Direction::Download, data.len());
                if self.delivered > self.size {
                    return Err(FileOpError::Protocol(
                        "more data than the file's size".into(),
                    ));
                }
                if self.delivered == self.size {
                    // The last bytes: hand them on only with the agent's word that the file
                    // did not change while it was read. An HTTP client that has its
                    // Content-Length may not ask for more, so the end is settled here.
                    self.expect_done().await?;
                }
                Ok(Some(data))
            }
            FileEvent::Data { offset, .. } => Err(FileOpError::Protocol(format!(
                "data at {offset}, expected {}",
                self.delivered
            ))),
            FileEvent::Done { size, .. } if size == self.size && self.delivered == size => {
                self.complete = true;
                Ok(None)
            }
            FileEvent::Done { .. } => Err(FileOpError::Protocol(format!(
                "file_done after {} of {} bytes",
                self.delivered, self.size
            ))),
            other => Err(FileOpError::Protocol(format!(
                "unexpected {other:?} during a download"
            ))),
        }
    }
}

/// Lists a directory through `link`.
pub(crate) async fn list(mut link: FileLink, path: &str) -> Result<Vec<FileEntry>, FileOpError> {
    link.send(ServerMessage::FileList {
        channel_id: link.id(),
        path: path.to_owned(),
    })
    .await?;
    match link.next(ANSWER_TIMEOUT).await? {
        FileEvent::Listing { entries, .. } => {
            link.finished = true;
            Ok(entries
                .into_iter()
                .map(|e| FileEntry {
                    name: e.name,
                    kind: e.kind,
                    size: e.size,
                    mode: e.mode,
                    modified: e.modified,
                })
                .collect())
        }
        other => Err(FileOpError::Protocol(format!(
            "expected file_listing, got {other:?}"
        ))),
    }
}

/// How many bytes of an interrupted upload to `path` the agent holds, through `link`.
pub(crate) async fn upload_status(mut link: FileLink, path: &str) -> Result<u64, FileOpError> {
    link.send(ServerMessage::FileUploadStatus {
        channel_id: link.id(),
        path: path.to_owned(),
    })
    .await?;
    match link.next(ANSWER_TIMEOUT).await? {
        FileEvent::Partial { size } => {
            link.finished = true;
            Ok(size)
        }
        other => Err(FileOpError::Protocol(format!(
            "expected file_partial, got {other:?}"
        ))),
    }
}
