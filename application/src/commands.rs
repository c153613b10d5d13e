//! Commands in a tunnel: run (audited before it is sent), output (stored up to a cap,
//! streamed live to watchers), wait, cancel, and the ends the server decides on its own
//! (tunnel closed, agent gone, agent silent past the timeout).
//!
//! Running commands are tracked here in memory: their counters and a completion signal. The
//! lock is never held across an `.await`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rmm_domain::{
    Actor, AgentId, ChannelId, CommandId, CommandStatus, CommandText, Role, SessionAction,
    SessionId, SessionStatus, Timestamp, UserId,
};
use tokio::sync::watch;

use crate::app::{App, Ports};
use crate::ports::{
    AgentGateway, AuditAction, AuditEntry, AuditEvent, AuditLog, AuditQuery, Clock, CommandAudit,
    CommandOutcome, CommandRecord, CommandRepository, GatewayError, IdGenerator, OutputChunk,
    OutputStream, SessionStreams, StoreError,
};
use crate::tunnels::SessionUseError;

/// How long past its timeout a command may stay silent before the server ends it itself
/// (the agent enforces the timeout; this covers an agent that cannot).
const TIMEOUT_GRACE: Duration = Duration::from_secs(10);

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
    #[error("the agent is overloaded; try again")]
    Overloaded,
    #[error("the audit log cannot be written, so the command was not sent")]
    AuditUnavailable(#[source] StoreError),
    #[error("command store failed")]
    Store(#[source] StoreError),
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
}

#[derive(Debug, thiserror::Error)]
pub enum WatchSessionError {
    #[error("session {0} not found")]
    NotFound(SessionId),
    #[error("session {0} is owned by another user")]
    Forbidden(SessionId),
    #[error("session {0} is not active")]
    NotActive(SessionId),
    #[error("session store failed")]
    Store(#[source] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum ListAuditError {
    #[error("technicians may only read their own audit entries")]
    Forbidden,
    #[error("audit store failed")]
    Store(#[source] StoreError),
}

#[derive(Debug, Clone)]
struct RunningCommand {
    session: SessionId,
    agent: AgentId,
    owner: UserId,
    channel: ChannelId,
    text: String,
    started_at: Timestamp,
    deadline: Timestamp,
    stdout: StreamCounters,
    stderr: StreamCounters,
    cancel_requested: bool,
    /// Its end is being recorded: it stays listed (so `?wait=` still finds it) until the
    /// end is stored, but nothing may end it twice.
    ending: bool,
    done: watch::Sender<bool>,
}

#[derive(Debug, Default, Clone, Copy)]
struct StreamCounters {
    written: u64,
    stored: u64,
    next_seq: u64,
    truncated: bool,
}

impl StreamCounters {
    /// Counts `len` new bytes; how many of them to store (the rest is over the cap) and the
    /// chunk's sequence number.
    fn admit(&mut self, len: usize, cap: u64) -> (usize, u64) {
        let len64 = len as u64;
        self.written = self.written.saturating_add(len64);
        let room = cap.saturating_sub(self.stored);
        let keep = len64.min(room);
        if keep < len64 {
            self.truncated = true;
        }
        self.stored += keep;
        let seq = self.next_seq;
        if keep > 0 {
            self.next_seq += 1;
        }
        // `keep <= len`, which is a usize.
        (usize::try_from(keep).unwrap_or(len), seq)
    }
}

/// The commands running now.
#[derive(Debug, Default)]
pub struct Running {
    inner: Mutex<RunningInner>,
}

#[derive(Debug, Default)]
struct RunningInner {
    commands: HashMap<CommandId, RunningCommand>,
    by_channel: HashMap<(AgentId, ChannelId), CommandId>,
}

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, RunningInner> {
        // Each update below keeps both maps consistent statement by statement, so a poisoned
        // lock is still safe to use.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts ending a command: its channel stops taking output; the command stays listed
    /// until [`Self::ended`]. `None` when it is not running or already ending.
    fn begin_end(&self, id: CommandId) -> Option<RunningCommand> {
        let mut inner = self.lock();
        let command = inner.commands.get_mut(&id).filter(|c| !c.ending)?;
        command.ending = true;
        let command = command.clone();
        inner
            .by_channel
            .remove(&(command.agent, command.channel.clone()));
        Some(command)
    }

    /// The end is stored: forget the command and wake its waiters.
    fn ended(&self, id: CommandId) {
        if let Some(command) = self.lock().commands.remove(&id) {
            let _ = command.done.send(true);
        }
    }
}

/// What to write for one output chunk, decided under the lock.
struct Admitted {
    id: CommandId,
    session: SessionId,
    stdout: (usize, u64),
    stderr: (usize, u64),
    end: Option<RunningCommand>,
}

impl<P: Ports> App<P> {
    /// Runs a command in a session: audited first (a failed audit write refuses it), then sent
    /// to the agent on a channel of its own.
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
        let text = CommandText::parse(text).map_err(|e| RunCommandError::Invalid(e.to_string()))?;
        let timeout = match timeout_secs {
            None => self.config.command_timeout,
            Some(0) => {
                return Err(RunCommandError::Invalid(
                    "timeout_secs must be at least 1".into(),
                ));
            }
            Some(secs) if Duration::from_secs(secs) > self.config.max_command_timeout => {
                return Err(RunCommandError::Invalid(format!(
                    "timeout_secs must be at most {}",
                    self.config.max_command_timeout.as_secs()
                )));
            }
            Some(secs) => Duration::from_secs(secs),
        };
        let session = match self
            .session_for(actor, session_id, SessionAction::Use)
            .await
        {
            Ok(session) => session,
            Err(SessionUseError::NotFound(id)) => return Err(RunCommandError::NotFound(id)),
            Err(SessionUseError::Forbidden(id)) => return Err(RunCommandError::Forbidden(id)),
            Err(SessionUseError::Store(e)) => return Err(RunCommandError::Store(e)),
        };
        if session.status() != SessionStatus::Active {
            return Err(RunCommandError::NotActive(session_id));
        }
        let id = self.ids.command_id();
        let channel = channel.unwrap_or_else(|| ChannelId::for_command(id));
        let now = self.clock.now();
        let record = CommandRecord {
            id,
            session: session_id,
            agent: session.agent(),
            owner: actor.id,
            channel: channel.clone(),
            text: text.as_str().to_owned(),
            timeout_secs: timeout.as_secs(),
            status: CommandStatus::Running,
            exit_code: None,
            signal: None,
            started_at: now,
            finished_at: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdout_truncated: false,
            stderr_truncated: false,
        };
        let mut event = AuditEvent::new(now, AuditAction::Command);
        event.user = Some(actor.id);
        event.agent = Some(record.agent);
        event.session = Some(session_id);
        event.command = Some(CommandAudit {
            command_id: Some(id),
            text: Some(record.text.clone()),
            status: Some(CommandStatus::Running.as_str().to_owned()),
            ..CommandAudit::default()
        });
        self.audit
            .append(&event)
            .await
            .map_err(RunCommandError::AuditUnavailable)?;
        self.commands
            .insert_command(&record)
            .await
            .map_err(RunCommandError::Store)?;

        // Registered before sending, so the first output cannot race the registration.
        let (done, _) = watch::channel(false);
        let busy = {
            let mut running = self.running.lock();
            // Another command of this agent may hold the channel (a watcher chose the id).
            let busy = running
                .by_channel
                .contains_key(&(record.agent, channel.clone()));
            if !busy {
                running
                    .by_channel
                    .insert((record.agent, channel.clone()), id);
                running.commands.insert(
                    id,
                    RunningCommand {
                        session: session_id,
                        agent: record.agent,
                        owner: actor.id,
                        channel: channel.clone(),
                        text: record.text.clone(),
                        started_at: now,
                        deadline: now.plus(timeout),
                        stdout: StreamCounters::default(),
                        stderr: StreamCounters::default(),
                        cancel_requested: false,
                        ending: false,
                        done,
                    },
                );
            }
            busy
        };
        if busy {
            let outcome = CommandOutcome {
                status: CommandStatus::Failed,
                exit_code: None,
                signal: None,
                finished_at: now,
                stdout_bytes: 0,
                stderr_bytes: 0,
                stdout_truncated: false,
                stderr_truncated: false,
            };
            if let Err(e) = self.commands.finish_command(id, &outcome).await {
                tracing::error!(command_id = %id, error = %e, "storing a refused command's end failed");
            }
            return Err(RunCommandError::ChannelBusy(channel));
        }
        if let Err(e) = self.gateway.send_command(
            record.agent,
            session_id,
            &channel,
            text.as_str(),
            timeout.as_secs(),
        ) {
            self.end_command(id, CommandStatus::Failed, None, None)
                .await;
            return Err(match e {
                GatewayError::NotConnected | GatewayError::Disconnected => {
                    RunCommandError::AgentOffline(session_id)
                }
                GatewayError::Busy | GatewayError::Unsupported => {
                    RunCommandError::ChannelBusy(channel)
                }
                GatewayError::Overloaded => RunCommandError::Overloaded,
            });
        }
        self.session_activity(session_id);
        tracing::info!(command_id = %id, session_id = %session_id, agent_id = %record.agent, tech_id = %actor.id, "command sent");
        Ok(record)
    }

    /// A chunk of output from `agent` on `channel`. Only that agent's own running commands
    /// are touched: output on a channel it does not own is dropped. Returns whether the chunk
    /// belonged to a running command.
    pub async fn command_output(
        &self,
        agent: AgentId,
        channel: &ChannelId,
        chunk: OutputChunk,
    ) -> bool {
        let cap = self.config.max_stored_output;
        let admitted = {
            let mut running = self.running.lock();
            let Some(&id) = running.by_channel.get(&(agent, channel.clone())) else {
                return false;
            };
            let Some(command) = running.commands.get_mut(&id) else {
                return false;
            };
            let stdout = command.stdout.admit(chunk.stdout.len(), cap);
            let stderr = command.stderr.admit(chunk.stderr.len(), cap);
            let session = command.session;
            let end = if chunk.exit_code.is_some() {
                running.by_channel.remove(&(agent, channel.clone()));
                running
                    .commands
                    .get_mut(&id)
                    .filter(|c| !c.ending)
                    .map(|c| {
                        c.ending = true;
                        c.clone()
                    })
            } else {
                None
            };
            Admitted {
                id,
                session,
                stdout,
                stderr,
                end,
            }
        };
        for (stream, data, (keep, seq)) in [
            (OutputStream::Stdout, &chunk.stdout, admitted.stdout),
            (OutputStream::Stderr, &chunk.stderr, admitted.stderr),
        ] {
            if keep > 0
                && let Err(e) = self
                    .commands
                    .append_output(admitted.id, stream, seq, &data[..keep])
                    .await
            {
                tracing::error!(command_id = %admitted.id, error = %e, source = ?std::error::Error::source(&e), "storing command output failed");
            }
        }
        self.session_activity(admitted.session);
        self.streams.publish(
            admitted.session,
            &crate::ports::StreamEvent::Output {
                channel: channel.clone(),
                chunk: chunk.clone(),
            },
        );
        if let Some(command) = admitted.end {
            let status = match (chunk.end_reason.as_deref(), command.cancel_requested) {
                (Some("timed_out"), _) => CommandStatus::TimedOut,
                (Some("cancelled"), _) | (_, true) => CommandStatus::Cancelled,
                _ => CommandStatus::Completed,
            };
            self.record_end(admitted.id, command, status, chunk.exit_code, chunk.signal)
                .await;
        }
        true
    }

    /// An error the agent reported on a channel: forwarded to watchers; a command on that
    /// channel has failed to start or died.
    pub async fn channel_error(
        &self,
        agent: AgentId,
        session: SessionId,
        channel: &ChannelId,
        error: &str,
    ) {
        self.streams.publish(
            session,
            &crate::ports::StreamEvent::Error {
                channel: channel.clone(),
                error: error.to_owned(),
            },
        );
        let id = self
            .running
            .lock()
            .by_channel
            .get(&(agent, channel.clone()))
            .copied();
        if let Some(id) = id {
            tracing::warn!(command_id = %id, agent_id = %agent, error, "agent reported a command error");
            self.end_command(id, CommandStatus::Failed, None, None)
                .await;
        }
    }

    /// Ends a running command on the server's own decision and releases its channel.
    async fn end_command(
        &self,
        id: CommandId,
        status: CommandStatus,
        exit_code: Option<i32>,
        signal: Option<String>,
    ) {
        if let Some(command) = self.running.begin_end(id) {
            self.gateway
                .release_channel(command.agent, &command.channel);
            self.record_end(id, command, status, exit_code, signal)
                .await;
        }
    }

    async fn record_end(
        &self,
        id: CommandId,
        command: RunningCommand,
        status: CommandStatus,
        exit_code: Option<i32>,
        signal: Option<String>,
    ) {
        let now = self.clock.now();
        let outcome = CommandOutcome {
            status,
            exit_code,
            signal,
            finished_at: now,
            stdout_bytes: command.stdout.written,
            stderr_bytes: command.stderr.written,
            stdout_truncated: command.stdout.truncated,
            stderr_truncated: command.stderr.truncated,
        };
        let duration = now.since(command.started_at);
        let mut event = AuditEvent::new(now, AuditAction::CommandEnd);
        event.user = Some(command.owner);
        event.agent = Some(command.agent);
        event.session = Some(command.session);
        event.command = Some(CommandAudit {
            command_id: Some(id),
            text: Some(command.text.clone()),
            status: Some(status.as_str().to_owned()),
            exit_code,
            stdout_bytes: Some(command.stdout.written),
            stderr_bytes: Some(command.stderr.written),
            duration_ms: Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)),
        });
        // The audit entry first: once the stored command shows its end, the audit log has it.
        if let Err(e) = self.audit.append(&event).await {
            tracing::error!(command_id = %id, error = %e, source = ?std::error::Error::source(&e), "audit write of a command's end failed");
        }
        if let Err(e) = self.commands.finish_command(id, &outcome).await {
            tracing::error!(command_id = %id, error = %e, source = ?std::error::Error::source(&e), "storing a command's end failed");
        }
        tracing::info!(command_id = %id, session_id = %command.session, status = status.as_str(), exit_code = ?exit_code, duration_ms = duration.as_millis() as u64, "command ended");
        self.running.ended(id);
    }

    /// Ends every running command of a session (tunnel closed: `Cancelled`; agent gone:
    /// `Failed`).
    pub(crate) async fn end_session_commands(&self, session: SessionId, status: CommandStatus) {
        let ids: Vec<CommandId> = self
            .running
            .lock()
            .commands
            .iter()
            .filter(|(_, c)| c.session == session)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.end_command(id, status, None, None).await;
        }
        self.streams.end_session(session);
    }

    /// Ends commands whose agent stayed silent past their timeout (plus a grace period).
    pub(crate) async fn end_overdue_commands(&self, now: Timestamp) {
        let overdue: Vec<(CommandId, AgentId, ChannelId)> = self
            .running
            .lock()
            .commands
            .iter()
            .filter(|(_, c)| now >= c.deadline.plus(TIMEOUT_GRACE))
            .map(|(id, c)| (*id, c.agent, c.channel.clone()))
            .collect();
        for (id, agent, channel) in overdue {
            tracing::warn!(command_id = %id, "command ran past its timeout without an end from the agent");
            self.gateway.cancel_command(agent, &channel);
            self.end_command(id, CommandStatus::TimedOut, None, None)
                .await;
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
        self.authorize_session_use(actor, session_id).await?;
        let record = self
            .commands
            .get_command(id)
            .await
            .map_err(GetCommandError::Store)?;
        let record = record
            .filter(|c| c.session == session_id)
            .ok_or(GetCommandError::NotFound(id))?;
        if let Some(wait) = wait.filter(|_| record.status.is_running()) {
            let done = self
                .running
                .lock()
                .commands
                .get(&id)
                .map(|c| c.done.subscribe());
            if let Some(mut done) = done {
                let _ = tokio::time::timeout(wait, done.wait_for(|ended| *ended)).await;
            }
            let record = self
                .commands
                .get_command(id)
                .await
                .map_err(GetCommandError::Store)?;
            return record.ok_or(GetCommandError::NotFound(id));
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
        self.authorize_session_use(actor, session_id).await?;
        let record = self
            .commands
            .get_command(id)
            .await
            .map_err(GetCommandError::Store)?;
        record
            .filter(|c| c.session == session_id)
            .ok_or(GetCommandError::NotFound(id))?;
        self.commands
            .read_output(id, stream, from, limit)
            .await
            .map_err(GetCommandError::Store)
    }

    /// Cancels a running command: the agent kills its process group. Waits up to `wait` for
    /// the end; an agent that cannot cancel has the command ended as cancelled at once.
    ///
    /// # Errors
    /// See [`GetCommandError`].
    pub async fn cancel_command(
        &self,
        actor: Actor,
        session_id: SessionId,
        id: CommandId,
        wait: Duration,
    ) -> Result<CommandRecord, GetCommandError> {
        self.authorize_session_use(actor, session_id).await?;
        let target = {
            let mut running = self.running.lock();
            running
                .commands
                .get_mut(&id)
                .filter(|c| c.session == session_id)
                .map(|c| {
                    c.cancel_requested = true;
                    (c.agent, c.channel.clone(), c.done.subscribe())
                })
        };
        if let Some((agent, channel, mut done)) = target {
            tracing::info!(command_id = %id, by = %actor.id, "cancelling command");
            if self.gateway.cancel_command(agent, &channel) {
                let _ = tokio::time::timeout(wait, done.wait_for(|ended| *ended)).await;
            } else {
                self.end_command(id, CommandStatus::Cancelled, None, None)
                    .await;
            }
        }
        let record = self
            .commands
            .get_command(id)
            .await
            .map_err(GetCommandError::Store)?;
        record
            .filter(|c| c.session == session_id)
            .ok_or(GetCommandError::NotFound(id))
    }

    async fn authorize_session_use(
        &self,
        actor: Actor,
        session_id: SessionId,
    ) -> Result<(), GetCommandError> {
        match self
            .session_for(actor, session_id, SessionAction::Use)
            .await
        {
            Ok(_) => Ok(()),
            Err(SessionUseError::NotFound(id)) => Err(GetCommandError::SessionNotFound(id)),
            Err(SessionUseError::Forbidden(id)) => Err(GetCommandError::Forbidden(id)),
            Err(SessionUseError::Store(e)) => Err(GetCommandError::Store(e)),
        }
    }

    /// Checks that `actor` may watch a session's stream: their own, active session.
    ///
    /// # Errors
    /// See [`WatchSessionError`].
    pub async fn authorize_stream(
        &self,
        actor: Actor,
        session_id: SessionId,
    ) -> Result<(), WatchSessionError> {
        let session = match self
            .session_for(actor, session_id, SessionAction::Use)
            .await
        {
            Ok(session) => session,
            Err(SessionUseError::NotFound(id)) => return Err(WatchSessionError::NotFound(id)),
            Err(SessionUseError::Forbidden(id)) => return Err(WatchSessionError::Forbidden(id)),
            Err(SessionUseError::Store(e)) => return Err(WatchSessionError::Store(e)),
        };
        // A closed session's stream would never end: nothing publishes to it any more.
        if session.status() != SessionStatus::Active {
            return Err(WatchSessionError::NotActive(session_id));
        }
        Ok(())
    }

    /// Reads the audit log: admins everything, technicians their own entries.
    ///
    /// # Errors
    /// [`ListAuditError::Forbidden`] when a technician asks for someone else's entries.
    pub async fn list_audit(
        &self,
        actor: Actor,
        mut query: AuditQuery,
    ) -> Result<Vec<AuditEntry>, ListAuditError> {
        match actor.role {
            Role::Admin => {}
            Role::Tech => match query.user {
                Some(user) if user != actor.id => return Err(ListAuditError::Forbidden),
                Some(_) | None => query.user = Some(actor.id),
            },
        }
        query.limit = query.limit.clamp(1, 500);
        self.audit
            .list_audit(&query)
            .await
            .map_err(ListAuditError::Store)
    }
}
