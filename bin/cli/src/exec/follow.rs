//! Following one running command: its frames from the session's stream, its end from a long
//! poll, the stored output for whatever the stream did not deliver; Ctrl-C cancels it. And,
//! when it ends in a way nobody here asked for, why.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rmm_client::{
    ClientError, CommandDto, CommandStartedResponse, OutputFrame, OutputKind, SessionStream,
    StreamFrame,
};
use rmm_domain::{CloseReason, CommandEndReason, CommandId, CommandStatus, SessionId};
use rmm_protocol::{AgentMessage, TunnelDataPayload};

use super::output::LocalOutput;
use super::{ApiClient, CliError, Ending, Interrupts};

/// How long a long poll made needless by the stream's end is still awaited.
const NEEDLESS_POLL_GRACE: Duration = Duration::from_secs(1);

/// Lets a long poll that the stream's end made needless finish on its own (the command has
/// ended, so the server answers it at once): dropped, it would cost its HTTP connection, and
/// the mux's next command a new one (a new dial to another node, in cluster mode).
fn finish_in_background(poll: Poll) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(NEEDLESS_POLL_GRACE, poll).await;
    });
}

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

/// How long the session's status may take to explain an unexpected end.
const STATUS_WAIT: Duration = Duration::from_secs(10);

/// What one stream message meant.
enum Step {
    Continue,
    /// The final frame of our command.
    Ended(Ending),
    StreamLost,
    LocalFailed(std::io::Error),
}

type Poll = Pin<Box<dyn Future<Output = Result<CommandDto, ClientError>> + Send>>;

/// One running command being followed.
pub(super) struct Follow {
    client: ApiClient,
    session: SessionId,
    command: CommandId,
    channel: String,
    timeout_secs: u64,
    stream: Option<SessionStream>,
    out: LocalOutput,
    /// A `tunnel_error` the agent sent on our channel: why it failed.
    agent_error: Option<String>,
    /// Ctrl-C, or our closed output, asked the server to cancel the command.
    cancel_requested: bool,
    /// The server closed the stream because the session's frames ended: the session closed.
    session_ended: bool,
    /// The server stopped answering the polls.
    server_gone: bool,
}

