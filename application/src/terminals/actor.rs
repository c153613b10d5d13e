//! The task that runs one terminal (see the module above for what it guarantees).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use rmm_domain::{ChannelId, TerminalEnd};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use super::recorder::Recorder;
use super::{CLOSE_WAIT, REPLAY_BYTES, audit_entry, end_detail};
use crate::app::{App, Ports};
use crate::live_terminals::{
    Attachment, Cmd, TerminalExit, TerminalFrame, TerminalInput, TerminalView,
};
use crate::ports::{AgentGateway, AuditAction, AuditLog, Clock, PtyEvent, PtyLink};

/// Frames queued for the owner's socket. Small: the owner's reading paces the agent.
const OWNER_QUEUE: usize = 8;
/// Frames queued for a watcher; one that falls further behind is dropped.
const WATCHER_QUEUE: usize = 256;
/// Output handed on but not yet acknowledged to the agent, at most.
const ACK_EVERY: u64 = 64 * 1024;
/// Output counts as session activity at most this often.
const ACTIVITY_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// How often buffered recording is written.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) struct TerminalActor<P: Ports> {
    app: Arc<App<P>>,
    view: TerminalView,
    link: PtyLink,
    cmds: mpsc::Receiver<Cmd>,
    /// Handed to the owner's attachments for resizes.
    cmds_tx: mpsc::Sender<Cmd>,
    attached: Arc<AtomicBool>,
    owner: Option<mpsc::Sender<TerminalFrame>>,
    watchers: Vec<mpsc::Sender<TerminalFrame>>,
    /// Output received but not yet handed to the owner (their queue was full).
    pending: Option<Bytes>,
    replay: VecDeque<u8>,
    /// Output bytes received, handed on, and acknowledged to the agent.
    received: u64,
    handed: u64,
    acked: u64,
    /// When a detached terminal is ended.
    grace_until: Option<Instant>,
    /// Asked to end: why, who waits, and when to stop waiting for the agent.
    closing: Option<(TerminalEnd, Instant)>,
    waiters: Vec<oneshot::Sender<TerminalExit>>,
    recorder: Recorder<P>,
    /// When output next counts as session activity.
    next_activity: Instant,
}

impl<P: Ports> std::fmt::Debug for TerminalActor<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalActor")
            .field("terminal", &self.view.id)
            .finish_non_exhaustive()
    }
}

impl<P: Ports> TerminalActor<P> {
    pub(crate) fn new(
        app: Arc<App<P>>,
        view: TerminalView,
        link: PtyLink,
        cmds: mpsc::Receiver<Cmd>,
        cmds_tx: mpsc::Sender<Cmd>,
        attached: Arc<AtomicBool>,
    ) -> Self {
        let recorder = Recorder::new(Arc::clone(&app), &view);
        let grace = app.config.terminal_grace;
        Self {
            app,
            view,
            link,
            cmds,
            cmds_tx,
            attached,
            owner: None,
            watchers: Vec::new(),
            pending: None,
            replay: VecDeque::new(),
            received: 0,
            handed: 0,
            acked: 0,
            grace_until: Some(Instant::now() + grace),
            closing: None,
            waiters: Vec::new(),
            recorder,
            next_activity: Instant::now(),
        }
    }

