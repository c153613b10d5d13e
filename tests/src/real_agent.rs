//! Runs the real `rmm-agent` binary against a test server.

use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::server::{TestServer, binary};

/// `rmm-agent` with `args`, configured through its environment as an MSP would run it:
/// pointed at `server` with `key`, heartbeating every second, killed when dropped.
///
/// # Errors
/// When the binary is missing (`cargo build --bins` first).
pub fn agent_command(server: &TestServer, key: &str, args: &[&str]) -> anyhow::Result<Command> {
    agent_command_to(&format!("ws://{}", server.addr), key, args)
}

/// As [`agent_command`], pointed at `url` (a load balancer, say).
///
/// # Errors
/// When the binary is missing (`cargo build --bins` first).
pub fn agent_command_to(url: &str, key: &str, args: &[&str]) -> anyhow::Result<Command> {
    let mut cmd = Command::new(binary("rmm-agent")?);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RMM_SERVER", url)
        .env("RMM_AGENT_KEY", key)
        .env("RMM_AGENT_HEARTBEAT_SECS", "1")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    Ok(cmd)
}

/// Starts `rmm-agent` with `key` (see [`agent_command`]).
///
/// # Errors
/// When the binary is missing or cannot start.
pub fn spawn_agent(server: &TestServer, key: &str) -> anyhow::Result<Child> {
    Ok(agent_command(server, key, &[])?.spawn()?)
}

/// A real server (fresh PostgreSQL database) with a real agent connected, and a technician's
/// tunnel open to it.
#[derive(Debug)]
pub struct Tunnel {
    pub server: TestServer,
    pub admin: String,
    pub tech: String,
    pub session: String,
    /// The agent process, killed when dropped.
    pub agent: Child,
}

impl Tunnel {
    /// Sends `body` (`{"command", ...}`) as a command of the session, as the technician; the
    /// command's id once the server answered 202.
    ///
    /// # Errors
    /// On transport failure or any other answer (named with its body).
    pub async fn start_command(&self, body: serde_json::Value) -> anyhow::Result<String> {
        let (code, started) = self
            .server
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/tunnel/{}/command", self.session),
                Some(&self.tech),
                Some(body),
            )
            .await?;
        anyhow::ensure!(code == 202, "command answered {code}: {started}");
        started["command_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("202 without command_id: {started}"))
    }
}

/// Starts everything a test of commands or files through a tunnel needs.
///
/// # Errors
/// When any step fails (database, server, agent, login, open).
pub async fn open_tunnel() -> anyhow::Result<Tunnel> {
    let db = crate::pg::fresh_database().await?;
    open_tunnel_on(TestServer::start(&db, &[]).await?).await
}

/// As [`open_tunnel`], on a server the caller started.
///
/// # Errors
/// When any step fails (agent, login, open).
pub async fn open_tunnel_on(server: TestServer) -> anyhow::Result<Tunnel> {
    let admin = server.admin_token().await?;
    let (agent_id, key) = server.register_agent(&admin, "web-01").await?;
    let agent = spawn_agent(&server, &key)?;
    server.wait_connected(&admin, &agent_id).await?;
    let tech = server.tech_token("tina").await?;
    let body = serde_json::json!({ "agent_id": agent_id });
    let (code, opened) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/tunnel/open",
            Some(&tech),
            Some(body),
        )
        .await?;
    anyhow::ensure!(code == 200, "open answered {code}: {opened}");
    let session = opened["session_id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("open without session_id: {opened}"))?
        .to_owned();
    Ok(Tunnel {
        server,
        admin,
        tech,
        session,
        agent,
    })
}
