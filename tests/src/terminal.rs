//! Interactive terminals end to end: a [`Rig`] (the real server on SQLite or a fresh
//! PostgreSQL database, the real agent on this machine, a technician's tunnel to it) and a
//! small client for a terminal's WebSocket ([`TermSocket`]): binary frames are the bytes,
//! text frames JSON control, as docs/protocol.md says.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::real_agent::spawn_agent;
use crate::server::TestServer;

/// The technician every rig logs in (password `tina-password`).
pub const TECH: &str = "tina";

/// A server with the real agent `web-01` connected and `tina`'s tunnel open to it.
#[derive(Debug)]
pub struct Rig {
    pub server: TestServer,
    pub admin: String,
    pub tech: String,
    pub agent_id: String,
    pub session: String,
    /// The agent process (on this machine), killed when dropped.
    pub agent: Child,
    _dir: Option<TempDir>,
}

/// Starts a rig: on SQLite, or on a fresh PostgreSQL database; `env` is added to the
/// server's environment (e.g. `RMM_TERMINAL_GRACE_SECS`).
///
/// # Errors
/// When any step fails.
pub async fn rig(on_sqlite: bool, env: &[(&str, &str)]) -> anyhow::Result<Rig> {
    let (db, dir) = if on_sqlite {
        let dir = tempfile::tempdir()?;
        (crate::pg::sqlite_url(dir.path()), Some(dir))
    } else {
        (crate::pg::fresh_database().await?, None)
    };
    let server = TestServer::start(&db, env).await?;
    let admin = server.admin_token().await?;
    let (agent_id, key) = server.register_agent(&admin, "web-01").await?;
    let agent = spawn_agent(&server, &key)?;
    server.wait_connected(&admin, &agent_id).await?;
    let tech = server.tech_token(TECH).await?;
    let (code, opened) = server
        .call(
            Method::POST,
            "/api/v1/tunnel/open",
            Some(&tech),
            Some(json!({ "agent_id": agent_id })),
        )
        .await?;
    anyhow::ensure!(code == 200, "open answered {code}: {opened}");
    let session = opened["session_id"]
        .as_str()
        .context("open without session_id")?
        .to_owned();
    Ok(Rig {
        server,
        admin,
        tech,
        agent_id,
        session,
        agent,
        _dir: dir,
    })
}

impl Rig {
    /// `POST .../terminals`; the answer's status and body.
    ///
    /// # Errors
    /// On transport failure.
    pub async fn open_raw(&self, token: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        let path = format!("/api/v1/tunnel/{}/terminals", self.session);
        self.server
            .call(Method::POST, &path, Some(token), Some(body))
            .await
    }

    /// Opens a terminal of `cols` x `rows` running `command` (the login shell when `None`)
    /// as the technician; its id.
    ///
    /// # Errors
    /// When the answer is not 201 with a terminal id.
    pub async fn open(
        &self,
        cols: u16,
        rows: u16,
        command: Option<&str>,
    ) -> anyhow::Result<String> {
        let mut body = json!({ "cols": cols, "rows": rows });
        if let Some(command) = command {
            body["command"] = json!(command);
        }
        let (code, opened) = self.open_raw(&self.tech, body).await?;
        anyhow::ensure!(code == 201, "open terminal answered {code}: {opened}");
        Ok(opened["terminal_id"]
            .as_str()
            .context("no terminal_id")?
            .to_owned())
    }

    /// The session's live terminals, as the technician.
    ///
    /// # Errors
    /// When the answer is not 200 with a list.
    pub async fn terminals(&self) -> anyhow::Result<Vec<Value>> {
        let path = format!("/api/v1/tunnel/{}/terminals", self.session);
        let (code, body) = self
            .server
            .call(Method::GET, &path, Some(&self.tech), None)
            .await?;
        anyhow::ensure!(code == 200, "list terminals answered {code}: {body}");
        body["terminals"]
            .as_array()
            .cloned()
            .context("no terminals array")
    }

    /// `DELETE .../terminals/{id}` as the technician: status and body.
    ///
    /// # Errors
    /// On transport failure.
    pub async fn delete(&self, terminal: &str) -> anyhow::Result<(u16, Value)> {
        let path = format!("/api/v1/tunnel/{}/terminals/{terminal}", self.session);
        self.server
            .call(Method::DELETE, &path, Some(&self.tech), None)
            .await
    }

