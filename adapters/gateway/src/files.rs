//! File transfers through a session's tunnel: the server's half of the `file-transfer`
//! extension. An upload streams the HTTP request body to the agent in binary data frames; a
//! download streams the agent's frames into the HTTP response. Either way at most a window of
//! [`WINDOW`] bytes is in flight, so memory stays bounded whatever the file size.
//!
//! Who may transfer and the audit entry of every transfer are the application's
//! (`App::authorize_file`, `App::audit_file`); this module only moves bytes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use rmm_application::{App, Direction, FileAccessError, FileAudit, GatewayError, Ports};
use rmm_domain::{Actor, AgentId, SessionId};
use sha2::{Digest as _, Sha256};

use crate::agents::{FileEvent, FileLink, Outbound, WsAgentGateway};
use rmm_protocol::{DataFrame, FileEntry, ServerMessage};

pub use rmm_protocol::limits::{
    FILE_ACK_EVERY as ACK_EVERY, FILE_FRAME_DATA as CHUNK, FILE_WINDOW as WINDOW,
};
/// How long an agent may take to answer a request (hashing a large file included).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Access(#[from] FileAccessError),
    /// The agent refused or failed; `code` is the protocol's error code.
    #[error("{message}")]
    Agent {
        code: rmm_protocol::FileErrorCode,
        message: String,
    },
    #[error("the agent of this session is not connected")]
    AgentGone,
    #[error("the agent does not support file transfer (upgrade the agent)")]
    Unsupported,
    #[error("the tunnel has too many transfers and commands in flight; try again")]
    Busy,
    #[error("the upload was interrupted: {0}")]
    ClientAborted(String),
    #[error("the agent did not answer in time")]
    Timeout,
    #[error("the agent broke the protocol: {0}")]
    Protocol(String),
}

impl TransferError {
    fn from_gateway(e: GatewayError) -> Self {
        match e {
            GatewayError::NotConnected | GatewayError::Disconnected => Self::AgentGone,
            GatewayError::Busy | GatewayError::Overloaded => Self::Busy,
            GatewayError::Unsupported => Self::Unsupported,
        }
    }
}

/// A completed upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Closes the file channel when the transfer ends, however it ends; tells the agent to stop
/// when it ends early.
struct Channel<P: Ports<Gateway = WsAgentGateway>> {
    app: Arc<App<P>>,
    agent: AgentId,
    link: FileLink,
    finished: bool,
}

impl<P: Ports<Gateway = WsAgentGateway>> Channel<P> {
    async fn open(
        app: &Arc<App<P>>,
        agent: AgentId,
        session: SessionId,
    ) -> Result<Self, TransferError> {
        let link = app
            .gateway()
            .open_file_channel(agent, session)
            .map_err(TransferError::from_gateway)?;
        Ok(Self {
            app: Arc::clone(app),
            agent,
            link,
            finished: false,
        })
    }

    fn id(&self) -> String {
        self.link.channel.to_string()
    }

    async fn send(&self, message: ServerMessage) -> Result<(), TransferError> {
        self.link
            .outbound
            .send(Outbound::Message(message))
            .await
            .map_err(|_| TransferError::AgentGone)
    }

    /// The next event; `AgentGone` when the channel closed (tunnel closed, agent gone).
    async fn next(&mut self, wait: Duration) -> Result<FileEvent, TransferError> {
        match tokio::time::timeout(wait, self.link.events.recv()).await {
            Ok(Some(FileEvent::Error { code, message })) => {
                Err(TransferError::Agent { code, message })
            }
            Ok(Some(event)) => Ok(event),
            Ok(None) => Err(TransferError::AgentGone),
            Err(_) => Err(TransferError::Timeout),
        }
    }
}

impl<P: Ports<Gateway = WsAgentGateway>> Drop for Channel<P> {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self
                .link
                .outbound
                .try_send(Outbound::Message(ServerMessage::FileCancel {
                    channel_id: self.id(),
                }));
        }
        self.app
            .gateway()
            .close_file_channel(self.agent, &self.link.channel);
    }
}

