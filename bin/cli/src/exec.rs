//! `rmm exec AGENT -- COMMAND...`: runs one command and makes it feel local. Its stdout and
//! stderr are written to ours byte for byte as they arrive, and `rmm` exits with its exit
//! code (124 timed out, 130 cancelled, 255 failed).
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

use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use rmm_client::{
    ApiClient, ClientError, CommandDto, CommandStartedResponse, OutputKind, SessionStream,
};
use rmm_domain::{CommandId, CommandStatus, CommandText, SessionId};
use rmm_protocol::{AgentMessage, TunnelDataPayload};

use super::CliError;
use super::commands::resolve_agent;
use super::config::ConfigDir;
use super::session::{Interrupts, Lease};

/// `timeout(1)`'s code for a command killed at its timeout.
const EXIT_TIMED_OUT: u8 = 124;
/// 128 + SIGINT, as a shell reports a command stopped by Ctrl-C.
const EXIT_CANCELLED: u8 = 130;
/// ssh's code when the remote side failed rather than the command.
const EXIT_FAILED: u8 = 255;

/// The long poll's wait while the stream carries the output: only the end is awaited.
const LONG_POLL: Duration = Duration::from_secs(30);
/// The poll's wait once the stream has dropped: the stored output is fetched this often.
const FALLBACK_POLL: Duration = Duration::from_secs(2);
/// How long missing frames may trail the end the poll reported.
const FINAL_FRAME_GRACE: Duration = Duration::from_secs(2);
/// Pause after a failed poll before the next.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Failed polls in a row, with no stream, before giving up.
const MAX_POLL_FAILURES: u32 = 10;

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
enum Ending {
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
    let text = CommandText::parse(&args.command.join(" "))
        .map_err(|e| CliError::Usage(format!("{e}: pass the command after `--`")))?;
    // Listening from here on: Ctrl-C must never kill rmm between opening a session and
    // cancelling what runs in it.
    let mut interrupts = Interrupts::listen()?;
    let agent = tokio::select! {
        agent = resolve_agent(client, &args.agent) => agent?,
        () = interrupts.recv() => return Ok(report(&Ending::NotStarted)),
    };
    let Some(lease) = Lease::acquire(client, dir, &agent, args.keep, &mut interrupts).await? else {
        return Ok(report(&Ending::NotStarted));
    };
    let result = run(
        client,
        lease.session(),
        text.as_str(),
        args.timeout,
        &mut interrupts,
    )
    .await;
    lease.release(client).await;
    Ok(report(&result?))
}

/// Says how the command ended (except for a plain exit) and picks the exit code.
fn report(ending: &Ending) -> ExitCode {
    let (code, message) = match ending {
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
    };
    if let Some(message) = message {
        let _ = writeln!(std::io::stderr(), "rmm: {message}");
    }
    ExitCode::from(code)
}

/// A remote exit code as a local one: 0..=255 as is; others (Windows) by their low byte,
/// never turning a failure into 0.
fn exit_code(code: i32) -> u8 {
    match u8::try_from(code) {
        Ok(code) => code,
        Err(_) => u8::try_from(code.rem_euclid(256))
            .ok()
            .filter(|low| *low != 0)
            .unwrap_or(1),
    }
}

async fn run(
    client: &ApiClient,
    session: SessionId,
    command: &str,
    timeout_secs: Option<u64>,
    interrupts: &mut Interrupts,
) -> Result<Ending, CliError> {
    let stream = client.stream(session).await?;
    if interrupts.pending().await {
        stream.close().await;
        return Ok(Ending::NotStarted);
    }
    let started = client.run_command(session, command, timeout_secs).await?;
    let mut run = Follow::new(client.clone(), session, &started, stream);
    let ending = run.follow(interrupts).await;
    if let Some(stream) = run.stream.take() {
        stream.close().await;
    }
    ending
}

/// What one stream message meant.
enum Step {
    Continue,
    /// The final frame of our command.
    Ended(Ending),
    StreamLost,
    LocalFailed(std::io::Error),
}

type Poll = Pin<Box<dyn Future<Output = Result<CommandDto, ClientError>>>>;

/// One running command being followed.
struct Follow {
    client: ApiClient,
    session: SessionId,
    command: CommandId,
    channel: String,
    timeout_secs: u64,
    stream: Option<SessionStream>,
    out: LocalOutput,
    /// A `tunnel_error` the agent sent on our channel: why it failed.
    agent_error: Option<String>,
}

impl Follow {
    fn new(
        client: ApiClient,
        session: SessionId,
        started: &CommandStartedResponse,
        stream: SessionStream,
    ) -> Self {
        Self {
            client,
            session,
            command: started.id(),
            channel: started.channel_id.clone(),
            timeout_secs: started.timeout_secs,
            stream: Some(stream),
            out: LocalOutput::default(),
            agent_error: None,
        }
    }