    /// The terminal's WebSocket URL for `token`, read-only with `watch`.
    #[must_use]
    pub fn ws_url(&self, terminal: &str, token: &str, watch: bool) -> String {
        format!(
            "ws://{}/api/v1/tunnel/{}/terminals/{terminal}/ws?access_token={token}{}",
            self.server.addr,
            self.session,
            if watch { "&mode=watch" } else { "" }
        )
    }

    /// Attaches to a terminal.
    ///
    /// # Errors
    /// When the upgrade is refused or fails.
    pub async fn attach(
        &self,
        terminal: &str,
        token: &str,
        watch: bool,
    ) -> anyhow::Result<TermSocket> {
        TermSocket::connect(&self.ws_url(terminal, token, watch)).await
    }

    /// The HTTP status an attach is refused with (`None`: it was accepted).
    pub async fn attach_status(&self, terminal: &str, token: &str, watch: bool) -> Option<u16> {
        match tokio_tungstenite::connect_async(self.ws_url(terminal, token, watch)).await {
            Err(WsError::Http(response)) => Some(response.status().as_u16()),
            _ => None,
        }
    }

    /// Audit entries of `event` (as the admin, newest first).
    ///
    /// # Errors
    /// When the audit log cannot be read.
    pub async fn audit(&self, event: &str) -> anyhow::Result<Vec<Value>> {
        let (code, body) = self
            .server
            .call(
                Method::GET,
                "/api/v1/audit?limit=500",
                Some(&self.admin),
                None,
            )
            .await?;
        anyhow::ensure!(code == 200, "audit answered {code}: {body}");
        Ok(body["entries"]
            .as_array()
            .context("no entries")?
            .iter()
            .filter(|e| e["event"] == event)
            .cloned()
            .collect())
    }

    /// Waits (up to 10 s) for an audit entry of `event` whose detail contains every one of
    /// `needles`; its detail.
    ///
    /// # Errors
    /// When none appears in time.
    pub async fn wait_audit(&self, event: &str, needles: &[&str]) -> anyhow::Result<String> {
        let started = Instant::now();
        loop {
            let entries = self.audit(event).await?;
            let found = entries.iter().find_map(|e| {
                let detail = e["detail"].as_str().unwrap_or_default();
                needles
                    .iter()
                    .all(|n| detail.contains(n))
                    .then(|| detail.to_owned())
            });
            if let Some(detail) = found {
                return Ok(detail);
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("no {event} audit entry with {needles:?}: {entries:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A user's id, looked up by the admin.
    ///
    /// # Errors
    /// When the user is not listed.
    pub async fn user_id(&self, username: &str) -> anyhow::Result<String> {
        let (code, users) = self
            .server
            .call(Method::GET, "/api/v1/users", Some(&self.admin), None)
            .await?;
        anyhow::ensure!(code == 200, "users answered {code}: {users}");
        users
            .as_array()
            .context("no users array")?
            .iter()
            .find(|u| u["username"] == username)
            .and_then(|u| u["user_id"].as_str())
            .map(str::to_owned)
            .context("user not listed")
    }

    /// Creates a user with `role` over the API and logs them in; their token.
    ///
    /// # Errors
    /// When creation or login fails.
    pub async fn user_with_role(&self, username: &str, role: &str) -> anyhow::Result<String> {
        let password = format!("{username}-password");
        let (code, body) = self
            .server
            .call(
                Method::POST,
                "/api/v1/users",
                Some(&self.admin),
                Some(json!({"username": username, "password": password, "role": role})),
            )
            .await?;
        anyhow::ensure!(code == 201, "user add answered {code}: {body}");
        self.server.login(username, &password).await
    }
}

/// What a terminal socket delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Output(Vec<u8>),
    Text(Value),
    /// The close frame's code and reason (`None`: closed without one, or the stream ended).
    Closed(Option<(u16, String)>),
}

/// A client of one terminal's WebSocket. Everything output so far is kept in
/// [`TermSocket::output`].
#[derive(Debug)]
pub struct TermSocket {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Every output byte received.
    pub output: Vec<u8>,
    /// Where each binary frame ended in [`TermSocket::output`].
    pub frame_ends: Vec<usize>,
    /// Where the next [`TermSocket::read_until`] starts looking.
    mark: usize,
    /// The output position the server said the first output byte of this socket has (its
    /// `attached` frame, which comes first and is not reported as an event).
    pub attached_at: Option<u64>,
}

impl TermSocket {
    /// Connects to `url`.
    ///
    /// # Errors
    /// When the handshake fails or is refused.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let (socket, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Self {
            socket,
            output: Vec::new(),
            frame_ends: Vec::new(),
            mark: 0,
            attached_at: None,
        })
    }