/// Uploads `body` to `path` on the session's agent, from byte `offset` (a resume). The agent
/// renames the file into place only when every byte arrived and the SHA-256 matches `sha256`
/// (or, for a whole-file upload without one, the hash of what was streamed).
///
/// # Errors
/// See [`TransferError`].
#[allow(clippy::too_many_arguments)]
pub async fn upload<P, S>(
    app: &Arc<App<P>>,
    actor: Actor,
    session: SessionId,
    path: &str,
    offset: u64,
    sha256: Option<String>,
    body: S,
) -> Result<Uploaded, TransferError>
where
    P: Ports<Gateway = WsAgentGateway>,
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send,
{
    let mut body = std::pin::pin!(body);
    let agent = match app.authorize_file(actor, session, path).await {
        Ok(agent) => agent,
        Err(e) => {
            drain(body.as_mut()).await;
            return Err(e.into());
        }
    };
    let result = upload_inner(app, agent, session, path, offset, sha256, body.as_mut()).await;
    if result.is_err() {
        drain(body.as_mut()).await;
    }
    let file = match &result {
        Ok(done) => FileAudit {
            path: done.path.clone(),
            direction: "upload".into(),
            size: Some(done.size),
            sha256: Some(done.sha256.clone()),
            result: "ok".into(),
        },
        Err(e) => FileAudit {
            path: path.to_owned(),
            direction: "upload".into(),
            size: None,
            sha256: None,
            result: e.to_string(),
        },
    };
    app.audit_file(actor, session, agent, Direction::Upload, file)
        .await;
    result
}

async fn upload_inner<P, S>(
    app: &Arc<App<P>>,
    agent: AgentId,
    session: SessionId,
    path: &str,
    offset: u64,
    sha256: Option<String>,
    body: S,
) -> Result<Uploaded, TransferError>
where
    P: Ports<Gateway = WsAgentGateway>,
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send,
{
    let mut body = std::pin::pin!(body);
    let mut channel = Channel::open(app, agent, session).await?;
    channel
        .send(ServerMessage::FileUpload {
            channel_id: channel.id(),
            path: path.to_owned(),
            offset,
        })
        .await?;
    let mut hasher = (offset == 0 && sha256.is_none()).then(Sha256::new);
    let (mut sent, mut acked) = (offset, offset);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| TransferError::ClientAborted(e.to_string()))?;
        for piece in chunk.chunks(CHUNK) {
            // An early refusal (no such directory, ...) arrives while we stream: stop then.
            while let Ok(event) = channel.link.events.try_recv() {
                acked = on_upload_event(event, acked)?;
            }
            while sent - acked >= WINDOW {
                acked = on_upload_event(channel.next(ANSWER_TIMEOUT).await?, acked)?;
            }
            let frame = DataFrame {
                channel_id: channel.id(),
                offset: sent,
                data: Bytes::copy_from_slice(piece),
            };
            channel
                .link
                .outbound
                .send(Outbound::Data(frame.encode()))
                .await
                .map_err(|_| TransferError::AgentGone)?;
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(piece);
            }
            sent += piece.len() as u64;
        }
    }
    let expected = sha256
        .map(|s| s.to_ascii_lowercase())
        .or_else(|| hasher.map(|h| hex::encode(h.finalize())));
    channel
        .send(ServerMessage::FileUploadEnd {
            channel_id: channel.id(),
            size: sent,
            sha256: expected,
        })
        .await?;
    loop {
        match channel.next(ANSWER_TIMEOUT).await? {
            FileEvent::Done { path, size, sha256 } => {
                channel.finished = true;
                return Ok(Uploaded { path, size, sha256 });
            }
            FileEvent::Ack { .. } => {}
            other => {
                return Err(TransferError::Protocol(format!(
                    "unexpected {other:?} at the end of an upload"
                )));
            }
        }
    }
}

