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

/// A command supervisor started ahead of its command, waiting for its order on stdin (see
/// [`super::supervise`]): the agent keeps one while a tunnel is open, so a command costs no
/// process start of the agent's own. Dropping it kills it (its stdin closes too: it ends).
#[derive(Debug)]
pub(crate) struct Spare {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: ChildStderr,
}

impl Spare {
    /// Starts a spare when commands are supervised (Linux, the `rmm-agent` binary); `None`
    /// otherwise, or when it cannot start (the command then starts the usual way).
    pub(super) fn start() -> Option<Self> {
        #[cfg(target_os = "linux")]
        {
            let program = SUPERVISOR.get()?;
            let mut cmd = Command::new(program);
            cmd.arg(super::supervise::SUBCOMMAND)
                .arg(std::process::id().to_string())
                .arg(super::supervise::SPARE)
                .args(["/bin/sh", "-c"])
                .process_group(0)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let mut child = cmd
                .spawn()
                .inspect_err(|e| tracing::debug!(error = %e, "no spare command supervisor"))
                .ok()?;
            let (Some(stdin), Some(stdout), Some(stderr)) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take())
            else {
                return None;
            };
            Some(Self {
                child,
                stdin,
                stdout,
                stderr,
            })
        }
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// Hands `spec`'s command to this spare. `None` when the spare is gone or refuses it
    /// (then it is killed, and the command starts the usual way).
    #[cfg(target_os = "linux")]
    async fn hand_over(mut self, spec: &CommandSpec) -> Option<Started> {
        use tokio::io::AsyncWriteExt as _;
        let order = super::supervise::order(&spec.command, spec.stdin)?;
        if !matches!(self.child.try_wait(), Ok(None)) {
            return None;
        }
        self.stdin.write_all(&order).await.ok()?;
        let group = Group::of(&self.child);
        Some(Started {
            child: self.child,
            group,
            stdout: self.stdout,
            stderr: self.stderr,
            // Closed at once without `stdin: true`: the command itself has /dev/null.
            stdin: spec.stdin.then_some(self.stdin),
        })
    }

    /// Never made off Linux ([`Self::start`]).
    #[cfg(not(target_os = "linux"))]
    #[allow(clippy::unused_async)]
    async fn hand_over(self, _spec: &CommandSpec) -> Option<Started> {
        None
    }
}

/// Starts `spec`'s command: on `spare` when there is one that takes it, else spawned. When it
/// cannot start, its `tunnel_error` is queued and `None` returned.
pub(super) async fn start(
    spec: &CommandSpec,
    out: &mpsc::Sender<Event>,
    spare: Option<Spare>,
) -> Option<Started> {
    let channel = spec.channel.as_str();
    if let Some(spare) = spare
        && let Some(started) = spare.hand_over(spec).await
    {
        tracing::info!(channel_id = %channel, pid = ?started.child.id(), timeout_secs = ?spec.timeout.map(|t| t.as_secs()), "command started (on a spare supervisor)");
        return Some(started);
    }
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
