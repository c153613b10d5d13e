//! `rmm exec AGENT -- COMMAND...`: runs one command and makes it feel local. Its stdout and
//! stderr are written to ours byte for byte as they arrive, and `rmm` exits with its exit
//! code (124 timed out, 130 cancelled, 255 failed: the agent went away, or the server shut
//! down and closed the session).
//!
//! The order matters: the session's stream WebSocket is connected first, then the command is
//! posted, so not one frame of it can be missed; frames of other channels are ignored.
//!
//! The rule for output is **stream first, reconcile with stored output by byte count**. Bytes
//! are written from the stream's frames as they arrive, counted per stream. Alongside, a long
//! poll (`GET .../commands/{id}?wait=`) learns of the end even when no final frame comes (the
//! server itself ends commands that outlive their timeout or whose agent cannot cancel). When
//! the command has ended, or the stream has dropped, the raw stored output
//! (`.../stdout`, `.../stderr`) is read and only the bytes past those already written are
//! written: the stored bytes are a prefix of the streamed ones, so nothing is lost or doubled.
//! The only loss possible is past the server's storage cap after a dropped stream, and it is
//! reported on stderr.
//!
//! Ctrl-C cancels the remote command (`DELETE .../commands/{id}`), waits for its end and exits
//! 130; a second Ctrl-C stops waiting.
//!
//! An end nobody here asked for (the command cancelled without a Ctrl-C, the server no longer
//! answering) is explained by asking the session's status: when the server shut down, it
//! closed the session itself (`server_shutdown`), so rmm says so in one line, exits 255 and
//! does not ask for a close that neither can nor need happen.
//!
//! Standard input, like ssh's: when ours is not a terminal and `-n` is not given, the command
//! is started with a stdin pipe (`"stdin": true`) and ours is streamed to it
//! (`PUT .../commands/{id}/stdin`) while its output is followed; its end is the command's EOF.
//! On a terminal, with `-n`, or when ours is /dev/null or closed, the command's stdin stays
//! closed (/dev/null). An agent too old for stdin runs the command with it closed, and rmm
//! says so.
//!
//! Following the command is [`follow`]'s; writing its output here, [`output`]'s.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Args;
use rmm_client::{AgentDto, ApiClient, ClientError, CommandStartedResponse, StdinWritten};
use rmm_domain::{CommandText, SessionId};
use tokio::task::JoinHandle;

use super::CliError;
use super::commands::resolve_agent;
use super::config::{ConfigDir, Remembered};
use super::input::Input;
use super::session::{Interrupts, Lease};
use crate::muxwire::{MuxRequest, WarmStreams};

mod follow;
mod output;

use follow::Follow;
use output::LocalOutput;
pub(crate) use output::Sink;

/// `timeout(1)`'s code for a command killed at its timeout.
const EXIT_TIMED_OUT: u8 = 124;
/// 128 + SIGINT, as a shell reports a command stopped by Ctrl-C.
const EXIT_CANCELLED: u8 = 130;
/// ssh's code when the remote side failed rather than the command.
const EXIT_FAILED: u8 = 255;

/// `rmm exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The agent: its id or name.
    pub agent: String,
    /// Kill the remote command after SECS seconds (exit code 124); default: the server's.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: Option<u64>,
    /// Keep the session open afterwards when exec opened it (the next exec reuses it).
    #[arg(long)]
    pub keep: bool,
    /// Keep the remote command's standard input closed (/dev/null). Without it, rmm's own
    /// standard input is forwarded when it is not a terminal (`echo hi | rmm exec web-01 -- cat`).
    #[arg(short = 'n', long = "no-stdin")]
    pub no_stdin: bool,
    /// Run directly, not through the exec mux (also RMM_MUX=off). See `rmm exec --help`.
    #[arg(long)]
    pub no_mux: bool,
    /// The command and its arguments (after `--`), joined with spaces for the remote shell.
    #[arg(
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// How the remote command ended, as far as the exit code is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    Exited(i32),
    TimedOut {
        secs: u64,
    },
    Cancelled,
    Failed {
        reason: String,
    },
    /// Interrupted before the command was sent: nothing ran.
    NotStarted,
    /// The server shut down and closed the session; `stopped` when the command is known to
    /// have been stopped with it.
    ServerShutdown {
        stopped: bool,
    },
}

