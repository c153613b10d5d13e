//! The commands running now, in memory: where their output goes, how much of it was
//! written and stored, their lifecycle, and a completion signal for waiters. The lock is
//! never held across an `.await`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rmm_domain::{
    AgentId, ChannelId, CommandEnd, CommandId, CommandRun, SessionId, Timestamp, UserId,
};
use tokio::sync::watch;

use crate::ports::{AuditEvent, CommandOutcome, OutputChunk};

/// One running command.
#[derive(Debug, Clone)]
pub(crate) struct RunningCommand {
    pub(crate) session: SessionId,
    pub(crate) agent: AgentId,
    pub(crate) owner: UserId,
    pub(crate) channel: ChannelId,
    pub(crate) text: String,
    pub(crate) started_at: Timestamp,
    pub(crate) deadline: Timestamp,
    pub(crate) stdout: StreamCounters,
    pub(crate) stderr: StreamCounters,
    /// Running, then its end. Once it has an end it stays listed (so `?wait=` still finds
    /// it) until the end is stored, but nothing may end it twice.
    pub(crate) run: CommandRun,
    pub(crate) done: watch::Sender<bool>,
    /// Its end and that end's entry, when the store refused them: kept (the command stays
    /// running as stored, and listed here) until maintenance stores them.
    pub(crate) unstored: Option<(CommandOutcome, AuditEvent)>,
    /// Started with its stdin open, and whether a client has taken it (one upload per
    /// command).
    pub(crate) stdin: StdinState,
}

/// Whether a command's stdin may be fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StdinState {
    Closed,
    Open,
    Taken,
}

/// Bytes of one output stream: written by the process, stored, and the next chunk's number.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StreamCounters {
    pub(crate) written: u64,
    stored: u64,
    next_seq: u64,
    pub(crate) truncated: bool,
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

/// What to write for one output chunk, decided under the lock.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) id: CommandId,
    pub(crate) session: SessionId,
    /// Bytes to store of each stream, and the chunk's number.
    pub(crate) stdout: (usize, u64),
    pub(crate) stderr: (usize, u64),
    /// The chunk was the command's last: its end, and the command as it ended.
    pub(crate) end: Option<(CommandEnd, RunningCommand)>,
}

/// A cancel to send: where the command runs, whether it is ending already (then there is
/// nothing to cancel, only an end to wait for), and the command's completion signal.
pub(crate) struct CancelTarget {
    pub(crate) agent: AgentId,
    pub(crate) channel: ChannelId,
    pub(crate) ending: bool,
    pub(crate) done: watch::Receiver<bool>,
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

    /// Lists a command. When another command of its agent holds its channel (a watcher chose
    /// the id) nothing changes and the command is handed back.
    pub(crate) fn register(
        &self,
        id: CommandId,
        command: RunningCommand,
    ) -> Result<(), Box<RunningCommand>> {
        let mut inner = self.lock();
        let key = (command.agent, command.channel.clone());
        if inner.by_channel.contains_key(&key) {
            return Err(Box::new(command));
        }
        inner.by_channel.insert(key, id);
        inner.commands.insert(id, command);
        Ok(())
    }

    /// Counts a chunk of output from `agent` on `channel` and, when it is the last, takes
    /// the end it carries. `None` when no running command of that agent owns the channel.
    pub(crate) fn admit_output(
        &self,
        agent: AgentId,
        channel: &ChannelId,
        chunk: &OutputChunk,
        cap: u64,
    ) -> Option<Admitted> {
        let mut inner = self.lock();
        let key = (agent, channel.clone());
        let id = *inner.by_channel.get(&key)?;
        let command = inner.commands.get_mut(&id)?;
        let stdout = command.stdout.admit(chunk.stdout.len(), cap);
        let stderr = command.stderr.admit(chunk.stderr.len(), cap);
        let session = command.session;
        let end = chunk.exit_code.and_then(|exit_code| {
            let end = CommandEnd::reported(
                exit_code,
                chunk.signal.clone(),
                chunk.end_reason.as_deref(),
                command.run.cancel_requested(),
            );
            command.run.end(&end).ok()?;
            Some((end, command.clone()))
        });
        if chunk.exit_code.is_some() {
            inner.by_channel.remove(&key);
        }
        Some(Admitted {
            id,
            session,
            stdout,
            stderr,
            end,
        })
    }