/// Reads and discards what is left of a refused upload's body, within bounds, so the client
/// is still reading when the error answer comes: an HTTP/1 client that is cut off while it
/// writes sees a broken pipe instead of the reason.
async fn drain<S>(mut body: std::pin::Pin<&mut S>)
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send,
{
    const MAX_DRAIN: usize = 64 * 1024 * 1024;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
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

fn on_upload_event(event: FileEvent, acked: u64) -> Result<u64, TransferError> {
    match event {
        FileEvent::Ack { offset } => Ok(acked.max(offset)),
        FileEvent::Error { code, message } => Err(TransferError::Agent { code, message }),
        other => Err(TransferError::Protocol(format!(
            "unexpected {other:?} during an upload"
        ))),
    }
}

/// A download under way: the file's facts, and its bytes from the requested offset.
pub struct Download {
    pub size: u64,
    pub sha256: String,
    pub offset: u64,
    pub body: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("size", &self.size)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

/// Downloads `path` from the session's agent, from byte `offset`. The body streams as the
/// HTTP client reads it: the agent is acknowledged only for bytes handed on.
///
/// # Errors
/// See [`TransferError`]; errors after the first byte end the body with an I/O error.
pub async fn download<P>(
    app: &Arc<App<P>>,
    actor: Actor,
    session: SessionId,
    path: &str,
    offset: u64,
) -> Result<Download, TransferError>
where
    P: Ports<Gateway = WsAgentGateway>,
{
    let agent = app.authorize_file(actor, session, path).await?;
    let (audit_app, audit_path) = (Arc::clone(app), path.to_owned());
    let audit = move |result: String, size: Option<u64>, sha256: Option<String>| {
        let app = Arc::clone(&audit_app);
        let path = audit_path.clone();
        async move {
            let file = FileAudit {
                path,
                direction: "download".into(),
                size,
                sha256,
                result,
            };
            app.audit_file(actor, session, agent, Direction::Download, file)
                .await;
        }
    };
    let mut channel = match Channel::open(app, agent, session).await {
        Ok(channel) => channel,
        Err(e) => {
            audit(e.to_string(), None, None).await;
            return Err(e);
        }
    };
    let first = async {
        channel
            .send(ServerMessage::FileDownload {
                channel_id: channel.id(),
                path: path.to_owned(),
                offset,
            })
            .await?;
        match channel.next(ANSWER_TIMEOUT).await? {
            FileEvent::Info { size, sha256, .. } => Ok((size, sha256)),
            other => Err(TransferError::Protocol(format!(
                "expected file_info, got {other:?}"
            ))),
        }
    };
    let (size, sha256) = match first.await {
        Ok(info) => info,
        Err(e) => {
            audit(e.to_string(), None, None).await;
            return Err(e);
        }
    };
    let state = DownloadState {
        channel,
        delivered: offset,
        last_ack: offset,
        size,
        sha256: sha256.clone(),
        ended: false,
        complete: offset == size,
    };
    let body = futures_util::stream::unfold(state, move |mut state| {
        let audit = audit.clone();
        async move {
            if state.ended {
                return None;
            }
            if state.complete {
                state.ended = true;
                state.channel.finished = true;
                audit("ok".into(), Some(state.size), Some(state.sha256.clone())).await;
                return None;
            }
            match state.next_chunk().await {
                Ok(Some(data)) if state.complete => {
                    // Settled with this chunk: record it now, the client may not poll again.
                    state.ended = true;
                    state.channel.finished = true;
                    audit("ok".into(), Some(state.size), Some(state.sha256.clone())).await;
                    Some((Ok(data), state))
                }
                Ok(Some(data)) => Some((Ok(data), state)),
                Ok(None) => {
                    state.ended = true;
                    state.channel.finished = true;
                    audit("ok".into(), Some(state.size), Some(state.sha256.clone())).await;
                    None
                }
                Err(e) => {
                    state.ended = true;
                    audit(e.to_string(), Some(state.size), None).await;
                    Some((Err(std::io::Error::other(e.to_string())), state))
                }
            }
        }
    });
    Ok(Download {
        size,
        sha256,
        offset,
        body: Box::pin(body),
    })
}

struct DownloadState<P: Ports<Gateway = WsAgentGateway>> {
    channel: Channel<P>,
    delivered: u64,
    last_ack: u64,
    size: u64,
    sha256: String,
    ended: bool,
    /// The agent confirmed the whole file (`file_done`).
    complete: bool,
}

impl<P: Ports<Gateway = WsAgentGateway>> DownloadState<P> {
    /// The agent's `file_done` for the whole file, after its last data.
    async fn expect_done(&mut self) -> Result<(), TransferError> {
        match self.channel.next(ANSWER_TIMEOUT).await? {
            FileEvent::Done { size, .. } if size == self.size => {
                self.complete = true;
                Ok(())
            }
            other => Err(TransferError::Protocol(format!(
                "expected file_done, got {other:?}"
            ))),
        }
    }

    /// The next data, `None` at the agent's `file_done`.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, TransferError> {
        if self.delivered - self.last_ack >= ACK_EVERY {
            self.last_ack = self.delivered;
            self.channel
                .send(ServerMessage::FileAck {
                    channel_id: self.channel.id(),
                    offset: self.delivered,
                })
                .await?;
        }
        match self.channel.next(ANSWER_TIMEOUT).await? {
            FileEvent::Data { offset, data } if offset == self.delivered => {
                self.delivered += data.len() as u64;
                if self.delivered > self.size {
                    return Err(TransferError::Protocol(
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
            FileEvent::Data { offset, .. } => Err(TransferError::Protocol(format!(
                "data at {offset}, expected {}",
                self.delivered
            ))),
            FileEvent::Done { size, .. } if size == self.size && self.delivered == size => {
                self.complete = true;
                Ok(None)
            }
            FileEvent::Done { .. } => Err(TransferError::Protocol(format!(
                "file_done after {} of {} bytes",
                self.delivered, self.size
            ))),
            other => Err(TransferError::Protocol(format!(
                "unexpected {other:?} during a download"
            ))),
        }
    }
}

/// Lists a directory on the session's agent.
///
/// # Errors
/// See [`TransferError`].
pub async fn list<P>(
    app: &Arc<App<P>>,
    actor: Actor,
    session: SessionId,
    path: &str,
) -> Result<Vec<FileEntry>, TransferError>
where
    P: Ports<Gateway = WsAgentGateway>,
{
    let agent = app.authorize_file(actor, session, path).await?;
    let mut channel = Channel::open(app, agent, session).await?;
    channel
        .send(ServerMessage::FileList {
            channel_id: channel.id(),
            path: path.to_owned(),
        })
        .await?;
    match channel.next(ANSWER_TIMEOUT).await? {
        FileEvent::Listing { entries, .. } => {
            channel.finished = true;
            Ok(entries)
        }
        other => Err(TransferError::Protocol(format!(
            "expected file_listing, got {other:?}"
        ))),
    }
}

/// How many bytes of an interrupted upload to `path` the agent holds.
///
/// # Errors
/// See [`TransferError`].
pub async fn upload_status<P>(
    app: &Arc<App<P>>,
    actor: Actor,
    session: SessionId,
    path: &str,
) -> Result<u64, TransferError>
where
    P: Ports<Gateway = WsAgentGateway>,
{
    let agent = app.authorize_file(actor, session, path).await?;
    let mut channel = Channel::open(app, agent, session).await?;
    channel
        .send(ServerMessage::FileUploadStatus {
            channel_id: channel.id(),
            path: path.to_owned(),
        })
        .await?;
    match channel.next(ANSWER_TIMEOUT).await? {
        FileEvent::Partial { size } => {
            channel.finished = true;
            Ok(size)
        }
        other => Err(TransferError::Protocol(format!(
            "expected file_partial, got {other:?}"
        ))),
    }
}

/// Parses `Range: bytes=N-` (the form resuming clients send). Other forms are not supported:
/// `None`, and the whole file is sent.
#[must_use]
pub fn range_start(header: Option<&str>) -> Option<u64> {
    let spec = header?.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    if !end.trim().is_empty() {
        return None;
    }
    start.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::range_start;

    #[test]
    fn only_open_ended_byte_ranges_are_understood() {
        assert_eq!(range_start(Some("bytes=100-")), Some(100));
        assert_eq!(range_start(Some("bytes=0-")), Some(0));
        assert_eq!(range_start(Some("bytes=0-99")), None);
        assert_eq!(range_start(Some("bytes=-5")), None);
        assert_eq!(range_start(Some("items=1-")), None);
        assert_eq!(range_start(None), None);
    }
}
