//! Commands in a tunnel: run (audited before it is sent), read, wait for, cancel. How
//! output is stored and how commands end is in [`crate::command_ends`]; what is running is
//! tracked in [`crate::running`].

use std::time::Duration;

use rmm_domain::{
    Actor, ChannelId, CommandEnd, CommandEndParts, CommandEndReason, CommandId, CommandRun,
    CommandStatus, CommandText, SessionAction, SessionId, SessionStatus, Timestamp,
};
use tokio::sync::watch;

use crate::access::{SessionUseError, session_for};
use crate::app::{App, Ports};
use crate::ports::{
    AgentGateway, AuditAction, AuditEvent, AuditNote, Clock, CommandAudit, CommandOutcome,
    CommandRecord, CommandRepository, GatewayError, IdGenerator, OutputStream, StoreError,
};
use crate::running::{RunningCommand, StdinState, StreamCounters};

#[derive(Debug, thiserror::Error)]
pub enum RunCommandError {
    #[error("{0}")]
    Invalid(String),
    #[error("session {0} not found")]
    NotFound(SessionId),
    #[error("session {0} is owned by another user")]
    Forbidden(SessionId),
    #[error("session {0} is not active")]
    NotActive(SessionId),
    #[error("the agent of session {0} is not connected")]
    AgentOffline(SessionId),
    #[error("channel {0} is in use or the tunnel has too many channels")]
    ChannelBusy(ChannelId),
    #[error("the agent cannot feed a command's stdin (upgrade the agent)")]
    StdinUnsupported,
    #[error("the agent is overloaded; try again")]
    Overloaded,
    /// The command could not be stored with its audit entry (one transaction), so it was not
    /// sent: commands never run unaudited.
    #[error("the command and its audit entry cannot be recorded, so the command was not sent")]
    AuditUnavailable(#[source] StoreError),
    /// The session could not be read, so the command was not sent.
    #[error("the database is unavailable, so the command was not sent")]
    Store(#[source] StoreError),
}

impl From<SessionUseError> for RunCommandError {
    fn from(e: SessionUseError) -> Self {
        match e {
            SessionUseError::NotFound(id) => Self::NotFound(id),
            SessionUseError::Forbidden(id) => Self::Forbidden(id),
            SessionUseError::Store(e) => Self::Store(e),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GetCommandError {
    #[error("command {0} not found in this session")]
    NotFound(CommandId),
    #[error("session {0} not found")]
    SessionNotFound(SessionId),
    #[error("session {0} is owned by another user")]
    Forbidden(SessionId),
    #[error("command store failed")]
    Store(#[source] StoreError),
    /// The command ended (a cancel) but the store refused its end: as stored it is still
    /// running; the end is stored once the store takes it.
    #[error("command {0} ended but its end cannot be recorded yet; it is kept and retried")]
    EndNotRecorded(CommandId),
    /// The retention sweep removed the command's stored output (its record stays).
    #[error("the output of command {0} was pruned by the retention sweep")]
    OutputPruned(CommandId),
}

impl From<SessionUseError> for GetCommandError {
    fn from(e: SessionUseError) -> Self {
        match e {
            SessionUseError::NotFound(id) => Self::SessionNotFound(id),
            SessionUseError::Forbidden(id) => Self::Forbidden(id),
            SessionUseError::Store(e) => Self::Store(e),
        }
    }
}

impl<P: Ports> App<P> {
    /// Runs a command in a session: stored with its `command` audit entry in one transaction
    /// (a failed write refuses it), then sent to the agent on a channel of its own.
    ///
    /// # Errors
    /// See [`RunCommandError`].
    pub async fn run_command(
        &self,
        actor: Actor,
        session_id: SessionId,
        text: &str,
        timeout_secs: Option<u64>,
        channel: Option<ChannelId>,
    ) -> Result<CommandRecord, RunCommandError> {
        self.run_command_with(actor, session_id, text, timeout_secs, channel, false)
            .await
    }

    /// [`Self::run_command`], with the command's stdin kept open when `stdin` (fed by
    /// [`Self::write_stdin`]).
    ///
    /// # Errors
    /// As [`Self::run_command`]; [`RunCommandError::StdinUnsupported`].
    pub async fn run_command_with(
        &self,
        actor: Actor,
        session_id: SessionId,
        text: &str,
        timeout_secs: Option<u64>,
        channel: Option<ChannelId>,
        stdin: bool,
    ) -> Result<CommandRecord, RunCommandError> {
        let text = CommandText::parse(text).map_err(|e| RunCommandError::Invalid(e.to_string()))?;
        let timeout = self.command_timeout(timeout_secs)?;
        let session = session_for(
            &*self.sessions,
            &*self.groups,
            actor,
            session_id,
            SessionAction::Use,
        )
        .await?;
        if session.status() != SessionStatus::Active {
            return Err(RunCommandError::NotActive(session_id));
        }
        let id = self.ids.command_id();
        let now = self.clock.now();
        let record = CommandRecord {
            id,
            session: session_id,
            agent: session.agent(),
            owner: actor.id,
            channel: channel.unwrap_or_else(|| ChannelId::for_command(id)),
            text: text.as_str().to_owned(),
            timeout_secs: timeout.as_secs(),
            status: CommandStatus::Running,
            exit_code: None,
            signal: None,
            end_reason: None,
            started_at: now,
            finished_at: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdout_truncated: false,
            stderr_truncated: false,
            output_pruned: false,
        };
        self.commands
            .insert_command(&record, &command_started(&record))
            .await
            .map_err(RunCommandError::AuditUnavailable)?;
        self.start_command(&record, now.plus(timeout), stdin)
            .await?;
        self.session_activity(session_id);
        tracing::info!(command_id = %id, session_id = %session_id, agent_id = %record.agent, tech_id = %actor.id, "command sent");
        Ok(record)
    }

    /// The timeout a request asks for, within the configured bounds.
    fn command_timeout(&self, secs: Option<u64>) -> Result<Duration, RunCommandError> {
        match secs {
            None => Ok(self.config.command_timeout),
            Some(0) => Err(RunCommandError::Invalid(
                "timeout_secs must be at least 1".into(),
            )),
            Some(secs) if Duration::from_secs(secs) > self.config.max_command_timeout => {
                Err(RunCommandError::Invalid(format!(
                    "timeout_secs must be at most {}",
                    self.config.max_command_timeout.as_secs()
                )))
            }
            Some(secs) => Ok(Duration::from_secs(secs)),
        }
    }

    /// Lists a stored command as running and sends it. Registered before sending, so the
    /// first output cannot race the registration.
    async fn start_command(
        &self,
        record: &CommandRecord,
        deadline: Timestamp,
        stdin: bool,
    ) -> Result<(), RunCommandError> {
        let (done, _) = watch::channel(false);
        let running = RunningCommand {
            session: record.session,
            agent: record.agent,
            owner: record.owner,
            channel: record.channel.clone(),
            text: record.text.clone(),
            started_at: record.started_at,
            deadline,
            stdout: StreamCounters::default(),
            stderr: StreamCounters::default(),
            run: CommandRun::new(),
            done,
            unstored: None,
            stdin: if stdin {
                StdinState::Open
            } else {
                StdinState::Closed
            },
        };
        if let Err(running) = self.running.register(record.id, running) {
            self.store_refused_end(record, *running).await;
            return Err(RunCommandError::ChannelBusy(record.channel.clone()));
        }
        let sent = self.gateway.send_command(
            record.agent,
            record.session,
            &record.channel,
            &record.text,
            record.timeout_secs,
            stdin,
        );
        if let Err(e) = sent {
            // A refused end is logged and kept for maintenance.
            let _ = self
                .end_command(record.id, CommandEndReason::NotDelivered)
                .await;
            return Err(match e {
                GatewayError::NotConnected | GatewayError::Disconnected => {
                    RunCommandError::AgentOffline(record.session)
                }
                GatewayError::Unsupported if stdin => RunCommandError::StdinUnsupported,
                GatewayError::Busy | GatewayError::Unsupported => {
                    RunCommandError::ChannelBusy(record.channel.clone())
                }
                GatewayError::Overloaded => RunCommandError::Overloaded,
            });
        }
        Ok(())
    }

    /// A command refused before it ran (its channel was taken) is stored as failed, with its
    /// `command_end` entry; when the store refuses, it is listed (holding no channel) for
    /// maintenance to store.
    async fn store_refused_end(&self, record: &CommandRecord, mut running: RunningCommand) {
        let end = CommandEnd::decided(CommandEndReason::ChannelInUse);
        if running.run.end(&end).is_err() {
            return;
        }
        let CommandEndParts {
            status,
            exit_code,
            signal,
            reason,
        } = end.into_parts();
        let outcome = CommandOutcome {
            status,
            exit_code,
            signal,
            end_reason: reason,
            finished_at: record.started_at,
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdout_truncated: false,
            stderr_truncated: false,
        };
        let ended = CommandRecord {
            status: outcome.status,
            end_reason: outcome.end_reason,
            finished_at: Some(outcome.finished_at),
            ..record.clone()
        };
        let note = AuditNote::new(
            AuditAction::CommandEnd,
            outcome.end_reason.map(|r| r.as_str().to_owned()),
        );
        let event = note.for_ended_command(&ended);
        if let Err(e) = self
            .commands
            .finish_command(record.id, &outcome, &event)
            .await
        {
            tracing::error!(command_id = %record.id, error = %e, source = ?std::error::Error::source(&e), "storing a refused command's end failed; kept to store again");
            running.unstored = Some((outcome, event));
            self.running.park_unstored(record.id, running);
        }
    }

    /// A command of a session, for the session's owner; with `wait`, holds until the command
    /// ends or `wait` passes.
    ///
    /// # Errors
    /// See [`GetCommandError`].
    pub async fn get_command(
        &self,
        actor: Actor,
        session_id: SessionId,
        id: CommandId,
        wait: Option<Duration>,
    ) -> Result<CommandRecord, GetCommandError> {
        session_for(
            &*self.sessions,
            &*self.groups,
            actor,
            session_id,
            SessionAction::Use,
        )
        .await?;
        let record = self.command_of(session_id, id).await?;
        if let Some(wait) = wait.filter(|_| record.status.is_running()) {
            if let Some(mut done) = self.running.subscribe(id) {
                let _ = tokio::time::timeout(wait, done.wait_for(|ended| *ended)).await;
            }
            return self.command_of(session_id, id).await;
        }
        Ok(record)
    }

    /// Up to `limit` stored chunks of a command's stream, from chunk `from`, for the owner.
    ///
    /// # Errors
    /// See [`GetCommandError`].
    pub async fn command_output_chunks(
        &self,
        actor: Actor,
        session_id: SessionId,
        id: CommandId,
        stream: OutputStream,
        from: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>, GetCommandError> {
        session_for(
            &*self.sessions,
            &*self.groups,
            actor,
            session_id,
            SessionAction::Use,
        )
        .await?;
        if self.command_of(session_id, id).await?.output_pruned {
            return Err(GetCommandError::OutputPruned(id));
        }
        self.commands
            .read_output(id, stream, from, limit)
            .await
            .map_err(GetCommandError::Store)
    }

    /// The first `max` bytes stored of a command's stream, for the owner, read a few chunks at
    /// a time so no more than about `max` bytes (plus one chunk) are ever read from the store;
    /// and whether more is stored past them.
    ///
    /// # Errors
    /// See [`GetCommandError`].
    pub async fn command_output_prefix(
        &self,
        actor: Actor,
        session_id: SessionId,
        id: CommandId,
        stream: OutputStream,
        max: usize,
    ) -> Result<(Vec<u8>, bool), GetCommandError> {
        session_for(
            &*self.sessions,
            &*self.groups,
            actor,
            session_id,
            SessionAction::Use,
        )
        .await?;
        self.command_of(session_id, id).await?;
        let mut prefix = Vec::new();
        let mut from = 0;
        while prefix.len() <= max {
            // About as many chunks as the rest of the budget holds (agents send 32 KiB ones).
            let wanted = (max - prefix.len()) / PREFIX_CHUNK_GUESS + 1;
            let limit = u32::try_from(wanted.min(PREFIX_MAX_CHUNKS_PER_READ)).unwrap_or(1);
            let chunks = self
                .commands
                .read_output(id, stream, from, limit)
                .await
                .map_err(GetCommandError::Store)?;
            let full = chunks.len() >= limit as usize;
            for (seq, bytes) in chunks {
                from = seq + 1;
                prefix.extend_from_slice(&bytes);
            }
            if !full {
                break;
            }
        }
        let more = prefix.len() > max;
        prefix.truncate(max);
        Ok((prefix, more))
    }

    /// Cancels a running command: the agent kills its process group. Waits up to `wait` for
    /// the end; an agent that cannot cancel has the command ended as cancelled at once.
    ///
    /// # Errors
    /// See [`GetCommandError`]; [`GetCommandError::EndNotRecorded`] when the command ended
    /// but the store refused its end.
    pub async fn cancel_command(
        &self,
        actor: Actor,
        session_id: SessionId,
        id: CommandId,
        wait: Duration,
    ) -> Result<CommandRecord, GetCommandError> {
        session_for(
            &*self.sessions,
            &*self.groups,
            actor,
            session_id,
            SessionAction::Use,
        )
        .await?;
        if let Some(mut target) = self.running.request_cancel(id, session_id) {
            tracing::info!(command_id = %id, by = %actor.id, "cancelling command");
            if target.ending || self.gateway.cancel_command(target.agent, &target.channel) {
                let _ = tokio::time::timeout(wait, target.done.wait_for(|ended| *ended)).await;
            } else if self
                .end_command(id, CommandEndReason::CancelledByUser)
                .await
                .is_err()
            {
                return Err(GetCommandError::EndNotRecorded(id));
            }
        }
        if self.running.is_unstored(id) {
            return Err(GetCommandError::EndNotRecorded(id));
        }
        self.command_of(session_id, id).await
    }

    /// The stored command `id` when it belongs to `session`.
    async fn command_of(
        &self,
        session: SessionId,
        id: CommandId,
    ) -> Result<CommandRecord, GetCommandError> {
        let record = self
            .commands
            .get_command(id)
            .await
            .map_err(GetCommandError::Store)?;
        record
            .filter(|c| c.session == session)
            .ok_or(GetCommandError::NotFound(id))
    }
}

/// The chunk size [`App::command_output_prefix`] plans its reads with.
const PREFIX_CHUNK_GUESS: usize = 32 * 1024;
/// The most chunks [`App::command_output_prefix`] reads at once.
const PREFIX_MAX_CHUNKS_PER_READ: usize = 16;

/// The audit entry written before a command is sent.
fn command_started(record: &CommandRecord) -> AuditEvent {
    let mut event = AuditEvent::new(record.started_at, AuditAction::Command);
    event.user = Some(record.owner);
    event.agent = Some(record.agent);
    event.session = Some(record.session);
    event.command = Some(CommandAudit {
        command_id: Some(record.id),
        text: Some(record.text.clone()),
        status: Some(CommandStatus::Running.as_str().to_owned()),
        ..CommandAudit::default()
    });
    event
}
