//! The tunnel API calls the fault-injection tests make again and again (open a session, run a
//! command and wait for its end), with their answers checked, over a [`TestServer`].

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use reqwest::Method;
use serde_json::{Value, json};

use crate::server::TestServer;

/// Opens a tunnel to `agent_id` as `token`; the session id.
///
/// # Errors
/// When the open is not answered 200 with a session id.
pub async fn open_session(
    server: &TestServer,
    token: &str,
    agent_id: &str,
) -> anyhow::Result<String> {
    let body = json!({ "agent_id": agent_id });
    let (code, opened) = server
        .call(Method::POST, "/api/v1/tunnel/open", Some(token), Some(body))
        .await?;
    ensure!(code == 200, "open answered {code}: {opened}");
    opened["session_id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("open without session_id: {opened}"))
}

/// Starts `command` in `session`; the status and answer (202 with `command_id` when started).
///
/// # Errors
/// On transport failure.
pub async fn start_command(
    server: &TestServer,
    token: &str,
    session: &str,
    command: &str,
) -> anyhow::Result<(u16, Value)> {
    server
        .call(
            Method::POST,
            &format!("/api/v1/tunnel/{session}/command"),
            Some(token),
            Some(json!({ "command": command })),
        )
        .await
}

/// The command's record once it has ended (`GET ...?wait=`), waiting at most `within`.
///
/// # Errors
/// When it is not readable or still running after `within`.
pub async fn wait_command_end(
    server: &TestServer,
    token: &str,
    session: &str,
    command_id: &str,
    within: Duration,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    loop {
        let left = within.saturating_sub(started.elapsed()).as_secs().max(1);
        let path = format!("/api/v1/tunnel/{session}/commands/{command_id}?wait={left}");
        let (code, body) = server.call(Method::GET, &path, Some(token), None).await?;
        if code == 200 && body["status"] != "running" {
            return Ok(body);
        }
        if started.elapsed() >= within {
            bail!("command {command_id} not ended within {within:?}: {code} {body}");
        }
        // A 503 (database away) answers at once: do not spin on it.
        if code != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Runs `command` in `session` and waits (at most `within`) for its end; its record.
///
/// # Errors
/// When it is not started (202) or does not end in time.
pub async fn run_command(
    server: &TestServer,
    token: &str,
    session: &str,
    command: &str,
    within: Duration,
) -> anyhow::Result<Value> {
    let (code, started) = start_command(server, token, session, command).await?;
    ensure!(code == 202, "{command:?} answered {code}: {started}");
    let id = started["command_id"]
        .as_str()
        .with_context(|| format!("no command_id: {started}"))?;
    wait_command_end(server, token, session, id, within).await
}

/// The session's status record (`GET /api/v1/tunnel/status/{session}`) once `done` holds for
/// it, polled every 20 ms for at most `within`.
///
/// # Errors
/// When `done` does not hold within `within`.
pub async fn wait_session(
    server: &TestServer,
    token: &str,
    session: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    let path = format!("/api/v1/tunnel/status/{session}");
    loop {
        let (code, status) = server.call(Method::GET, &path, Some(token), None).await?;
        if code == 200 && done(&status) {
            return Ok(status);
        }
        if started.elapsed() >= within {
            bail!("session {session} not as awaited within {within:?}: {code} {status}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
