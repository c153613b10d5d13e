//! A small technician's client of the server's public API, for the benchmarks: login, agent
//! registration, tunnels, commands, files and the session stream WebSocket.
//!
//! It is deliberately independent of the `rmm` CLI's client: the benchmarks measure the API
//! itself, with one pooled keep-alive HTTP connection per concurrent caller (the fair peer of
//! an ssh ControlMaster connection), and must not move when the CLI's internals do.

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The session stream socket.
pub type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Timeout of small API calls (not transfers).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A logged-in client.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// An agent registered through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredAgent {
    pub id: String,
    pub key: String,
}

/// A command the server accepted.
#[derive(Debug, Clone)]
pub struct StartedCommand {
    pub command_id: String,
    pub channel_id: String,
}

/// An answer that was not the expected status.
#[derive(Debug)]
pub struct UnexpectedStatus {
    pub status: u16,
    pub body: String,
}

impl std::fmt::Display for UnexpectedStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body: String = self.body.chars().take(300).collect();
        write!(f, "HTTP {}: {body}", self.status)
    }
}

impl std::error::Error for UnexpectedStatus {}

/// Installs the TLS provider reqwest needs (the tree's one provider, ring); idempotent.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A pooled HTTP client with no overall timeout (transfers set their own).
///
/// # Errors
/// When the client cannot be built.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    init_crypto();
    Ok(reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1024)
        .build()?)
}

async fn expect(r: reqwest::Response, status: u16) -> anyhow::Result<Value> {
    let got = r.status().as_u16();
    let text = r.text().await.context("reading the response body")?;
    if got != status {
        return Err(UnexpectedStatus {
            status: got,
            body: text,
        }
        .into());
    }
    serde_json::from_str(&text).with_context(|| format!("response is not JSON: {text}"))
}

fn field(body: &Value, name: &str) -> anyhow::Result<String> {
    body[name]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("response without {name}: {body}"))
}

impl Api {
    /// Logs in at `base` (`http://127.0.0.1:PORT`).
    ///
    /// # Errors
    /// When the server is unreachable or the login is refused.
    pub async fn login(base: &str, username: &str, password: &str) -> anyhow::Result<Self> {
        let http = http_client()?;
        let base = base.trim_end_matches('/').to_owned();
        let r = http
            .post(format!("{base}/api/v1/auth/login"))
            .timeout(CALL_TIMEOUT)
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .with_context(|| format!("cannot reach {base}"))?;
        let body = expect(r, 200).await.context("login failed")?;
        Ok(Self {
            http,
            base,
            token: field(&body, "token")?,
        })
    }

