//! One terminal from `pty_open` to `pty_exit`: the process on its PTY, output under credit,
//! input and resizes written to the master, the hang-up sequence on close, and the drain of
//! the last output after the process exits.

use std::process::ExitStatus;
use std::time::Duration;

use bytes::Bytes;
use pty_process::{Size, WritePty};
use rmm_protocol::AgentMessage;
use tokio::io::AsyncWriteExt as _;
use tokio::process::Child;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Control;
use super::output::{Progress, pump};
use super::shell::open;
use crate::Event;
use crate::exec::KillTimings;
use crate::exec::kill::{Group, Kill, sleep_until};
use crate::input::InputReceiver;
use crate::tunnel::PtyRequest;

/// Runs the terminal to its end: `pty_ready`, output frames, then `pty_exit` (or a
/// `tunnel_error` when it could not start).
pub(super) async fn run(
    request: PtyRequest,
    out: &mpsc::Sender<Event>,
    control: Control,
    timings: KillTimings,
) {
    let channel = request.channel.as_str();
    let (mut pty, mut child) = match open(&request) {
        Ok(started) => started,
        Err(e) => {
            tracing::warn!(channel_id = %channel, error = %e, "terminal could not be started");
            let refusal = AgentMessage::TunnelError {
                channel_id: channel.to_owned(),
                error: format!("cannot start the terminal: {e}"),
            };
            let _ = out.send(Event::Frame(refusal)).await;
            return;
        }
    };
    let mut group = Group::of(&child);
    tracing::info!(channel_id = %channel, pid = ?child.id(), cols = request.cols, rows = request.rows, command = ?request.command, "terminal started");
    let ready = AgentMessage::PtyReady {
        channel_id: channel.to_owned(),
    };
    let _ = out.send(Event::Frame(ready)).await;

    let Control {
        mut stop,
        acks,
        mut sizes,
        mut input,
    } = control;
    let (reader, mut writer) = pty.split();
    let progress = Progress::new();
    let mut output = std::pin::pin!(pump(reader, acks, channel, out, &progress));
    let mut feed = std::pin::pin!(feed(&mut writer, &mut input, &mut sizes, channel, out));
    let mut hangup = Hangup::new(timings);
    let mut status = None;
    let mut drained = false;
    // Done when the process has exited AND its output is read to the end (or given up on).
    while status.is_none() || !drained {
        let drain_deadline = status.is_some().then(|| progress.last() + timings.drain);
        tokio::select! {
            waited = child.wait(), if status.is_none() => {
                progress.mark();
                status = Some(waited);
            }
            () = &mut output, if !drained => drained = true,
            () = &mut feed => {}
            // A dropped sender is the connection's registry going away: hang up too.
            _ = &mut stop, if !hangup.started() => {
                tracing::info!(channel_id = %channel, "closing terminal");
                hangup.next(&group, &mut child);
            }
            // Also after the leader's exit: a member that ignores the hangup may still hold
            // the PTY (and so the drain) open.
            () = sleep_until(hangup.deadline) => hangup.next(&group, &mut child),
            () = sleep_until(drain_deadline) => {
                if progress.last() + timings.drain <= Instant::now() {
                    tracing::warn!(channel_id = %channel, "terminal output still open after its process exited (held by another process, or the server grants no credit); not waiting for it");
                    drained = true;
                }
            }
        }
    }
    if hangup.started() {
        // The leader is gone; no member of a closed terminal's group may outlive the close.
        group.signal(&mut child, Kill::Hard);
    }
    group.disarm();
    report_exit(out, channel, status).await;
}

/// Writes the server's input to the PTY master in order, acknowledging it, and applies
/// resizes, even while a write waits for the process to read. Never resolves: the terminal's
/// end drops it.
async fn feed(
    writer: &mut WritePty<'_>,
    input: &mut InputReceiver,
    sizes: &mut watch::Receiver<(u16, u16)>,
    channel: &str,
    out: &mpsc::Sender<Event>,
) {
    let mut pending = Bytes::new();
    let mut more_input = true;
    let mut more_sizes = true;
    let mut broken = false;
    loop {
        let chunk = pending.clone();
        tokio::select! {
            // A resize the server sent before input takes effect before it.
            biased;
            changed = sizes.changed(), if more_sizes => match changed {
                Ok(()) => {
                    let (cols, rows) = *sizes.borrow_and_update();
                    if let Err(e) = writer.resize(Size::new(rows, cols)) {
                        tracing::warn!(channel_id = %channel, error = %e, "cannot resize the terminal");
                    }
                }
                Err(_) => more_sizes = false,
            },
            next = input.recv(), if more_input && pending.is_empty() => match next {
                Some(bytes) if broken => {
                    drop(bytes);
                    input.written(out).await;
                }
                Some(bytes) => pending = bytes,
                None => more_input = false,
            },
            wrote = writer.write(&chunk), if !pending.is_empty() => {
                match wrote {
                    Ok(n) => {
                        let _ = pending.split_to(n.min(pending.len()));
                    }
                    Err(e) => {
                        // The PTY's other end is gone (the process exited): discard and ack.
                        tracing::debug!(channel_id = %channel, error = %e, "terminal input not written");
                        broken = true;
                        pending.clear();
                    }
                }
                if pending.is_empty() {
                    input.written(out).await;
                }
            }
            () = std::future::pending(), if !more_input && !more_sizes => {}
        }
    }
}

/// The close sequence: SIGHUP (the terminal hung up), then SIGTERM, then SIGKILL, to the
/// process group, each after the grace.
#[derive(Debug)]
struct Hangup {
    grace: Duration,
    sent: Option<Kill>,
    deadline: Option<Instant>,
}

impl Hangup {
    fn new(timings: KillTimings) -> Self {
        Self {
            grace: timings.grace,
            sent: None,
            deadline: None,
        }
    }

    fn started(&self) -> bool {
        self.sent.is_some()
    }

    /// The next signal of the sequence.
    fn next(&mut self, group: &Group, child: &mut Child) {
        let signal = match self.sent {
            None => Kill::Hangup,
            Some(Kill::Hangup) => Kill::Soft,
            Some(Kill::Soft | Kill::Hard) => Kill::Hard,
        };
        group.signal(child, signal);
        self.sent = Some(signal);
        self.deadline = (signal != Kill::Hard)
            .then(|| Instant::now().checked_add(self.grace))
            .flatten();
    }
}

/// `pty_exit`, queued: the exit code, or the number of the signal that killed the process.
async fn report_exit(
    out: &mpsc::Sender<Event>,
    channel: &str,
    status: Option<std::io::Result<ExitStatus>>,
) {
    let (exit_code, signal) = match status {
        Some(Ok(status)) => {
            use std::os::unix::process::ExitStatusExt as _;
            (status.code(), status.signal())
        }
        Some(Err(e)) => {
            tracing::warn!(channel_id = %channel, error = %e, "cannot read the terminal's exit status");
            (None, None)
        }
        None => (None, None),
    };
    tracing::info!(channel_id = %channel, exit_code = ?exit_code, signal = ?signal, "terminal ended");
    let exit = AgentMessage::PtyExit {
        channel_id: channel.to_owned(),
        exit_code,
        signal,
    };
    let _ = out.send(Event::Frame(exit)).await;
}