/// `rmm exec`: the exit code to leave with.
///
/// # Errors
/// Usage (empty command, unknown agent), client and config errors; those leave with 1.
pub async fn exec(
    client: &ApiClient,
    dir: &ConfigDir,
    args: ExecArgs,
) -> Result<ExitCode, CliError> {
    let request = request_of(&args)?;
    // Listening from here on: Ctrl-C must never kill rmm between opening a session and
    // cancelling what runs in it.
    let mut interrupts = Interrupts::listen()?;
    let spec = Spec {
        command: &request.command,
        timeout_secs: request.timeout_secs,
        stdin: !args.no_stdin && stdin_has_input(),
    };
    let job = Job {
        input: &request.agent,
        keep: request.keep,
        spec: &spec,
        sink: &Sink::Local,
        warm: None,
    };
    let ending = run_job(client, dir, &job, &mut interrupts).await?;
    Ok(report(&ending))
}

/// What the mux is asked to run, from the command line; checked here so a bad one is said
/// before any mux is involved.
///
/// # Errors
/// [`CliError::Usage`] for an empty command.
pub(crate) fn request_of(args: &ExecArgs) -> Result<MuxRequest, CliError> {
    let text = CommandText::parse(&args.command.join(" "))
        .map_err(|e| CliError::Usage(format!("{e}: pass the command after `--`")))?;
    Ok(MuxRequest {
        agent: args.agent.clone(),
        command: text.as_str().to_owned(),
        timeout_secs: args.timeout,
        keep: args.keep,
    })
}

/// One exec, as the CLI runs it directly or the mux runs it for an `rmm exec`.
pub(crate) struct Job<'a> {
    /// The agent as the user named it.
    pub input: &'a str,
    pub keep: bool,
    pub spec: &'a Spec<'a>,
    pub sink: &'a Sink,
    /// The mux's warm session streams.
    pub warm: Option<&'a WarmStreams>,
}

/// Runs `job`: the agent as resolved lately (cached) and the remembered session, trusted
/// without asking the server; when either turns out stale before the command was sent, it
/// is forgotten and the lookups are made as before (`GET /api/v1/agents`, the session's
/// status), once.
///
/// # Errors
/// Usage, client and config errors.
pub(crate) async fn run_job(
    client: &ApiClient,
    dir: &ConfigDir,
    job: &Job<'_>,
    interrupts: &mut Interrupts,
) -> Result<Ending, CliError> {
    let server = client.server();
    if let Some(agent) = dir.cached_agent(server, job.input) {
        match attempt(client, dir, &agent, true, job, interrupts).await? {
            Some(ending) => return Ok(ending),
            None => dir.cache_agent(server, job.input, None),
        }
    }
    let agent = tokio::select! {
        agent = resolve_agent(client, job.input) => agent?,
        () = interrupts.recv() => return Ok(Ending::NotStarted),
    };
    dir.cache_agent(server, job.input, Some(&agent));
    match attempt(client, dir, &agent, false, job, interrupts).await? {
        Some(ending) => Ok(ending),
        // The remembered session was gone: forgotten; now open one (or find it) as before.
        None => match attempt(client, dir, &agent, false, job, interrupts).await? {
            Some(ending) => Ok(ending),
            None => Err(CliError::Local(
                "the session to the agent closed as the command was sent; run it again".into(),
            )),
        },
    }
}

