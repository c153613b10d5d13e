//! Starting a command: the platform shell, stdin closed (a pipe with `stdin: true`), stdout
//! and stderr piped, its own process group.

use std::process::Stdio;

use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

use super::CommandSpec;
use super::kill::{Group, Kill};
use super::output::{error_frame, send};
use crate::Event;
use rmm_protocol::AgentMessage;

/// A started command: the shell, its process group and its output pipes.
#[derive(Debug)]
pub(super) struct Started {
    pub(super) child: Child,
    pub(super) group: Group,
    pub(super) stdout: ChildStdout,
    pub(super) stderr: ChildStderr,
    /// Only for a command started with `stdin: true`.
    pub(super) stdin: Option<ChildStdin>,
}

/// Spawns `spec`'s command. When it cannot start, its `tunnel_error` is queued and `None`
/// returned.
pub(super) async fn start(spec: &CommandSpec, out: &mpsc::Sender<Event>) -> Option<Started> {
    let channel = spec.channel.as_str();
    let mut child = match spawn(&spec.command, spec.stdin) {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!(channel_id = %channel, error = %e, "command could not be started");
            send(
                out,
                AgentMessage::TunnelError {
                    channel_id: channel.to_owned(),
                    // The reference's wording for this case.
                    error: format!("Failed to execute command: {e}"),
                },
            )
            .await;
            return None;
        }
    };
    let group = Group::of(&child);
    tracing::info!(channel_id = %channel, pid = ?child.id(), timeout_secs = ?spec.timeout.map(|t| t.as_secs()), "command started");
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        // Both were configured as pipes; spawn hands them out exactly once.
        group.signal(&mut child, Kill::Hard);
        send(
            out,
            error_frame(channel, "Failed to execute command: no output pipes"),
        )
        .await;
        return None;
    };
    let stdin = child.stdin.take();
    Some(Started {
        child,
        group,
        stdout,
        stderr,
        stdin,
    })
}

fn spawn(command: &str, stdin: bool) -> std::io::Result<Child> {
    let mut cmd = shell(command);
    cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A last resort for the shell itself should the task vanish; [`Group`] covers the rest.
        .kill_on_drop(true);
    cmd.spawn()
}

/// The program that runs the agent's `__supervise` subcommand (see [`super::supervise`]),
/// when commands are to be supervised: set once by the `rmm-agent` binary.
#[cfg(target_os = "linux")]
static SUPERVISOR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Starts every command under `program __supervise` (the agent binary itself, e.g.
/// `/proc/self/exe`, which works even after the binary was replaced on disk), so that a
/// command dies with an agent that is killed outright. Without it (an agent embedded in
/// another program, the unit tests) commands start directly.
#[cfg(target_os = "linux")]
pub fn supervise_commands_with(program: std::path::PathBuf) {
    let _ = SUPERVISOR.set(program);
}

#[cfg(unix)]
fn shell(command: &str) -> Command {
    #[cfg(target_os = "linux")]
    let mut cmd = match SUPERVISOR.get() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.arg(super::supervise::SUBCOMMAND)
                .arg(std::process::id().to_string())
                .arg("/bin/sh");
            cmd
        }
        None => Command::new("/bin/sh"),
    };
    // An absolute path: a service's PATH may be minimal or hostile.
    #[cfg(not(target_os = "linux"))]
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(command);
    // Its own process group (the supervisor's, when there is one, which the shell shares):
    // one killpg reaches everything the command starts, and signals
    // aimed at the agent's own group (a Ctrl-C in its terminal) do not reach the command.
    cmd.process_group(0);
    cmd
}

#[cfg(not(unix))]
fn shell(command: &str) -> Command {
    let mut cmd = Command::new("cmd");
    // cmd.exe parses its own command line; the C-runtime quoting of `arg` would mangle it.
    cmd.arg("/C").raw_arg(command);
    cmd
}
