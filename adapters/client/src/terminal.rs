//! Interactive terminals: opening one in a session (`POST .../terminals`), closing it
//! (`DELETE`), and its WebSocket (`.../terminals/{id}/ws`): output and input as binary
//! frames, a resize and the exit as small JSON texts.

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::Method;
use rmm_domain::SessionId;
use rmm_protocol::limits::STREAM_FRAME_DATA;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use crate::classify::About;
use crate::error::one_line;
use crate::{ApiClient, ClientError, REQUEST_TIMEOUT};

/// What to open: `POST /api/v1/tunnel/{session_id}/terminals`.
#[derive(Debug, Clone, Serialize)]
pub struct TerminalSpec {
    pub cols: u16,
    pub rows: u16,
    pub term: String,
    /// Run this (`sh -c`) instead of the agent user's login shell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// The answer to opening a terminal (201): it runs, and its WebSocket may be attached.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TerminalOpened {
    pub terminal_id: Uuid,
    pub session_id: Uuid,
    pub cols: u16,
    pub rows: u16,
    pub term: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// How a terminal's process ended: its exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalExit {
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
}

/// The answer to closing a terminal (`DELETE`), once it has ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TerminalClosed {
    pub terminal_id: Uuid,
    #[serde(flatten)]
    pub exit: TerminalExit,
}

/// A control message of the terminal WebSocket (JSON text frames).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Control {
    Resize {
        cols: u16,
        rows: u16,
    },
    Exit(TerminalExit),
    /// First on every attach: the output position of the next output byte.
    Attached {
        offset: u64,
    },
}

/// What came from a terminal's WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalEvent {
    /// Output bytes (the replay on attach, then live).
    Output(Bytes),
    /// The process ended; the server closes the socket next.
    Exit(TerminalExit),
    /// The server closed the socket with this code and reason.
    Closed { code: u16, reason: String },
    /// The connection broke (an error, or an end without a close frame).
    Lost(String),
}

impl ApiClient {
    /// Opens a terminal in the session; answers once the agent has started it.
    ///
    /// # Errors
    /// [`ClientError::TerminalsUnsupported`] (the agent lacks terminals),
    /// [`ClientError::TerminalTimedOut`] (504), [`ClientError::BadRequest`] (bad size or
    /// TERM), session, auth, transport and server errors.
    pub async fn open_terminal(
        &self,
        session: SessionId,
        spec: &TerminalSpec,
    ) -> Result<TerminalOpened, ClientError> {
        let path = format!("api/v1/tunnel/{session}/terminals");
        let request = self.request(Method::POST, &path, true)?.json(spec);
        self.json(request, About::Terminal(session), REQUEST_TIMEOUT)
            .await
    }

    /// Closes a terminal (hang-up, then TERM, then KILL); answers once it has ended.
    ///
    /// # Errors
    /// Session, auth, transport and server errors.
    pub async fn close_terminal(
        &self,
        session: SessionId,
        terminal: Uuid,
    ) -> Result<TerminalClosed, ClientError> {
        let path = format!("api/v1/tunnel/{session}/terminals/{terminal}");
        let request = self.request(Method::DELETE, &path, true)?;
        self.json(request, About::Terminal(session), REQUEST_TIMEOUT)
            .await
    }

    /// Attaches to a terminal: its WebSocket, which first replays the recent output — from
    /// output position `since` (what a reattaching client already shows, see
    /// [`TerminalSocket::position`]) when the server still holds it.
    ///
    /// # Errors
    /// Session, auth and transport errors, as for the HTTP calls (a terminal that is gone
    /// reads as the server's 404).
    pub async fn attach_terminal(
        &self,
        session: SessionId,
        terminal: Uuid,
        since: Option<u64>,
    ) -> Result<TerminalSocket, ClientError> {
        let mut path = format!("api/v1/tunnel/{session}/terminals/{terminal}/ws");
        if let Some(offset) = since {
            path.push_str(&format!("?offset={offset}"));
        }
        let socket = self.ws_connect(&path, About::Terminal(session)).await?;
        Ok(TerminalSocket {
            socket,
            server: self.server.clone(),
            position: None,
        })
    }
}