    /// A poll of the command after `delay`, holding up to `wait` for its end.
    fn poll(&self, delay: Duration, wait: Duration) -> Poll {
        let client = self.client.clone();
        let (session, command) = (self.session, self.command);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            client.command(session, command, Some(wait)).await
        })
    }

    fn poll_wait(&self) -> Duration {
        if self.stream.is_some() {
            LONG_POLL
        } else {
            FALLBACK_POLL
        }
    }

    async fn follow(&mut self, interrupts: &mut Interrupts) -> Result<Ending, CliError> {
        let mut poll = self.poll(Duration::ZERO, self.poll_wait());
        let mut failures = 0;
        loop {
            tokio::select! {
                biased;
                () = interrupts.recv() => return self.cancel(interrupts).await,
                message = next_message(&mut self.stream) => match self.on_message(message) {
                    Step::Continue => {}
                    Step::Ended(ending) => return Ok(ending),
                    Step::StreamLost => {
                        // From now on the stored output is the source: poll it often.
                        poll = self.poll(Duration::ZERO, FALLBACK_POLL);
                    }
                    Step::LocalFailed(e) => return Err(self.abandon(&e).await),
                },
                record = &mut poll => match record {
                    Ok(record) if !record.is_running() => return self.finish(&record).await,
                    Ok(_) => {
                        failures = 0;
                        if self.stream.is_none() {
                            self.reconcile_running().await?;
                        }
                        poll = self.poll(Duration::ZERO, self.poll_wait());
                    }
                    Err(e) => {
                        failures += 1;
                        let transient = matches!(
                            e,
                            ClientError::Unreachable { .. }
                                | ClientError::TimedOut { .. }
                                | ClientError::Unavailable(_)
                                | ClientError::Server(_)
                        );
                        if !transient || (self.stream.is_none() && failures >= MAX_POLL_FAILURES) {
                            return Err(CliError::Local(format!(
                                "lost track of command {} ({e}); its output stays on the server",
                                self.command
                            )));
                        }
                        poll = self.poll(RETRY_DELAY, self.poll_wait());
                    }
                },
            }
        }
    }

    fn on_message(&mut self, message: Result<Option<AgentMessage>, ClientError>) -> Step {
        match message {
            Ok(Some(AgentMessage::TunnelData {
                channel_id,
                data: TunnelDataPayload::TerminalOutput(output),
            })) if channel_id == self.channel => {
                let Ok((stdout, stderr)) = output.bytes() else {
                    // Undecodable bytes: the stored output has them; stop trusting the stream.
                    self.stream = None;
                    return Step::StreamLost;
                };
                if let Err(e) = self
                    .out
                    .write(OutputKind::Stdout, &stdout)
                    .and_then(|()| self.out.write(OutputKind::Stderr, &stderr))
                {
                    return Step::LocalFailed(e);
                }
                match output.exit_code {
                    Some(code) => Step::Ended(match output.end_reason.as_deref() {
                        Some("timed_out") => Ending::TimedOut {
                            secs: self.timeout_secs,
                        },
                        Some("cancelled") => Ending::Cancelled,
                        Some(_) | None => Ending::Exited(code),
                    }),
                    None => Step::Continue,
                }
            }
            Ok(Some(AgentMessage::TunnelError { channel_id, error }))
                if channel_id == self.channel =>
            {
                self.agent_error = Some(error);
                Step::Continue
            }
            Ok(Some(_)) => Step::Continue,
            Ok(None) | Err(_) => {
                self.stream = None;
                Step::StreamLost
            }
        }
    }

    /// The command has ended (the poll says so): when bytes are missing, let frames still on
    /// their way arrive for a moment (the stream has even what the server did not store), then
    /// write whatever the stream did not deliver from the stored output.
    async fn finish(&mut self, record: &CommandDto) -> Result<Ending, CliError> {
        let deadline = tokio::time::Instant::now() + FINAL_FRAME_GRACE;
        let complete = |out: &LocalOutput| {
            [OutputKind::Stdout, OutputKind::Stderr]
                .into_iter()
                .all(|kind| out.written(kind) >= record.bytes_written(kind))
        };
        while self.stream.is_some() && !complete(&self.out) {
            let Ok(message) =
                tokio::time::timeout_at(deadline, next_message(&mut self.stream)).await
            else {
                break;
            };
            match self.on_message(message) {
                Step::Continue => {}
                Step::Ended(_) | Step::StreamLost => break,
                Step::LocalFailed(e) => return Err(self.abandon(&e).await),
            }
        }
        self.reconcile(record).await?;
        Ok(self.ending(record))
    }

    /// The ending the server recorded (authoritative: it also knows of ends no frame told).
    fn ending(&self, record: &CommandDto) -> Ending {
        match record.state() {
            Some(CommandStatus::Completed) => match record.exit_code {
                Some(code) => Ending::Exited(code),
                None => Ending::Failed {
                    reason: "the agent reported no exit code".into(),
                },
            },
            Some(CommandStatus::TimedOut) => Ending::TimedOut {
                secs: record.timeout_secs,
            },
            Some(CommandStatus::Cancelled | CommandStatus::Running) => Ending::Cancelled,
            Some(CommandStatus::Failed) => Ending::Failed {
                reason: self.agent_error.clone().unwrap_or_else(|| {
                    "the agent went away before the command ended; check `rmm agents`".into()
                }),
            },
            None => Ending::Failed {
                reason: format!("it ended with status {:?}", record.status),
            },
        }
    }

    /// Ctrl-C: cancel the remote command, wait for its end (showing its last output), and
    /// report it. A second Ctrl-C stops waiting.
    async fn cancel(&mut self, interrupts: &mut Interrupts) -> Result<Ending, CliError> {
        let client = self.client.clone();
        let cancelling = client.cancel_command(self.session, self.command);
        tokio::pin!(cancelling);
        let mut final_frame = false;
        let record = loop {
            tokio::select! {
                biased;
                () = interrupts.recv() => return Ok(Ending::Cancelled),
                record = &mut cancelling => break record?,
                message = next_message(&mut self.stream), if !final_frame => {
                    match self.on_message(message) {
                        Step::Ended(_) => final_frame = true,
                        // Cancelling anyway; the output just stops.
                        Step::Continue | Step::StreamLost | Step::LocalFailed(_) => {}
                    }
                }
            }
        };
        if record.is_running() {
            let _ = writeln!(
                std::io::stderr(),
                "rmm: cancel requested, but command {} has not ended yet",
                self.command
            );
            return Ok(Ending::Cancelled);
        }
        if final_frame {
            self.stream = None;
        }
        self.finish(&record).await
    }

    /// Our stdout or stderr is gone (a closed pipe): nobody reads the output, so stop the
    /// remote command rather than let it run unseen.
    async fn abandon(&mut self, error: &std::io::Error) -> CliError {
        let _ = self.client.cancel_command(self.session, self.command).await;
        CliError::Local(format!(
            "cannot write the output here ({error}); the remote command was cancelled"
        ))
    }

    /// While the command runs without a stream: write what the server has stored beyond what
    /// was written.
    async fn reconcile_running(&mut self) -> Result<(), CliError> {
        for kind in [OutputKind::Stdout, OutputKind::Stderr] {
            self.catch_up(kind).await?;
        }
        Ok(())
    }

    /// After the end: write the stored bytes the stream did not deliver, and say if some are
    /// beyond what the server kept.
    async fn reconcile(&mut self, record: &CommandDto) -> Result<(), CliError> {
        for kind in [OutputKind::Stdout, OutputKind::Stderr] {
            let total = record.bytes_written(kind);
            if self.out.written(kind) >= total {
                continue;
            }
            self.catch_up(kind).await?;
            let missing = total.saturating_sub(self.out.written(kind));
            if missing > 0 {
                let _ = writeln!(
                    std::io::stderr(),
                    "rmm: {missing} bytes of {} were lost: the live stream dropped and the server keeps only the first {} bytes; raise RMM_MAX_COMMAND_OUTPUT on the server to keep more",
                    kind.as_str(),
                    self.out.written(kind)
                );
            }
        }
        Ok(())
    }

    /// Writes the stored bytes of `kind` past those already written.
    async fn catch_up(&mut self, kind: OutputKind) -> Result<(), CliError> {
        let mut raw = self
            .client
            .command_output(self.session, self.command, kind)
            .await?;
        let mut offset: u64 = 0;
        while let Some(chunk) = raw.chunk().await? {
            let end = offset + chunk.len() as u64;
            let written = self.out.written(kind);
            if end > written {
                let skip = usize::try_from(written.saturating_sub(offset)).unwrap_or(usize::MAX);
                if let Some(new) = chunk.get(skip..)
                    && let Err(e) = self.out.write(kind, new)
                {
                    return Err(self.abandon(&e).await);
                }
            }
            offset = end;
        }
        Ok(())
    }
}

/// The next message of the stream, or never when there is none.
async fn next_message(
    stream: &mut Option<SessionStream>,
) -> Result<Option<AgentMessage>, ClientError> {
    match stream.as_mut() {
        Some(stream) => stream.next_message().await,
        None => std::future::pending().await,
    }
}

/// Our stdout and stderr, with the bytes written to each.
#[derive(Debug, Default)]
struct LocalOutput {
    stdout: u64,
    stderr: u64,
}

impl LocalOutput {
    fn written(&self, kind: OutputKind) -> u64 {
        match kind {
            OutputKind::Stdout => self.stdout,
            OutputKind::Stderr => self.stderr,
        }
    }

    /// Writes and flushes at once: output must show as it arrives, not when a buffer fills.
    fn write(&mut self, kind: OutputKind, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        match kind {
            OutputKind::Stdout => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(bytes)?;
                stdout.flush()?;
                self.stdout += bytes.len() as u64;
            }
            OutputKind::Stderr => {
                let mut stderr = std::io::stderr().lock();
                stderr.write_all(bytes)?;
                stderr.flush()?;
                self.stderr += bytes.len() as u64;
            }
        }
        Ok(())
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
