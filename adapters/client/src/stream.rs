//! The session stream WebSocket: every frame of a session, decoded with the server's own
//! [`rmm_protocol`] types, not a copy.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use rmm_domain::SessionId;
use rmm_protocol::{AgentMessage, DataFrame, DecodeError, OutputChannel, OutputStream};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::classify::{About, ErrorReply};
use crate::error::{one_line, with_certificate_hint};
use crate::{ApiClient, ClientError, OutputKind, REQUEST_TIMEOUT};

impl ApiClient {
    /// Connects to the session's stream WebSocket: every frame of the session from now on,
    /// after a replay of the recent ones. Connect before running a command so none of its
    /// output is missed.
    ///
    /// # Errors
    /// Session, auth and transport errors, as for the HTTP calls.
    pub async fn stream(&self, session: SessionId) -> Result<SessionStream, ClientError> {
        self.open_stream(session, "").await
    }

    /// Like [`Self::stream`], but command output comes in binary frames (`?output=binary`):
    /// read them with [`SessionStream::next_frame`].
    ///
    /// # Errors
    /// As [`Self::stream`].
    pub async fn binary_stream(&self, session: SessionId) -> Result<SessionStream, ClientError> {
        self.open_stream(session, "?output=binary").await
    }

    async fn open_stream(
        &self,
        session: SessionId,
        query: &str,
    ) -> Result<SessionStream, ClientError> {
        let path = format!("api/v1/tunnel/{session}/stream{query}");
        let socket = self.ws_connect(&path, About::Session(session)).await?;
        Ok(SessionStream {
            socket,
            server: self.server.clone(),
            close_reason: None,
            close_code: None,
        })
    }

    /// Connects a WebSocket of the API at `path` (relative to the server), with the token in
    /// the `Authorization` header and the CA the HTTP calls trust; an error answer to the
    /// handshake is classified as the same answer to a request about `about`.
    pub(crate) async fn ws_connect(
        &self,
        path: &str,
        about: About,
    ) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, ClientError> {
        let mut url = self.url(path)?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .map_err(|()| ClientError::Protocol("cannot form the WebSocket URL".into()))?;
        let token = self.token.as_ref().ok_or(ClientError::NotLoggedIn)?;
        let mut request = url.as_str().into_client_request().map_err(|e| {
            ClientError::Protocol(format!("cannot form the WebSocket request: {e}"))
        })?;
        let bearer = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| ClientError::TokenRejected("it is not a valid header value".into()))?;
        request.headers_mut().insert("authorization", bearer);
        let connector = self
            .ws_tls
            .as_ref()
            .map(|config| tokio_tungstenite::Connector::Rustls(Arc::clone(config)));
        // TCP_NODELAY: a keystroke is one small frame, and must not wait for an ACK.
        let connecting =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector);
        match tokio::time::timeout(REQUEST_TIMEOUT, connecting).await {
            Ok(Ok((socket, _))) => Ok(socket),
            Ok(Err(WsError::Http(response))) => {
                let body = response.body().as_deref().unwrap_or_default();
                Err(ErrorReply::parse(response.status().as_u16(), body).into_error(about))
            }
            Ok(Err(WsError::Io(e))) => Err(ClientError::Unreachable {
                server: self.server.clone(),
                cause: e.to_string(),
            }),
            Ok(Err(WsError::Tls(e))) => Err(ClientError::Unreachable {
                server: self.server.clone(),
                cause: with_certificate_hint(one_line(&e.to_string())),
            }),
            Ok(Err(e)) => Err(ClientError::Protocol(format!(
                "the WebSocket handshake failed: {}",
                one_line(&e.to_string())
            ))),
            Err(_) => Err(ClientError::TimedOut {
                server: self.server.clone(),
                secs: REQUEST_TIMEOUT.as_secs(),
            }),
        }
    }
}

/// One frame of a session's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFrame {
    Message(AgentMessage),
    /// Command output in a binary frame (only on a [`ApiClient::binary_stream`]).
    Output(OutputFrame),
}

/// Bytes of one stream of a command, exactly as the command wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFrame {
    /// The command's channel.
    pub channel_id: String,
    pub kind: OutputKind,
    /// The position of the first byte in the stream.
    pub offset: u64,
    pub data: bytes::Bytes,
}