/// One try: `None` when what was trusted (the cached agent, the remembered session) turned
/// out stale before the command was sent; it is then forgotten.
async fn attempt(
    client: &ApiClient,
    dir: &ConfigDir,
    agent: &AgentDto,
    agent_cached: bool,
    job: &Job<'_>,
    interrupts: &mut Interrupts,
) -> Result<Option<Ending>, CliError> {
    let remembered = dir
        .sessions()?
        .for_agent(client.server(), agent.id())
        .map(Remembered::session);
    let lease = match remembered {
        Some(session) => Lease::remembered(session),
        None => match Lease::acquire(client, dir, agent, job.keep, interrupts).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return Ok(Some(Ending::NotStarted)),
            Err(CliError::Client(e)) if agent_cached && stale(&e) => return Ok(None),
            Err(e) => return Err(e),
        },
    };
    match run(client, &lease, job, interrupts).await {
        Outcome::NotRun(CliError::Client(e))
            if (remembered.is_some() || agent_cached) && stale(&e) =>
        {
            if let Some(session) = remembered {
                forget_session(client, dir, session, job.warm)?;
            }
            lease.release(client).await;
            Ok(None)
        }
        Outcome::NotRun(e) => {
            lease.release(client).await;
            Err(e)
        }
        Outcome::Ran(result) => {
            // The server closed the session itself as it shut down: nothing is left to
            // close, and nobody to ask.
            if !matches!(result, Ok(Ending::ServerShutdown { .. })) {
                lease.release(client).await;
            }
            result.map(Some)
        }
    }
}

/// An answer that says what was trusted is gone (not a transport failure or a login's).
fn stale(e: &ClientError) -> bool {
    !matches!(
        e,
        ClientError::Unreachable { .. }
            | ClientError::TimedOut { .. }
            | ClientError::TokenExpired
            | ClientError::TokenRejected(_)
            | ClientError::NotLoggedIn
            | ClientError::StdinUnsupported { .. }
    )
}

fn forget_session(
    client: &ApiClient,
    dir: &ConfigDir,
    session: SessionId,
    warm: Option<&WarmStreams>,
) -> Result<(), CliError> {
    if let Some(warm) = warm {
        warm.forget(session);
    }
    let mut sessions = dir.sessions()?;
    if sessions.forget(client.server(), session) {
        dir.save_sessions(&sessions)?;
    }
    Ok(())
}

/// Says how the command ended (except for a plain exit) and picks the exit code.
fn report(ending: &Ending) -> ExitCode {
    let (code, message) = describe(ending);
    if let Some(message) = message {
        Sink::Local.note(&message);
    }
    ExitCode::from(code)
}

/// The exit code of `ending`, and the line that explains it (except for a plain exit).
pub(crate) fn describe(ending: &Ending) -> (u8, Option<String>) {
    match ending {
        Ending::Exited(code) => (exit_code(*code), None),
        Ending::TimedOut { secs } => (
            EXIT_TIMED_OUT,
            Some(format!(
                "the remote command timed out after {secs} s and was killed; raise --timeout to give it longer"
            )),
        ),
        Ending::Cancelled => (
            EXIT_CANCELLED,
            Some("the remote command was cancelled".to_owned()),
        ),
        Ending::Failed { reason } => (
            EXIT_FAILED,
            Some(format!("the remote command failed: {reason}")),
        ),
        Ending::NotStarted => (
            EXIT_CANCELLED,
            Some("interrupted before the command was sent; nothing ran".to_owned()),
        ),
        Ending::ServerShutdown { stopped } => (
            EXIT_FAILED,
            Some(format!(
                "the server shut down and closed the session; {}",
                if *stopped {
                    "the remote command was stopped with it"
                } else {
                    "the command's end is unknown"
                }
            )),
        ),
    }
}

/// A remote exit code as a local one: 0..=255 as is; others (Windows) by their low byte,
/// never turning a failure into 0.
pub(crate) fn exit_code(code: i32) -> u8 {
    match u8::try_from(code) {
        Ok(code) => code,
        Err(_) => u8::try_from(code.rem_euclid(256))
            .ok()
            .filter(|low| *low != 0)
            .unwrap_or(1),
    }
}

/// What to run.
pub(crate) struct Spec<'a> {
    pub command: &'a str,
    pub timeout_secs: Option<u64>,
    /// Forward our standard input.
    pub stdin: bool,
}

/// How a try went: the command ran (to this end), or failed before it was sent.
enum Outcome {
    Ran(Result<Ending, CliError>),
    NotRun(CliError),
}