impl Follow {
    pub(super) fn new(
        client: ApiClient,
        session: SessionId,
        started: &CommandStartedResponse,
        stream: SessionStream,
        out: LocalOutput,
    ) -> Self {
        Self {
            client,
            session,
            command: started.id(),
            channel: started.channel_id.clone(),
            timeout_secs: started.timeout_secs,
            stream: Some(stream),
            out,
            agent_error: None,
            cancel_requested: false,
            session_ended: false,
            server_gone: false,
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

    pub(super) async fn follow(&mut self, interrupts: &mut Interrupts) -> Result<Ending, CliError> {
        let mut poll = self.poll(Duration::ZERO, self.poll_wait());
        let mut failures = 0;
        loop {
            tokio::select! {
                biased;
                () = interrupts.recv() => return self.cancel(interrupts).await,
                message = next_message(&mut self.stream) => match self.on_message(message) {
                    Step::Continue => {}
                    Step::Ended(ending) => {
                        finish_in_background(poll);
                        return Ok(ending);
                    }
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
                        let gone = server_gone(&e);
                        let transient =
                            gone || matches!(e, ClientError::Unavailable(_) | ClientError::Server(_));
                        // Once the session has ended and the server does not answer, retrying
                        // is of no use.
                        let hopeless = self.stream.is_none()
                            && (failures >= MAX_POLL_FAILURES || (gone && self.session_ended));
                        if !transient || hopeless {
                            self.server_gone = gone;
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

    fn on_message(&mut self, message: Result<Option<StreamFrame>, ClientError>) -> Step {
        match message {
            Ok(Some(StreamFrame::Output(frame))) if frame.channel_id == self.channel => {
                self.on_output(&frame)
            }
            Ok(Some(StreamFrame::Message(AgentMessage::TunnelData {
                channel_id,
                data: TunnelDataPayload::TerminalOutput(output),
            }))) if channel_id == self.channel => {
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
            Ok(Some(StreamFrame::Message(AgentMessage::TunnelError { channel_id, error })))
                if channel_id == self.channel =>
            {
                self.agent_error = Some(error);
                Step::Continue
            }
            Ok(Some(_)) => Step::Continue,
            Ok(None) | Err(_) => {
                self.session_ended |= self
                    .stream
                    .as_ref()
                    .is_some_and(SessionStream::ended_with_the_session);
                self.stream = None;
                Step::StreamLost
            }
        }
    }

    /// A binary output frame of our command: its bytes past those already written. A gap
    /// (bytes that never came) stops trusting the stream: the stored output fills it.
    fn on_output(&mut self, frame: &OutputFrame) -> Step {
        let written = self.out.written(frame.kind);
        if frame.offset > written {
            self.stream = None;
            return Step::StreamLost;
        }
        let skip = usize::try_from(written - frame.offset).unwrap_or(usize::MAX);
        match frame.data.get(skip..) {
            Some(new) => match self.out.write(frame.kind, new) {
                Ok(()) => Step::Continue,
                Err(e) => Step::LocalFailed(e),
            },
            None => Step::Continue,
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
                reason: self.why_failed(record),
            },
            None => Ending::Failed {
                reason: format!("it ended with status {:?}", record.status),
            },
        }
    }

    /// Why the command failed, in words, followed by the server's end reason (`failed
    /// (agent_disconnected)` in the API's terms), when it gave one.
    fn why_failed(&self, record: &CommandDto) -> String {
        let why = match record.why_ended() {
            Some(CommandEndReason::SessionClosed(CloseReason::ServerRestart)) => {
                "the server restarted while it ran; the agent stopped it".to_owned()
            }
            Some(CommandEndReason::NotDelivered) => "it never reached the agent".to_owned(),
            Some(CommandEndReason::ChannelInUse) => {
                "another command held its channel, so it never ran".to_owned()
            }
            Some(CommandEndReason::SessionClosed(CloseReason::AgentRevoked)) => {
                "the agent was revoked".to_owned()
            }
            _ => self.agent_error.clone().unwrap_or_else(|| {
                "the agent went away before the command ended; check `rmm agents`".into()
            }),
        };
        match &record.end_reason {
            Some(reason) => format!("{why} ({reason})"),
            None => why,
        }
    }

    /// The session's stream, when it is still open (the exec mux keeps it for the next
    /// command).
    pub(super) fn take_stream(&mut self) -> Option<SessionStream> {
        self.stream.take()
    }

    /// Closes the session's stream, if it is still open (best effort).
    pub(super) async fn close_stream(&mut self) {
        if let Some(stream) = self.stream.take() {
            stream.close().await;
        }
    }

    /// An end nobody here asked for (the command cancelled without a Ctrl-C, the server lost)
    /// is [`Ending::ServerShutdown`] when the server shut down and closed the session; any
    /// other ending is left as it is.
    pub(super) async fn explain(
        &self,
        ending: Result<Ending, CliError>,
    ) -> Result<Ending, CliError> {
        let cancelled_unasked = matches!(ending, Ok(Ending::Cancelled)) && !self.cancel_requested;
        let lost = match &ending {
            Ok(_) => false,
            Err(CliError::Client(e)) => server_gone(e),
            Err(_) => self.server_gone,
        };
        if (cancelled_unasked || lost) && self.server_shut_down(cancelled_unasked).await {
            return Ok(Ending::ServerShutdown {
                stopped: cancelled_unasked,
            });
        }
        ending
    }

    /// Whether the server shut down and closed the session: as the session's status says;
    /// or, when the server no longer answers, as the way the session ended here says (its
    /// stream closed with it, or its command was cancelled without a Ctrl-C, and then the
    /// server went away).
    async fn server_shut_down(&self, cancelled_unasked: bool) -> bool {
        let status =
            tokio::time::timeout(STATUS_WAIT, self.client.tunnel_status(self.session)).await;
        match status {
            Ok(Ok(status)) => status.why_closed() == Some(CloseReason::ServerShutdown),
            Ok(Err(e)) if !server_gone(&e) => false,
            Ok(Err(_)) | Err(_) => self.session_ended || cancelled_unasked,
        }
    }

    /// Ctrl-C: cancel the remote command, wait for its end (showing its last output), and
    /// report it. A second Ctrl-C stops waiting.
    async fn cancel(&mut self, interrupts: &mut Interrupts) -> Result<Ending, CliError> {
        let client = self.client.clone();
        self.cancel_requested = true;
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
            self.out.note(&format!(
                "cancel requested, but command {} has not ended yet",
                self.command
            ));
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
        self.cancel_requested = true;
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
            if record.output_pruned {
                self.out.note(&format!(
                    "{} of {}: output pruned (retention)",
                    kind.as_str(),
                    record.command
                ));
                continue;
            }
            self.catch_up(kind).await?;
            let missing = total.saturating_sub(self.out.written(kind));
            if missing > 0 {
                self.out.note(&format!(
                    "{missing} bytes of {} were lost: the live stream dropped and the server keeps only the first {} bytes; raise RMM_MAX_COMMAND_OUTPUT on the server to keep more",
                    kind.as_str(),
                    self.out.written(kind)
                ));
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

/// Whether the server did not answer at all (as opposed to answering with an error).
fn server_gone(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Unreachable { .. } | ClientError::TimedOut { .. }
    )
}

/// The next frame of the stream, or never when there is none.
async fn next_message(
    stream: &mut Option<SessionStream>,
) -> Result<Option<StreamFrame>, ClientError> {
    match stream.as_mut() {
        Some(stream) => stream.next_frame().await,
        None => std::future::pending().await,
    }
}
