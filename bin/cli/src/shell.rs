//! `rmm shell AGENT [-- COMMAND...]`: an interactive terminal on the agent, as with ssh.
//!
//! Reuses the caller's open session to the agent, else opens one for the shell (closed
//! after it unless `--keep`). Opens a terminal (`POST .../terminals` with our window size and
//! `$TERM`) running the agent user's login shell or COMMAND, attaches its WebSocket, and puts
//! our terminal in raw mode (when stdin is one; piped input is just sent). Keys go to the
//! remote side byte for byte (Ctrl-C included); `~.` at the start of a line disconnects and
//! `~~` sends one `~`, as with ssh. The window size follows SIGWINCH. A lost connection is
//! reattached by itself ([`attached`]).
//!
//! Exit codes: the remote process's exit code, 128 + the signal that killed it; 255 when
//! disconnected with `~.`, when the terminal was closed from elsewhere, or when the connection
//! could not be reattached; 128 + the signal when rmm itself is stopped (SIGTERM, SIGHUP,
//! SIGINT), which closes the terminal; 1 for other errors.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use rmm_client::{ApiClient, TerminalExit, TerminalSpec};
use rmm_domain::{CommandText, DEFAULT_TERM, SessionId, TermName};
use uuid::Uuid;

use super::CliError;
use super::commands::resolve_agent;
use super::config::ConfigDir;
use super::exec::exit_code;
use super::input::Input;
use super::session::{Interrupts, Lease};

mod attached;
mod escape;
mod tty;

use attached::{Attached, Signals};

/// ssh's code when the connection, rather than the remote command, ended the session.
const EXIT_DISCONNECTED: u8 = 255;
/// How long closing the terminal may take (the agent hangs up, then terminates, then kills).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// `rmm shell`.
#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The agent: its id or name.
    pub agent: String,
    /// Keep the session open afterwards when the shell opened it.
    #[arg(long)]
    pub keep: bool,
    /// Run this instead of the login shell (after `--`; joined with spaces for `sh -c`).
    #[arg(
        num_args = 0..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// How a shell ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The remote process ended.
    Exited(TerminalExit),
    /// `~.`
    Detached,
    /// The server closed the terminal's socket on purpose (closed elsewhere, token revoked,
    /// attached elsewhere).
    Closed { code: u16, reason: String },
    /// rmm was asked to stop.
    Signalled(i32),
    /// The connection was lost and could not be reattached.
    Lost(String),
}

/// `rmm shell`: the exit code to leave with.
///
/// # Errors
/// Usage, client and config errors; those leave with 1.
pub async fn shell(
    client: &ApiClient,
    dir: &ConfigDir,
    args: ShellArgs,
) -> Result<ExitCode, CliError> {
    let command = if args.command.is_empty() {
        None
    } else {
        let text = CommandText::parse(&args.command.join(" "))
            .map_err(|e| CliError::Usage(format!("{e}: pass the command after `--`")))?;
        Some(text.as_str().to_owned())
    };
    let mut interrupts = Interrupts::listen()?;
    let interrupted = || ExitCode::from(exit_status(&Outcome::Signalled(attached::SIGINT)));
    let agent = tokio::select! {
        agent = resolve_agent(client, &args.agent) => agent?,
        () = interrupts.recv() => return Ok(interrupted()),
    };
    let Some(lease) = Lease::acquire(client, dir, &agent, args.keep, &mut interrupts).await? else {
        return Ok(interrupted());
    };
    let (cols, rows) = tty::size();
    let spec = TerminalSpec {
        cols,
        rows,
        term: term_name(std::env::var("TERM").ok().as_deref()),
        command,
    };
    let result = match client.open_terminal(lease.session(), &spec).await {
        Ok(opened) => {
            use_terminal(client, lease.session(), opened.terminal_id, &mut interrupts).await
        }
        Err(e) => Err(e.naming_agent(&agent.name).into()),
    };
    lease.release(client).await;
    let outcome = result?;
    if let Some(message) = explain(&outcome) {
        // The remote side may have left the cursor mid-line.
        let fresh_line = if std::io::stdin().is_terminal() {
            "\n"
        } else {
            ""
        };
        let _ = writeln!(std::io::stderr(), "{fresh_line}rmm: {message}");
    }
    Ok(ExitCode::from(exit_status(&outcome)))
}

/// Attaches to the opened terminal and runs it; closes it when rmm leaves it running.
async fn use_terminal(
    client: &ApiClient,
    session: SessionId,
    terminal: Uuid,
    interrupts: &mut Interrupts,
) -> Result<Outcome, CliError> {
    let result = attach_and_run(client, session, terminal, interrupts).await;
    let leaves_it_running = !matches!(
        result,
        Ok(Outcome::Exited(_) | Outcome::Closed { .. } | Outcome::Lost(_))
    );
    if leaves_it_running {
        let _ = tokio::time::timeout(CLOSE_WAIT, client.close_terminal(session, terminal)).await;
    }
    result
}