async fn run(
    client: &ApiClient,
    lease: &Lease,
    job: &Job<'_>,
    interrupts: &mut Interrupts,
) -> Outcome {
    let session = lease.session();
    let warm_stream = match job.warm {
        Some(warm) => warm.take(session).await,
        None => None,
    };
    let stream = match warm_stream {
        Some(stream) => stream,
        None => match client.binary_stream(session).await {
            Ok(stream) => stream,
            Err(e) => return Outcome::NotRun(e.into()),
        },
    };
    if interrupts.pending().await {
        stream.close().await;
        return Outcome::Ran(Ok(Ending::NotStarted));
    }
    let (started, feeding) = match start(client, session, job.spec, job.sink).await {
        Ok(started) => started,
        Err(e) => {
            stream.close().await;
            return Outcome::NotRun(e);
        }
    };
    let out = LocalOutput::new(job.sink.clone());
    let mut run = Follow::new(client.clone(), session, &started, stream, out);
    let ending = run.follow(interrupts).await;
    match job.warm {
        // The session stays open: keep its stream warm for the next command.
        Some(warm) if ending.is_ok() && !lease.closes_after() => {
            if let Some(stream) = run.take_stream() {
                warm.put(session, stream);
            }
        }
        Some(_) | None => run.close_stream().await,
    }
    if let Some(feeding) = feeding {
        stdin_outcome(feeding, job.sink).await;
    }
    Outcome::Ran(run.explain(ending).await)
}

/// Starts the command and, when it takes our standard input, the task that streams it.
async fn start(
    client: &ApiClient,
    session: SessionId,
    spec: &Spec<'_>,
    sink: &Sink,
) -> Result<
    (
        CommandStartedResponse,
        Option<JoinHandle<Result<StdinWritten, ClientError>>>,
    ),
    CliError,
> {
    let started = match client
        .run_command(session, spec.command, spec.timeout_secs, spec.stdin)
        .await
    {
        Err(e @ ClientError::StdinUnsupported { .. }) if spec.stdin => {
            sink.note(&format!(
                "{e}; running the command with its standard input closed"
            ));
            return Ok((
                client
                    .run_command(session, spec.command, spec.timeout_secs, false)
                    .await?,
                None,
            ));
        }
        started => started?,
    };
    if !spec.stdin {
        return Ok((started, None));
    }
    let (client, command) = (client.clone(), started.id());
    let feeding = tokio::spawn(async move {
        client
            .command_stdin(session, command, Input::spawn().into_stream())
            .await
    });
    Ok((started, Some(feeding)))
}

/// Once the command has ended: input it did not read is dropped (a closed pipe, as with
/// ssh); a delivery that failed for another reason is said on stderr.
async fn stdin_outcome(feeding: JoinHandle<Result<StdinWritten, ClientError>>, sink: &Sink) {
    if !feeding.is_finished() {
        feeding.abort();
        return;
    }
    match feeding.await {
        Ok(Ok(_)) | Err(_) => {}
        // The command ended (or its stdin was closed) before all of it was read.
        Ok(Err(
            ClientError::SessionNotUsable { .. }
            | ClientError::Conflict(_)
            | ClientError::Unreachable { .. },
        )) => {}
        Ok(Err(e)) => sink.note(&format!("standard input was not fully delivered: {e}")),
    }
}

/// Whether our stdin may carry input to forward: not a terminal (typed input is not
/// forwarded, like ssh without `-t`), and neither `/dev/null` nor closed (a job started with
/// no stdin, such as a CI runner or `rmm exec ... < /dev/null`, has nothing to send, so the
/// command's stdin stays closed and no agent is asked for the stdin extension).
pub(crate) fn stdin_has_input() -> bool {
    if std::io::stdin().is_terminal() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
        let Ok(ours) = std::fs::metadata("/dev/stdin") else {
            return false;
        };
        let null = std::fs::metadata("/dev/null").ok();
        let is_null = ours.file_type().is_char_device()
            && null.is_some_and(|null| null.rdev() == ours.rdev());
        !is_null
    }
    #[cfg(not(unix))]
    {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_exit_codes_map_to_local_ones_without_hiding_failures() {
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(3), 3);
        assert_eq!(exit_code(137), 137);
        assert_eq!(exit_code(255), 255);
        assert_eq!(exit_code(256), 1);
        assert_eq!(exit_code(257), 1);
        assert_eq!(exit_code(-1), 255);
        assert_eq!(exit_code(-1_073_741_510), 58);
    }
}