    /// Sends input bytes (a binary frame).
    ///
    /// # Errors
    /// When the socket is gone.
    pub async fn input(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.socket.send(Message::binary(bytes.to_vec())).await?;
        Ok(())
    }

    /// Sends a resize (a text frame).
    ///
    /// # Errors
    /// When the socket is gone.
    pub async fn resize(&mut self, cols: u16, rows: u16) -> anyhow::Result<()> {
        let text = json!({"type": "resize", "cols": cols, "rows": rows}).to_string();
        self.socket.send(Message::text(text)).await?;
        Ok(())
    }

    /// The next event within `within` (`None`: nothing came). Output is also appended to
    /// [`TermSocket::output`].
    ///
    /// # Errors
    /// On a socket error or a text frame that is not JSON.
    pub async fn next(&mut self, within: Duration) -> anyhow::Result<Option<Event>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let Ok(frame) = tokio::time::timeout_at(deadline, self.socket.next()).await else {
                return Ok(None);
            };
            return Ok(Some(match frame {
                Some(Ok(Message::Binary(bytes))) => {
                    self.output.extend_from_slice(&bytes);
                    self.frame_ends.push(self.output.len());
                    Event::Output(bytes.to_vec())
                }
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text)?;
                    if value["type"] == "attached" {
                        self.attached_at = value["offset"].as_u64();
                        continue;
                    }
                    Event::Text(value)
                }
                Some(Ok(Message::Close(frame))) => {
                    Event::Closed(frame.map(|f| (u16::from(f.code), f.reason.to_string())))
                }
                Some(Ok(_)) => continue,
                None => Event::Closed(None),
                Some(Err(e)) => return Err(e.into()),
            }));
        }
    }

    /// Reads until the output since the last match contains `needle`; the output read up to
    /// and including it (from the previous mark).
    ///
    /// # Errors
    /// When it does not appear within `within`, or the socket ends first.
    pub async fn read_until(&mut self, needle: &str, within: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(at) = find(&self.output[self.mark..], needle.as_bytes()) {
                let end = self.mark + at + needle.len();
                let text = String::from_utf8_lossy(&self.output[self.mark..end]).into_owned();
                self.mark = end;
                return Ok(text);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await? {
                Some(Event::Output(_)) => {}
                Some(other) => bail!(
                    "waiting for {needle:?}, got {other:?}; output: {:?}",
                    self.text()
                ),
                None => bail!(
                    "no {needle:?} within {within:?}; output: {:?}",
                    String::from_utf8_lossy(&self.output[self.mark..])
                ),
            }
        }
    }

    /// Reads (collecting output) until the socket closes; the text frames seen and the close.
    ///
    /// # Errors
    /// When it does not close within `within`.
    pub async fn until_closed(
        &mut self,
        within: Duration,
    ) -> anyhow::Result<(Vec<Value>, Option<(u16, String)>)> {
        let deadline = Instant::now() + within;
        let mut texts = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await? {
                Some(Event::Output(_)) => {}
                Some(Event::Text(v)) => texts.push(v),
                Some(Event::Closed(close)) => return Ok((texts, close)),
                None => bail!(
                    "not closed within {within:?}; texts {texts:?}; output: {:?}",
                    self.text()
                ),
            }
        }
    }

    /// All output so far, lossily as text.
    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }

    /// Closes the socket (a clean close frame).
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Processes on this machine whose command line contains `marker` (arguments joined with
/// spaces); their ids.
#[must_use]
pub fn processes_with(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                let joined: Vec<u8> = cmdline
                    .iter()
                    .map(|b| if *b == 0 { b' ' } else { *b })
                    .collect();
                find(&joined, marker.as_bytes()).is_some()
            })
        })
        .collect()
}

/// Waits until no process has `marker` in its command line; how long it took.
///
/// # Errors
/// When some still run after `within`.
pub async fn wait_gone(marker: &str, within: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            bail!("processes with {marker:?} still run after {within:?}: {left:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A marker unique to this call, for `sleep <marker>` style commands: `1000.<digits>`.
#[must_use]
pub fn sleep_marker() -> String {
    let n = uuid::Uuid::new_v4().as_u128() % 1_000_000_000;
    format!("1000.{n:09}")
}
