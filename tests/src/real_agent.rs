//! Runs the real `rmm-agent` binary against a test server.

use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::server::{TestServer, binary};

/// Starts `rmm-agent` with `key`, pointed at `server`, heartbeating every second; killed when
/// the returned child is dropped.
///
/// # Errors
/// When the binary is missing or cannot start.
pub fn spawn_agent(server: &TestServer, key: &str) -> anyhow::Result<Child> {
    let child = Command::new(binary("rmm-agent")?)
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
        .kill_on_drop(true)
        .spawn()?;
    Ok(child)
}