async fn attach_and_run(
    client: &ApiClient,
    session: SessionId,
    terminal: Uuid,
    interrupts: &mut Interrupts,
) -> Result<Outcome, CliError> {
    let socket = client.attach_terminal(session, terminal, None).await?;
    let interactive = std::io::stdin().is_terminal();
    let signals = Signals::listen()?;
    // Restored when dropped: after the shell, on every error and on a panic alike.
    let _raw =
        if interactive {
            Some(tty::RawMode::enter().map_err(|e| {
                CliError::Local(format!("cannot put the terminal in raw mode: {e}"))
            })?)
        } else {
            None
        };
    Attached {
        client,
        session,
        terminal,
        input: Input::spawn(),
        input_open: true,
        escape: interactive.then(escape::Escape::default),
        signals,
        interrupts,
        held: Vec::new(),
    }
    .run(socket)
    .await
}

/// `$TERM` when it is a valid terminal name, else xterm-256color.
fn term_name(env: Option<&str>) -> String {
    env.and_then(|value| TermName::parse(value).ok())
        .map_or_else(|| DEFAULT_TERM.to_owned(), |name| name.as_str().to_owned())
}

/// The exit code for how the shell ended.
pub(crate) fn exit_status(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Exited(exit) => match (exit.exit_code, exit.signal) {
            (_, Some(signal)) => by_signal(signal),
            (Some(code), None) => exit_code(code),
            (None, None) => EXIT_DISCONNECTED,
        },
        Outcome::Signalled(signal) => by_signal(*signal),
        Outcome::Detached | Outcome::Closed { .. } | Outcome::Lost(_) => EXIT_DISCONNECTED,
    }
}

/// 128 + the signal, as a shell reports it; 255 for a number that does not fit.
fn by_signal(signal: i32) -> u8 {
    u8::try_from(signal)
        .ok()
        .filter(|s| (1..=126).contains(s))
        .map_or(EXIT_DISCONNECTED, |s| 128 + s)
}

/// What to say about an ending other than the remote process's own exit.
fn explain(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Exited(TerminalExit {
            exit_code: None,
            signal: None,
        }) => Some("the terminal ended without an exit status".to_owned()),
        Outcome::Exited(_) => None,
        Outcome::Detached => Some("disconnected (~.); the terminal was closed".to_owned()),
        Outcome::Closed { code: 4000, .. } => {
            Some("the terminal was attached from elsewhere; detached here".to_owned())
        }
        Outcome::Closed { reason, .. } if reason.is_empty() => {
            Some("the server closed the terminal".to_owned())
        }
        Outcome::Closed { reason, .. } => Some(format!("the server closed the terminal: {reason}")),
        Outcome::Signalled(signal) => Some(format!(
            "stopped by signal {signal}; the terminal was closed"
        )),
        Outcome::Lost(why) => Some(format!("the connection to the terminal was lost: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(exit_code: Option<i32>, signal: Option<i32>) -> Outcome {
        Outcome::Exited(TerminalExit { exit_code, signal })
    }

    #[test]
    fn exit_codes_follow_the_remote_process_or_say_how_the_shell_ended() {
        assert_eq!(exit_status(&exited(Some(0), None)), 0);
        assert_eq!(exit_status(&exited(Some(3), None)), 3);
        // Killed by a signal: 128 + it, as a shell says.
        assert_eq!(exit_status(&exited(None, Some(9))), 137);
        assert_eq!(exit_status(&exited(Some(0), Some(15))), 143);
        assert_eq!(exit_status(&exited(None, Some(400))), 255);
        assert_eq!(exit_status(&exited(None, None)), 255);
        assert_eq!(exit_status(&exited(Some(256), None)), 1);
        assert_eq!(exit_status(&Outcome::Detached), 255);
        assert_eq!(exit_status(&Outcome::Lost("x".into())), 255);
        assert_eq!(
            exit_status(&Outcome::Closed {
                code: 1000,
                reason: "terminal closed".into()
            }),
            255
        );
        assert_eq!(exit_status(&Outcome::Signalled(1)), 129);
        assert_eq!(exit_status(&Outcome::Signalled(attached::SIGINT)), 130);
    }

    #[test]
    fn term_comes_from_the_environment_when_valid() {
        assert_eq!(term_name(Some("screen-256color")), "screen-256color");
        assert_eq!(term_name(None), "xterm-256color");
        assert_eq!(term_name(Some("")), "xterm-256color");
        assert_eq!(term_name(Some("x; rm -rf /")), "xterm-256color");
    }
}
