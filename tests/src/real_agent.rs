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
    let mut cmd = Command::new(binary("rmm-agent")?);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RMM_SERVER", format!("ws://{}", server.addr))
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
