//! A scripted agent: a raw WebSocket client that sends and expects the reference's JSON
//! byte for byte, so tests control every frame (including hostile ones).

use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A connected scripted agent.
#[derive(Debug)]
pub struct ScriptedAgent {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What came back when a frame was expected.
#[derive(Debug)]
pub enum Received {
    Json(Value),
    Closed(Option<CloseFrame>),
}

impl ScriptedAgent {
    /// Connects with `Authorization: Bearer <key>`.
    ///
    /// # Errors
    /// The handshake error; see [`Self::connect_status`] for the HTTP status of a refusal.
    pub async fn connect(ws_url: &str, key: Option<&str>) -> Result<Self, WsError> {
        let mut request = ws_url.into_client_request()?;
        if let Some(key) = key {
            let value = format!("Bearer {key}").parse().map_err(|_| {
                WsError::Url(tokio_tungstenite::tungstenite::error::UrlError::EmptyHostName)
            })?;
            request.headers_mut().insert("authorization", value);
        }
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self { socket })
    }

    /// Connects like [`Self::connect`], listing `capabilities` in the `x-rmm-capabilities`
    /// header as an agent that speaks those extensions does.
    ///
    /// # Errors
    /// The handshake error.
    pub async fn connect_with_capabilities(
        ws_url: &str,
        key: &str,
        capabilities: &str,
    ) -> anyhow::Result<Self> {
        let mut request = ws_url.into_client_request()?;
        let headers = request.headers_mut();
        headers.insert("authorization", format!("Bearer {key}").parse()?);
        headers.insert("x-rmm-capabilities", capabilities.parse()?);
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self { socket })
    }

    /// Connects like [`Self::connect`] from the local address `from` (a loopback alias such
    /// as 127.0.0.2, so the server sees another client address).
    ///
    /// # Errors
    /// When the socket cannot bind or connect, or the handshake fails.
    pub async fn connect_from(
        ws_url: &str,
        key: &str,
        from: std::net::IpAddr,
    ) -> anyhow::Result<Self> {
        let mut request = ws_url.into_client_request()?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {key}").parse()?);
        let host = request.uri().host().context("host")?.to_owned();
        let port = request.uri().port_u16().context("port")?;
        let target = tokio::net::lookup_host((host.as_str(), port))
            .await?
            .find(|a| a.is_ipv4() == from.is_ipv4())
            .context("no address of the server's family")?;
        let socket = if from.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(std::net::SocketAddr::new(from, 0))?;
        let stream = socket.connect(target).await?;
        let (socket, _) =
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await?;
        Ok(Self { socket })
    }

    /// The HTTP status with which the server refused the upgrade, if it did.
    pub async fn connect_status(ws_url: &str, key: Option<&str>) -> Option<u16> {
        match Self::connect(ws_url, key).await {
            Err(WsError::Http(response)) => Some(response.status().as_u16()),
            Ok(_) | Err(_) => None,
        }
    }

    /// Sends a text frame exactly as given.
    ///
    /// # Errors
    /// When the socket is gone.
    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.socket
            .send(Message::text(text))
            .await
            .context("sending a frame")
    }

    /// Sends a raw frame.
    ///
    /// # Errors
    /// When the socket is gone.
    pub async fn send(&mut self, message: Message) -> anyhow::Result<()> {
        self.socket.send(message).await.context("sending a frame")
    }

    /// The next JSON text frame or the close, skipping pings; error after `wait`.
    ///
    /// # Errors
    /// On timeout, a non-JSON text frame or a socket error.
    pub async fn recv(&mut self, wait: Duration) -> anyhow::Result<Received> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .context("no frame in time")?;
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Ok(Received::Json(
                        serde_json::from_str(&text)
                            .with_context(|| format!("non-JSON frame {text}"))?,
                    ));
                }
                Some(Ok(Message::Close(frame))) => return Ok(Received::Closed(frame)),
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("socket error: {e}"),
                None => return Ok(Received::Closed(None)),
            }
        }
    }

    /// The next JSON frame, which must be one.
    ///
    /// # Errors
    /// On timeout, close or socket error.
    pub async fn recv_json(&mut self, wait: Duration) -> anyhow::Result<Value> {
        match self.recv(wait).await? {
            Received::Json(v) => Ok(v),
            Received::Closed(frame) => bail!("socket closed: {frame:?}"),
        }
    }

    /// Waits for a `tunnel_open` and returns its session id.
    ///
    /// # Errors
    /// When the next frame is something else.
    pub async fn expect_open(&mut self) -> anyhow::Result<String> {
        let frame = self.recv_json(Duration::from_secs(10)).await?;
        if frame["type"] != "tunnel_open" {
            bail!("expected tunnel_open, got {frame}");
        }
        frame["payload"]["session_id"]
            .as_str()
            .map(str::to_owned)
            .context("tunnel_open without session_id")
    }

    /// Answers `tunnel_ready` for `session`.
    ///
    /// # Errors
    /// When the socket is gone.
    pub async fn ready(&mut self, session: &str) -> anyhow::Result<()> {
        self.send_text(&format!(
            r#"{{"type":"tunnel_ready","payload":{{"session_id":"{session}"}}}}"#
        ))
        .await
    }

    /// Closes the socket cleanly.
    ///
    /// # Errors
    /// When the close handshake fails.
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.socket.close(None).await.context("closing")
    }

    /// Drops the TCP connection without a close frame (a crashed agent).
    pub fn drop_connection(self) {
        drop(self);
    }
}