    /// A client for `base` with a known token.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn with_token(base: &str, token: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: http_client()?,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    #[must_use]
    pub fn token(&self) -> &str {
        &self.token
    }

    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    #[must_use]
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .timeout(CALL_TIMEOUT)
            .json(body)
    }

    /// Registers an agent (admins only).
    ///
    /// # Errors
    /// When the answer is not 201.
    pub async fn register_agent(&self, name: &str) -> anyhow::Result<RegisteredAgent> {
        let r = self
            .post("/api/v1/agents", &json!({ "name": name }))
            .send()
            .await?;
        let body = expect(r, 201)
            .await
            .with_context(|| format!("registering agent {name}"))?;
        Ok(RegisteredAgent {
            id: field(&body, "agent_id")?,
            key: field(&body, "agent_key")?,
        })
    }

    /// Opens a tunnel; the session id once the agent has confirmed.
    ///
    /// # Errors
    /// When the answer is not 200.
    pub async fn open_tunnel(&self, agent_id: &str) -> anyhow::Result<String> {
        let r = self
            .post("/api/v1/tunnel/open", &json!({ "agent_id": agent_id }))
            .send()
            .await?;
        field(&expect(r, 200).await?, "session_id")
    }

    /// Closes a tunnel.
    ///
    /// # Errors
    /// When the answer is not 200.
    pub async fn close_tunnel(&self, session: &str) -> anyhow::Result<()> {
        let r = self
            .post("/api/v1/tunnel/close", &json!({ "session_id": session }))
            .send()
            .await?;
        expect(r, 200).await.map(drop)
    }

    /// Starts a command (202).
    ///
    /// # Errors
    /// When the answer is not 202.
    pub async fn run_command(
        &self,
        session: &str,
        command: &str,
        timeout_secs: u64,
    ) -> anyhow::Result<StartedCommand> {
        let r = self
            .post(
                &format!("/api/v1/tunnel/{session}/command"),
                &json!({ "command": command, "timeout_secs": timeout_secs }),
            )
            .send()
            .await?;
        let body = expect(r, 202).await?;
        Ok(StartedCommand {
            command_id: field(&body, "command_id")?,
            channel_id: field(&body, "channel_id")?,
        })
    }

    /// The command, held until it ends or `wait_secs` pass (`?wait=`).
    ///
    /// # Errors
    /// When the answer is not 200.
    pub async fn wait_command(
        &self,
        session: &str,
        command_id: &str,
        wait_secs: u64,
    ) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(self.url(&format!(
                "/api/v1/tunnel/{session}/commands/{command_id}?wait={wait_secs}"
            )))
            .bearer_auth(&self.token)
            .timeout(CALL_TIMEOUT + Duration::from_secs(wait_secs))
            .send()
            .await?;
        expect(r, 200).await
    }

    /// Connects the session's stream WebSocket (`ws://` only: the server is on loopback).
    ///
    /// # Errors
    /// When the upgrade is refused.
    pub async fn stream(&self, session: &str) -> anyhow::Result<Stream> {
        self.websocket(&format!("/api/v1/tunnel/{session}/stream"), false)
            .await
            .context("connecting the session stream")
    }

    /// Opens a terminal running `command` (80×24), once the agent's PTY is ready; its id.
    ///
    /// # Errors
    /// When the answer is not 201.
    pub async fn open_terminal(&self, session: &str, command: &str) -> anyhow::Result<String> {
        let r = self
            .post(
                &format!("/api/v1/tunnel/{session}/terminals"),
                &json!({ "cols": 80, "rows": 24, "command": command }),
            )
            .send()
            .await?;
        field(&expect(r, 201).await?, "terminal_id")
    }

    /// Ends a terminal (`DELETE`); waits until it has ended.
    ///
    /// # Errors
    /// When the answer is not 200.
    pub async fn close_terminal(&self, session: &str, terminal: &str) -> anyhow::Result<()> {
        let r = self
            .http
            .delete(self.url(&format!("/api/v1/tunnel/{session}/terminals/{terminal}")))
            .bearer_auth(&self.token)
            .timeout(CALL_TIMEOUT)
            .send()
            .await?;
        expect(r, 200).await.map(drop)
    }

    /// Attaches to a terminal's WebSocket, with `TCP_NODELAY` as an interactive client
    /// (and ssh for a session with a terminal) sets it.
    ///
    /// # Errors
    /// When the upgrade is refused.
    pub async fn terminal_socket(&self, session: &str, terminal: &str) -> anyhow::Result<Stream> {
        self.websocket(
            &format!("/api/v1/tunnel/{session}/terminals/{terminal}/ws"),
            true,
        )
        .await
        .context("attaching to the terminal")
    }

    async fn websocket(&self, path: &str, nodelay: bool) -> anyhow::Result<Stream> {
        let Some(rest) = self.base.strip_prefix("http://") else {
            bail!(
                "the benchmarks speak plain http to a loopback server, not {}",
                self.base
            );
        };
        let mut request = format!("ws://{rest}{path}")
            .into_client_request()
            .context("WebSocket URL")?;
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", self.token)
                .parse()
                .context("token is not a header value")?,
        );
        let (socket, _) =
            tokio_tungstenite::connect_async_with_config(request, None, nodelay).await?;
        Ok(socket)
    }
}
