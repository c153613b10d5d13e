//! Command output and ends: output is stored up to a cap and streamed live to watchers; a
//! command ends when the agent says so, or when the server decides (tunnel closed, agent
//! gone, agent silent past the timeout). Every end is stored once, in one transaction with its
//! `command_end` entry; an end the store refuses is kept and stored by maintenance (the stored
//! command stays running until then).
//!
//! Output the store refuses is kept in a bounded spool ([`crate::spool`]) and written again
//! before the stream's next chunk, before the command's end, and by maintenance. Output that
//! cannot be kept (spool full, or the end waited too long) is never stored short silently:
//! the command is stored as truncated and the loss is logged at ERROR.

use std::time::Duration;

use bytes::Bytes;
use rmm_domain::{
    AgentId, ChannelId, CloseReason, CommandEnd, CommandEndParts, CommandEndReason, CommandId,
    CommandStatus, SessionId, Timestamp,
};

use crate::app::{App, Ports};
use crate::ports::{
    AgentGateway, AuditAction, AuditEvent, Clock, CommandAudit, CommandOutcome, CommandRepository,
    OutputChunk, OutputStream, SessionStreams, StoreError, StreamEvent,
};
use crate::running::RunningCommand;
use crate::spool::Pushed;

/// How long past its timeout a command may stay silent before the server ends it itself
/// (the agent enforces the timeout; this covers an agent that cannot).
const TIMEOUT_GRACE: Duration = Duration::from_secs(10);

/// How long a command's end may wait for its output to be stored before what still waits is
/// given up (the command then stored as truncated).
const END_PATIENCE: Duration = Duration::from_secs(120);