    pub(crate) async fn run(mut self) {
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let far = Instant::now() + std::time::Duration::from_secs(86_400 * 365);
        let exit = loop {
            let owner = self.owner.clone();
            let owner_gone = owner_closed(owner.clone());
            let room = owner_room(owner, self.pending.is_some());
            let take_output = self.pending.is_none() && self.recorder.may_take();
            let grace = self.grace_until.filter(|_| self.closing.is_none());
            let give_up = self.closing.map(|(_, at)| at);
            tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    Some(cmd) => self.on_cmd(cmd),
                    // Every handle is gone: only the task itself kept one; unreachable.
                    None => self.close(TerminalEnd::Closed),
                },
                permit = room => {
                    if let (Ok(permit), Some(bytes)) = (permit, self.pending.take()) {
                        let n = bytes.len() as u64;
                        permit.send(TerminalFrame::Output(bytes));
                        self.handed_on(n);
                    }
                }
                () = owner_gone => self.detach(),
                event = self.link.events.recv(), if take_output => match event {
                    Some(PtyEvent::Output(bytes)) => self.on_output(bytes).await,
                    Some(PtyEvent::Ready) => {}
                    Some(PtyEvent::Exit { exit_code, signal }) => {
                        let end = self.closing.map_or(TerminalEnd::Exited, |(end, _)| end);
                        break TerminalExit { end, exit_code, signal };
                    }
                    Some(PtyEvent::Failed(why)) => {
                        tracing::warn!(terminal_id = %self.view.id, why = %why, "terminal failed");
                        break self.ended(TerminalEnd::Failed);
                    }
                    None => {
                        // A close asked for just before the link went says why it went.
                        while let Ok(cmd) = self.cmds.try_recv() {
                            self.on_cmd(cmd);
                        }
                        break self.ended(self.closing.map_or(TerminalEnd::AgentDisconnected, |(end, _)| end));
                    }
                },
                () = sleep_until(grace.unwrap_or(far)), if grace.is_some() => {
                    tracing::info!(terminal_id = %self.view.id, "nobody attached within the grace period: ending the terminal");
                    self.close(TerminalEnd::GraceExpired);
                }
                () = sleep_until(give_up.unwrap_or(far)), if give_up.is_some() => {
                    tracing::warn!(terminal_id = %self.view.id, "the agent did not report the terminal's end in time");
                    break self.ended(self.closing.map_or(TerminalEnd::Closed, |(end, _)| end));
                }
                _ = flush.tick() => self.recorder.flush().await,
            }
        };
        self.finish(exit).await;
    }

    fn ended(&self, end: TerminalEnd) -> TerminalExit {
        TerminalExit {
            end,
            exit_code: None,
            signal: None,
        }
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Attach {
                watch,
                since,
                reply,
            } => {
                let attachment = self.attach(watch, since);
                let _ = reply.send(attachment);
            }
            Cmd::Resized(size) => self.recorder.resize(size),
            Cmd::Close { end, reply } => {
                if let Some(reply) = reply {
                    self.waiters.push(reply);
                }
                self.close(end);
            }
        }
    }

    fn close(&mut self, end: TerminalEnd) {
        if self.closing.is_none() {
            self.closing = Some((end, Instant::now() + CLOSE_WAIT));
            let _ = self.link.close.send(true);
        }
    }

    fn attach(&mut self, watch: bool, since: Option<u64>) -> Attachment {
        let capacity = if watch { WATCHER_QUEUE } else { OWNER_QUEUE };
        let (tx, frames) = mpsc::channel(capacity);
        // The replay starts where the client says it is, when we still hold that output;
        // else at the oldest byte we hold.
        let oldest = self.received - self.replay.len() as u64;
        let start = since
            .filter(|s| (oldest..=self.received).contains(s))
            .unwrap_or(oldest);
        let skip = usize::try_from(start - oldest).unwrap_or(0);
        let replay: Vec<u8> = self.replay.iter().skip(skip).copied().collect();
        if !replay.is_empty() {
            let _ = tx.try_send(TerminalFrame::Output(Bytes::from(replay)));
        }
        if watch {
            self.watchers.push(tx);
            return Attachment {
                frames,
                input: None,
                start,
            };
        }
        if let Some(old) = self.owner.replace(tx) {
            let _ = old.try_send(TerminalFrame::Replaced);
        }
        // What was waiting for the old owner is in the replay the new one just got.
        if let Some(bytes) = self.pending.take() {
            self.handed_on(bytes.len() as u64);
        }
        self.grace_until = None;
        self.attached.store(true, Ordering::Relaxed);
        Attachment {
            frames,
            input: Some(TerminalInput {
                control: self.link.control.clone(),
                cmds: self.cmds_tx.clone(),
            }),
            start,
        }
    }

    fn detach(&mut self) {
        self.owner = None;
        self.attached.store(false, Ordering::Relaxed);
        if let Some(bytes) = self.pending.take() {
            self.handed_on(bytes.len() as u64);
        }
        self.grace_until = Some(Instant::now() + self.app.config.terminal_grace);
        tracing::info!(terminal_id = %self.view.id, grace_secs = self.app.config.terminal_grace.as_secs(), "terminal detached; it lives on for the grace period");
    }

    async fn on_output(&mut self, bytes: Bytes) {
        self.received += bytes.len() as u64;
        // A terminal in use keeps its session from idling out (input echoes as output).
        let now = Instant::now();
        if now >= self.next_activity {
            self.app.session_activity(self.view.session);
            self.next_activity = now + ACTIVITY_EVERY;
        }
        self.recorder.output(&bytes).await;
        self.remember(&bytes);
        self.watchers
            .retain(|w| w.try_send(TerminalFrame::Output(bytes.clone())).is_ok());
        let n = bytes.len() as u64;
        match &self.owner {
            Some(owner) => match owner.try_send(TerminalFrame::Output(bytes)) {
                Ok(()) => self.handed_on(n),
                Err(mpsc::error::TrySendError::Full(TerminalFrame::Output(bytes))) => {
                    self.pending = Some(bytes);
                    // Waiting for the owner: grant what they already took.
                    self.grant();
                }
                Err(_) => self.handed_on(n),
            },
            None => self.handed_on(n),
        }
    }

    fn remember(&mut self, bytes: &[u8]) {
        let keep = bytes.len().min(REPLAY_BYTES);
        self.replay.extend(&bytes[bytes.len() - keep..]);
        let over = self.replay.len().saturating_sub(REPLAY_BYTES);
        self.replay.drain(..over);
    }

    /// `n` more bytes were handed on: grant the agent credit every [`ACK_EVERY`] bytes and
    /// whenever we have caught up.
    fn handed_on(&mut self, n: u64) {
        self.handed += n;
        if self.handed - self.acked >= ACK_EVERY || self.link.events.is_empty() {
            self.grant();
        }
    }

    /// Grants the agent credit for everything handed on.
    fn grant(&mut self) {
        if self.handed > self.acked {
            self.acked = self.handed;
            let _ = self.link.acks.send(self.handed);
        }
    }

    /// The terminal ended: its recording closed, its end audited, its clients told.
    async fn finish(mut self, exit: TerminalExit) {
        self.app.terminals.remove(self.view.id);
        // Frees the channel even when the agent never reported the end (a no-op after it).
        self.app
            .gateway
            .release_channel(self.view.agent, &ChannelId::for_terminal(self.view.id));
        self.recorder.finish().await;
        let entry = audit_entry(
            &self.view,
            self.app.clock.now(),
            AuditAction::TerminalClose,
            self.view.owner,
            end_detail(&self.view, &exit, self.received),
        );
        if let Err(e) = self.app.audit.append(&entry).await {
            tracing::error!(terminal_id = %self.view.id, error = %e, "could not audit the end of a terminal");
        }
        let last = match (exit.end, exit.exit_code, exit.signal) {
            (
                TerminalEnd::Exited | TerminalEnd::Closed | TerminalEnd::GraceExpired,
                code,
                signal,
            ) if code.is_some() || signal.is_some() => TerminalFrame::Exit {
                exit_code: code,
                signal,
            },
            (end, ..) => TerminalFrame::Ended(end),
        };
        if let (Some(bytes), Some(owner)) = (self.pending.take(), &self.owner) {
            let _ = owner.send(TerminalFrame::Output(bytes)).await;
        }
        for client in self.owner.iter().chain(&self.watchers) {
            let _ = client.try_send(last.clone());
        }
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(exit);
        }
        tracing::info!(terminal_id = %self.view.id, reason = exit.end.as_str(), exit_code = ?exit.exit_code, signal = ?exit.signal, output_bytes = self.received, "terminal ended");
    }
}

/// Resolves when the owner's socket is gone; never without an owner.
async fn owner_closed(owner: Option<mpsc::Sender<TerminalFrame>>) {
    match owner {
        Some(owner) => owner.closed().await,
        None => std::future::pending().await,
    }
}

/// Resolves with room in the owner's queue when output waits for it.
async fn owner_room(
    owner: Option<mpsc::Sender<TerminalFrame>>,
    waiting: bool,
) -> Result<mpsc::OwnedPermit<TerminalFrame>, mpsc::error::SendError<()>> {
    match owner {
        Some(owner) if waiting => owner
            .reserve_owned()
            .await
            .map_err(|_| mpsc::error::SendError(())),
        _ => std::future::pending().await,
    }
}