    /// Starts ending a command with `end`: its channel stops taking output; the command
    /// stays listed until [`Self::ended`]. `None` when it is not running or has an end.
    pub(crate) fn begin_end(&self, id: CommandId, end: &CommandEnd) -> Option<RunningCommand> {
        let mut inner = self.lock();
        let command = inner.commands.get_mut(&id)?;
        command.run.end(end).ok()?;
        let command = command.clone();
        inner
            .by_channel
            .remove(&(command.agent, command.channel.clone()));
        Some(command)
    }

    /// The store refused the end of `id` (taken with [`Self::begin_end`] or from the last
    /// chunk): keep it to store later.
    pub(crate) fn keep_unstored(&self, id: CommandId, outcome: CommandOutcome, event: AuditEvent) {
        if let Some(command) = self.lock().commands.get_mut(&id) {
            command.unstored = Some((outcome, event));
        }
    }

    /// Lists a command that never ran (its channel was taken) only to store its end later,
    /// the store having refused it: it holds no channel.
    pub(crate) fn park_unstored(&self, id: CommandId, command: RunningCommand) {
        self.lock().commands.entry(id).or_insert(command);
    }

    /// The ends the store refused, to try again.
    pub(crate) fn unstored(&self) -> Vec<(CommandId, CommandOutcome, AuditEvent)> {
        self.lock()
            .commands
            .iter()
            .filter_map(|(id, c)| {
                let (outcome, event) = c.unstored.clone()?;
                Some((*id, outcome, event))
            })
            .collect()
    }

    /// Whether `id` ended but the store has not taken its end yet.
    pub(crate) fn is_unstored(&self, id: CommandId) -> bool {
        self.lock()
            .commands
            .get(&id)
            .is_some_and(|c| c.unstored.is_some())
    }

    /// The end is stored: forget the command and wake its waiters.
    pub(crate) fn ended(&self, id: CommandId) {
        if let Some(command) = self.lock().commands.remove(&id) {
            let _ = command.done.send(true);
        }
    }

    /// The command running on `agent`'s `channel`.
    pub(crate) fn on_channel(&self, agent: AgentId, channel: &ChannelId) -> Option<CommandId> {
        self.lock()
            .by_channel
            .get(&(agent, channel.clone()))
            .copied()
    }

    /// Takes the stdin of a running command of `session` (once): where it runs.
    pub(crate) fn take_stdin(
        &self,
        id: CommandId,
        session: SessionId,
    ) -> Option<(AgentId, ChannelId)> {
        let mut inner = self.lock();
        let command = inner
            .commands
            .get_mut(&id)
            .filter(|c| c.session == session && c.run.status().is_running())?;
        if command.stdin != StdinState::Open {
            return None;
        }
        command.stdin = StdinState::Taken;
        Some((command.agent, command.channel.clone()))
    }

    /// The commands running in `session`.
    pub(crate) fn of_session(&self, session: SessionId) -> Vec<CommandId> {
        self.lock()
            .commands
            .iter()
            .filter(|(_, c)| c.session == session)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Commands still running (without an end) `grace` past their deadline at `now`, with
    /// where they run.
    pub(crate) fn overdue(
        &self,
        now: Timestamp,
        grace: Duration,
    ) -> Vec<(CommandId, AgentId, ChannelId)> {
        self.lock()
            .commands
            .iter()
            .filter(|(_, c)| c.run.status().is_running() && now >= c.deadline.plus(grace))
            .map(|(id, c)| (*id, c.agent, c.channel.clone()))
            .collect()
    }

    /// A waiter's view of a command's completion; `None` when it is not listed.
    pub(crate) fn subscribe(&self, id: CommandId) -> Option<watch::Receiver<bool>> {
        self.lock().commands.get(&id).map(|c| c.done.subscribe())
    }

    /// Notes a cancel request for a command of `session`.
    pub(crate) fn request_cancel(&self, id: CommandId, session: SessionId) -> Option<CancelTarget> {
        let mut inner = self.lock();
        let command = inner
            .commands
            .get_mut(&id)
            .filter(|c| c.session == session)?;
        let ending = command.run.request_cancel().is_err();
        Some(CancelTarget {
            agent: command.agent,
            channel: command.channel.clone(),
            ending,
            done: command.done.subscribe(),
        })
    }
}