impl<P: Ports> App<P> {
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
        let Some(admitted) = self.running.admit_output(agent, channel, &chunk, cap) else {
            return false;
        };
        for (stream, data, (keep, seq)) in [
            (OutputStream::Stdout, &chunk.stdout, admitted.stdout),
            (OutputStream::Stderr, &chunk.stderr, admitted.stderr),
        ] {
            if keep > 0 {
                let data = Bytes::copy_from_slice(&data[..keep]);
                self.store_output(admitted.id, stream, seq, data).await;
            }
        }
        self.session_activity(admitted.session);
        let event = StreamEvent::Output {
            channel: channel.clone(),
            chunk,
        };
        self.streams.publish(admitted.session, &event);
        if let Some((end, command)) = admitted.end {
            // A refused end is logged and kept for maintenance.
            let _ = self.record_end(admitted.id, command, end).await;
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
            &StreamEvent::Error {
                channel: channel.clone(),
                error: error.to_owned(),
            },
        );
        if let Some(id) = self.running.on_channel(agent, channel) {
            tracing::warn!(command_id = %id, agent_id = %agent, error, "agent reported a command error");
            // A refused end is logged and kept for maintenance.
            let _ = self.end_command(id, CommandEndReason::AgentError).await;
        }
    }

    /// Ends a running command on the server's own decision, for `reason`, and releases its
    /// channel.
    ///
    /// # Errors
    /// The store refused the end (logged; kept for maintenance to store).
    pub(crate) async fn end_command(
        &self,
        id: CommandId,
        reason: CommandEndReason,
    ) -> Result<(), StoreError> {
        let end = CommandEnd::decided(reason);
        if let Some(command) = self.running.begin_end(id, &end) {
            self.gateway
                .release_channel(command.agent, &command.channel);
            self.record_end(id, command, end).await?;
        }
        Ok(())
    }

    /// Stores a command's end with its `command_end` entry (the reason, if any, as its
    /// detail), then wakes its waiters.
    async fn record_end(
        &self,
        id: CommandId,
        command: RunningCommand,
        end: CommandEnd,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
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
            finished_at: now,
            stdout_bytes: command.stdout.written,
            stderr_bytes: command.stderr.written,
            stdout_truncated: command.stdout.truncated,
            stderr_truncated: command.stderr.truncated,
        };
        let duration = now.since(command.started_at);
        let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let mut event = AuditEvent::new(now, AuditAction::CommandEnd);
        event.user = Some(command.owner);
        event.agent = Some(command.agent);
        event.session = Some(command.session);
        event.detail = reason.map(|r| r.as_str().to_owned());
        event.command = Some(CommandAudit {
            command_id: Some(id),
            text: Some(command.text.clone()),
            status: Some(status.as_str().to_owned()),
            exit_code,
            stdout_bytes: Some(command.stdout.written),
            stderr_bytes: Some(command.stderr.written),
            duration_ms: Some(duration_ms),
        });
        tracing::info!(command_id = %id, session_id = %command.session, status = status.as_str(), end_reason = reason.map(CommandEndReason::as_str), exit_code = ?exit_code, duration_ms, "command ended");
        self.store_end(id, outcome, event).await
    }

    /// Stores an end with its entry (one transaction) and wakes the command's waiters; when
    /// the store refuses, keeps them to store again. The command's output goes first: while
    /// chunks of it wait in the spool the end waits too (kept like a refused end), up to
    /// [`END_PATIENCE`]; after that what still waits is given up, and the end says the
    /// output is truncated.
    async fn store_end(
        &self,
        id: CommandId,
        mut outcome: CommandOutcome,
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        // While the store refuses, an end whose output waits is kept at once (maintenance
        // flushes the output, then stores it): trying would only stall its connection.
        let flushed = if self.output_spool.refusing() && self.output_spool.waiting(id) {
            Ok(false)
        } else {
            self.flush_output(id).await
        };
        if !matches!(flushed, Ok(true)) {
            if !self.output_spool.end_waited(id, END_PATIENCE) {
                tracing::warn!(command_id = %id, error = ?flushed.as_ref().err().map(ToString::to_string), "a command's end waits for its output to be stored; kept to store again");
                self.running.keep_unstored(id, outcome, event);
                return flushed.map(|_| ());
            }
            self.output_spool.give_up(id);
        }
        let (stdout, stderr) = self.output_spool.lost(id);
        outcome.stdout_truncated |= stdout.given_up;
        outcome.stderr_truncated |= stderr.given_up;
        for (stream, lost, written) in [
            ("stdout", stdout, outcome.stdout_bytes),
            ("stderr", stderr, outcome.stderr_bytes),
        ] {
            if lost.given_up {
                tracing::error!(command_id = %id, stream, written, lost_chunks = lost.chunks, lost_bytes = lost.bytes, "output the store refused could not be kept: the command is stored as truncated, its stored output a prefix of what it wrote");
            }
        }
        match self.commands.finish_command(id, &outcome, &event).await {
            Ok(_) => {
                self.output_spool.finish(id);
                self.running.ended(id);
                Ok(())
            }
            Err(e) => {
                tracing::error!(command_id = %id, error = %e, source = ?std::error::Error::source(&e), "storing a command's end failed; kept to store again");
                self.running.keep_unstored(id, outcome, event);
                Err(e)
            }
        }
    }

    /// Writes the output the store refused before, then stores the ends it refused before
    /// (maintenance). Every command is tried; the first error is returned.
    pub(crate) async fn store_unstored_ends(&self) -> Result<(), StoreError> {
        let mut first = Ok(());
        for id in self.output_spool.commands() {
            if let Err(e) = self.flush_output(id).await {
                first = first.and(Err(e));
            }
        }
        for (id, outcome, event) in self.running.unstored() {
            if let Err(e) = self.store_end(id, outcome, event).await {
                first = first.and(Err(e));
            }
        }
        first
    }

    /// Stores chunk `seq` of a stream: behind any chunk of it still waiting, kept in the
    /// spool when the store refuses it.
    async fn store_output(&self, id: CommandId, stream: OutputStream, seq: u64, data: Bytes) {
        match self.output_spool.push(id, stream, seq, data) {
            Pushed::Queued => {}
            Pushed::Dropped => return,
            Pushed::Overflow(lost) => {
                tracing::error!(command_id = %id, stream = stream.as_str(), lost_chunks = lost.chunks, lost_bytes = lost.bytes, "the output spool is full: this stream's output is no longer stored (the command will be marked truncated)");
                return;
            }
        }
        if self.output_spool.refusing() {
            // The store is refusing: maintenance writes it, in order, behind what waits.
            return;
        }
        if let Err(e) = self.flush_stream(id, stream).await {
            tracing::error!(command_id = %id, stream = stream.as_str(), error = %e, source = ?std::error::Error::source(&e), "storing command output failed; kept in the spool to store again");
        }
    }

    /// Writes what waits of `id`'s output, in order; stops at the first refusal. False when
    /// a chunk of it is still being written by another task.
    async fn flush_output(&self, id: CommandId) -> Result<bool, StoreError> {
        self.flush_stream(id, OutputStream::Stdout).await?;
        self.flush_stream(id, OutputStream::Stderr).await?;
        Ok(!self.output_spool.waiting(id))
    }

    async fn flush_stream(&self, id: CommandId, stream: OutputStream) -> Result<(), StoreError> {
        while let Some(head) = self.output_spool.claim(id, stream) {
            let written = match self
                .commands
                .append_output(id, stream, head.seq, &head.data)
                .await
            {
                // The chunk is stored already (an earlier attempt that reported failure).
                Ok(()) | Err(StoreError::Conflict) => Ok(()),
                Err(e) => Err(e),
            };
            if let Some(lost) = head.settle(written.is_ok()) {
                tracing::error!(command_id = %id, stream = stream.as_str(), lost_chunks = lost.chunks, lost_bytes = lost.bytes, "the output spool is full: this stream's output is no longer stored (the command will be marked truncated)");
            }
            written?;
        }
        Ok(())
    }

    /// Ends every running command of a session that closed for `reason`, with that reason
    /// (a closed tunnel cancels them; one gone with its agent fails them: see
    /// [`CommandEndReason::status`]).
    pub(crate) async fn end_session_commands(&self, session: SessionId, reason: CloseReason) {
        let reason = CommandEndReason::SessionClosed(reason);
        // Terminals first: they are told why before the agent's tunnel (and with it their
        // link) goes, which callers do after this.
        let why = if reason.status() == CommandStatus::Failed {
            rmm_domain::TerminalEnd::AgentDisconnected
        } else {
            rmm_domain::TerminalEnd::SessionClosed
        };
        self.end_session_terminals(session, why).await;
        for id in self.running.of_session(session) {
            // A refused end is logged and kept for maintenance.
            let _ = self.end_command(id, reason).await;
        }
        self.streams.end_session(session);
    }

    /// Ends commands whose agent stayed silent past their timeout (plus a grace period).
    pub(crate) async fn end_overdue_commands(&self, now: Timestamp) {
        for (id, agent, channel) in self.running.overdue(now, TIMEOUT_GRACE) {
            tracing::warn!(command_id = %id, "command ran past its timeout without an end from the agent");
            self.gateway.cancel_command(agent, &channel);
            // A refused end is logged and kept for maintenance.
            let _ = self.end_command(id, CommandEndReason::Timeout).await;
        }
    }
}