/// An attached terminal's WebSocket.
#[derive(Debug)]
pub struct TerminalSocket {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    server: String,
    /// The output position after what was received (known once the server said where the
    /// replay starts).
    position: Option<u64>,
}

impl TerminalSocket {
    /// The output position after what this socket received: where a reattach should resume.
    /// `None` before the server said where the replay starts (an older server).
    #[must_use]
    pub fn position(&self) -> Option<u64> {
        self.position
    }

    /// The next event. Cancel-safe: nothing is lost when the future is dropped.
    pub async fn next_event(&mut self) -> TerminalEvent {
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Binary(data))) => {
                    if let Some(position) = &mut self.position {
                        *position += data.len() as u64;
                    }
                    return TerminalEvent::Output(data);
                }
                Some(Ok(Message::Text(text))) => {
                    // Control messages this client does not know (a newer server's) are skipped.
                    match serde_json::from_str(text.as_str()) {
                        Ok(Control::Exit(exit)) => return TerminalEvent::Exit(exit),
                        Ok(Control::Attached { offset }) => self.position = Some(offset),
                        Ok(Control::Resize { .. }) | Err(_) => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    // No code in the frame is 1005, "no status received" (RFC 6455, 7.1.5).
                    return TerminalEvent::Closed {
                        code: frame.as_ref().map_or(1005, |f| u16::from(f.code)),
                        reason: frame
                            .map(|f| one_line(f.reason.as_str()))
                            .unwrap_or_default(),
                    };
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(e)) => return TerminalEvent::Lost(one_line(&e.to_string())),
                None => return TerminalEvent::Lost("the connection ended".to_owned()),
            }
        }
    }

    /// Sends input bytes, in frames of at most the protocol's frame size.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] when the connection fails.
    pub async fn send_input(&mut self, data: &[u8]) -> Result<(), ClientError> {
        for chunk in data.chunks(STREAM_FRAME_DATA) {
            let frame = Message::Binary(Bytes::copy_from_slice(chunk));
            self.socket.send(frame).await.map_err(|e| self.lost(&e))?;
        }
        Ok(())
    }

    /// Tells the terminal its new size.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] when the connection fails.
    pub async fn send_resize(&mut self, cols: u16, rows: u16) -> Result<(), ClientError> {
        let text = serde_json::to_string(&Control::Resize { cols, rows })
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.socket
            .send(Message::text(text))
            .await
            .map_err(|e| self.lost(&e))
    }

    /// Detaches politely (best effort): the terminal lives on for the server's grace period.
    pub async fn close(mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "detached".into(),
        };
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            self.socket.close(Some(frame)),
        )
        .await;
    }

    fn lost(&self, e: &tokio_tungstenite::tungstenite::Error) -> ClientError {
        ClientError::Unreachable {
            server: self.server.clone(),
            cause: format!(
                "the terminal connection failed: {}",
                one_line(&e.to_string())
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn control_messages_read_and_write_as_the_api_spells_them() {
        let resize = serde_json::to_value(Control::Resize {
            cols: 100,
            rows: 30,
        })
        .unwrap();
        assert_eq!(
            resize,
            serde_json::json!({"type": "resize", "cols": 100, "rows": 30})
        );
        let exit: Control = serde_json::from_str(r#"{"type":"exit","exit_code":3}"#).unwrap();
        assert_eq!(
            exit,
            Control::Exit(TerminalExit {
                exit_code: Some(3),
                signal: None
            })
        );
        let killed: Control = serde_json::from_str(r#"{"type":"exit","signal":9}"#).unwrap();
        assert_eq!(
            killed,
            Control::Exit(TerminalExit {
                exit_code: None,
                signal: Some(9)
            })
        );
        let spec = TerminalSpec {
            cols: 80,
            rows: 24,
            term: "xterm-256color".into(),
            command: None,
        };
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            serde_json::json!({"cols": 80, "rows": 24, "term": "xterm-256color"})
        );
    }
}