impl OutputFrame {
    /// A binary frame of the stream: `None` when it is not command output (skipped).
    fn decode(bytes: impl Into<bytes::Bytes>) -> Result<Option<Self>, ClientError> {
        let frame = DataFrame::decode(bytes.into())
            .map_err(|e| ClientError::Protocol(format!("bad binary frame on the stream: {e}")))?;
        let Some(OutputChannel { channel, stream }) = OutputChannel::parse(&frame.channel_id)
        else {
            return Ok(None);
        };
        Ok(Some(Self {
            channel_id: channel.to_owned(),
            kind: match stream {
                OutputStream::Stdout => OutputKind::Stdout,
                OutputStream::Stderr => OutputKind::Stderr,
            },
            offset: frame.offset,
            data: frame.data,
        }))
    }
}

/// A text frame of the stream: `None` for a message type this client does not know (skipped).
fn decode_text(text: &str) -> Result<Option<AgentMessage>, ClientError> {
    match AgentMessage::decode(text) {
        Ok(message) => Ok(Some(message)),
        Err(DecodeError::UnknownType(_)) => Ok(None),
        Err(e) => Err(ClientError::Protocol(format!(
            "bad frame on the stream: {e}"
        ))),
    }
}

/// The stream's decoder without a socket, for the fuzz targets in `fuzz/` (not an API).
#[doc(hidden)]
pub mod fuzzing {
    use super::{AgentMessage, ClientError, OutputFrame, decode_text};

    /// A text frame as [`SessionStream::next_frame`](super::SessionStream::next_frame) reads it.
    ///
    /// # Errors
    /// As `next_frame` for that frame.
    pub fn text(text: &str) -> Result<Option<AgentMessage>, ClientError> {
        decode_text(text)
    }

    /// A binary frame as `next_frame` reads it on a binary stream.
    ///
    /// # Errors
    /// As `next_frame` for that frame.
    pub fn binary(bytes: bytes::Bytes) -> Result<Option<OutputFrame>, ClientError> {
        OutputFrame::decode(bytes)
    }
}

/// A session's stream: the agent's frames (`tunnel_data`, `tunnel_error`) in the reference
/// format with the lossless extension, decoded with the server's [`AgentMessage`].
#[derive(Debug)]
pub struct SessionStream {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    server: String,
    close_reason: Option<String>,
    /// The code of the server's close frame, once it has sent one.
    close_code: Option<u16>,
}

impl SessionStream {
    /// The next message; `Ok(None)` once the server has closed the stream (see
    /// [`Self::close_reason`]). Frames of types this client does not know are skipped.
    /// Cancel-safe: no frame is lost when the future is dropped.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] when the connection fails, [`ClientError::Protocol`] for a
    /// frame that does not parse.
    pub async fn next_message(&mut self) -> Result<Option<AgentMessage>, ClientError> {
        loop {
            match self.next_frame().await? {
                Some(StreamFrame::Message(message)) => return Ok(Some(message)),
                Some(StreamFrame::Output(_)) => {}
                None => return Ok(None),
            }
        }
    }

    /// The next message or binary output frame (a stream from
    /// [`ApiClient::binary_stream`]); `Ok(None)` once the server has closed the stream.
    /// Cancel-safe.
    ///
    /// # Errors
    /// As [`Self::next_message`]; a binary frame that does not parse is
    /// [`ClientError::Protocol`].
    pub async fn next_frame(&mut self) -> Result<Option<StreamFrame>, ClientError> {
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Binary(bytes))) => {
                    if let Some(output) = OutputFrame::decode(bytes)? {
                        return Ok(Some(StreamFrame::Output(output)));
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    if let Some(message) = decode_text(&text)? {
                        return Ok(Some(StreamFrame::Message(message)));
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    // A close frame without a code is 1005, "no status received" (RFC 6455, 7.1.5).
                    self.close_code = Some(frame.as_ref().map_or(1005, |f| u16::from(f.code)));
                    self.close_reason = frame.map(|f| one_line(f.reason.as_str()));
                    return Ok(None);
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Frame(_))) => {}
                Some(Err(e)) => {
                    return Err(ClientError::Unreachable {
                        server: self.server.clone(),
                        cause: format!("the session stream failed: {}", one_line(&e.to_string())),
                    });
                }
                None => return Ok(None),
            }
        }
    }

    /// Why the server closed the stream, if it said.
    #[must_use]
    pub fn close_reason(&self) -> Option<&str> {
        self.close_reason.as_deref()
    }

    /// Whether the server closed the stream because the session's frames ended (a normal
    /// close, code 1000): the session was closed. Not after a close for another cause (a
    /// watcher that fell behind), nor after a connection that broke.
    #[must_use]
    pub fn ended_with_the_session(&self) -> bool {
        self.close_code == Some(1000)
    }

    /// Closes the stream politely (best effort).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.socket.close(None)).await;
    }
}
