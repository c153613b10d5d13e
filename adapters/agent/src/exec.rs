//! Runs the commands of a tunnel: one task per command, the platform shell, stdin closed (or,
//! with `stdin: true`, a pipe fed from the server's data frames; see [`crate::input`]), its
//! own process group, stdout and stderr streamed as `terminal_output` frames while they are
//! produced, and exactly one final frame with the exit code. A timeout, a `command_cancel`, a
//! `tunnel_close` or the loss of the connection kills the whole process group (grandchildren
//! too): SIGTERM, a grace period, then SIGKILL.
//!
//! Frames go into the connection's bounded queue ([`Event`]); awaiting room there is the
//! backpressure that keeps a flood of output from growing memory (the pipe fills, the process
//! blocks on write). It must not know about the socket or the tunnel's rules: [`TunnelState`]
//! decides what may run, this module only runs it.
//!
//! Unix is tested here. Windows runs `cmd /C` and can only kill the shell itself (a process
//! tree needs a job object); it is compiled behind `cfg(windows)` and untested.
//!
//! [`TunnelState`]: super::TunnelState

pub(crate) mod kill;
mod output;
mod spawn;
#[cfg(target_os = "linux")]
pub mod supervise;
#[cfg(test)]
#[cfg(target_os = "linux")]
pub(crate) mod tests;

use std::collections::HashMap;
use std::time::Duration;

use rmm_domain::ChannelId;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::Event;
use crate::input::{InputReceiver, InputSender, input};
use bytes::Bytes;
use kill::{KillSequence, sleep_until};
use output::{Stream, pump, report_end};
#[cfg(target_os = "linux")]
pub use spawn::supervise_commands_with;
use spawn::{Spare, Started, start};

/// Why the agent killed a command; its `end_reason` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The command's `timeout_secs` passed.
    TimedOut,
    /// `command_cancel`, `tunnel_close`, the connection lost or the agent shutting down.
    Cancelled,
}

impl StopReason {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
        }
    }
}

/// How a kill proceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillTimings {
    /// Between SIGTERM and SIGKILL: time for the command to clean up.
    pub grace: Duration,
    /// After SIGKILL, how long to wait for the pipes to close. Only a process that left the
    /// group (`setsid`) can still hold them; after this we stop reading and report the end.
    pub drain: Duration,
}

impl Default for KillTimings {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(2),
            drain: Duration::from_secs(2),
        }
    }
}

/// Identifies one run of a command, so a late [`Event::CommandEnded`] of a killed command can
/// never close a channel that a newer command reuses.
pub type RunId = u64;

/// One command to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    pub channel: ChannelId,
    pub command: String,
    /// `None`: no limit (a server that predates the timeout extension, and no agent default).
    pub timeout: Option<Duration>,
    /// Extension (`command-stdin`): stdin is a pipe fed by the server; else `/dev/null`.
    pub stdin: bool,
    /// Extension (`command-binary-output`): stdout and stderr go in binary data frames.
    pub binary_output: bool,
}

/// The commands running for one connection. Dropping it stops every one of them (each task
/// sees its stop sender dropped and kills its process group).
#[derive(Debug)]
pub struct Commands {
    events: mpsc::Sender<Event>,
    timings: KillTimings,
    next_run: RunId,
    running: HashMap<RunId, Running>,
    /// A supervisor started ahead for the next command: made when a command ends, dropped
    /// (killed) when the tunnel closes, so only an agent in use keeps one.
    spare: Option<Spare>,
}

#[derive(Debug)]
struct Running {
    channel: ChannelId,
    stop: Option<oneshot::Sender<StopReason>>,
    /// Where the server's stdin bytes go, for a command started with `stdin: true`.
    stdin: Option<InputSender>,
    /// Data frames for a command without stdin were warned about (once per command).
    warned: bool,
    /// Its tunnel is gone (closed, or the connection lost): its channel is no longer in the
    /// tunnel state, so finishing must not release anything.
    detached: bool,
}

impl Commands {
    #[must_use]
    pub fn new(events: mpsc::Sender<Event>, timings: KillTimings) -> Self {
        Self {
            events,
            timings,
            next_run: 0,
            running: HashMap::new(),
            spare: None,
        }
    }

    /// Starts `spec` on its own task. The tunnel state has already admitted its channel.
    pub fn start(&mut self, spec: CommandSpec) {
        let run = self.next_run;
        self.next_run += 1;
        let (stop, stopped) = oneshot::channel();
        let channel = spec.channel.clone();
        let events = self.events.clone();
        let timings = self.timings;
        let (stdin, feed) = if spec.stdin {
            let (sender, receiver) = input(channel.as_str());
            (Some(sender), Some(receiver))
        } else {
            (None, None)
        };
        // Detached: the task ends by itself (the process exits or is killed); the registry
        // reaches it through `stop` and hears of its end through `Event::CommandEnded`.
        let spare = self.spare.take();
        tokio::spawn(async move {
            execute(spec, &events, stopped, timings, feed, spare).await;
            // After the final frame, in the same queue: the channel is released only once the
            // server has been told how the command ended.
            let _ = events.send(Event::CommandEnded(run)).await;
        });
        self.running.insert(
            run,
            Running {
                channel,
                stop: Some(stop),
                stdin,
                warned: false,
                detached: false,
            },
        );
    }

    /// A binary data frame on `channel`: bytes for the command's stdin. Dropped (with a
    /// warning, once per command) when the command was not started with `stdin: true`.
    pub fn stdin_data(&mut self, channel: &ChannelId, offset: u64, data: Bytes) {
        let Some(running) = self.live(channel) else {
            return;
        };
        match running.stdin.as_mut() {
            Some(stdin) => stdin.data(channel.as_str(), offset, data),
            None if !running.warned => {
                running.warned = true;
                tracing::warn!(channel_id = %channel, "data frame for a command without stdin dropped");
            }
            None => {}
        }
    }

    /// `stdin_end`: the command's stdin closes once what is queued is written.
    pub fn stdin_end(&mut self, channel: &ChannelId) {
        if let Some(stdin) = self.live(channel).and_then(|r| r.stdin.as_ref()) {
            stdin.end();
        }
    }

    fn live(&mut self, channel: &ChannelId) -> Option<&mut Running> {
        self.running
            .values_mut()
            .find(|running| !running.detached && running.channel == *channel)
    }

    /// `command_cancel`: kills the command on `channel`, if one runs there. Its final frame
    /// follows as usual.
    pub fn cancel(&mut self, channel: &ChannelId) {
        for running in self.running.values_mut() {
            if !running.detached && running.channel == *channel {
                running.stop_with(StopReason::Cancelled);
            }
        }
    }

    /// The tunnel closed or the connection ends: kills every command. Their final frames are
    /// still queued (sent if the socket is up); their channels are already gone.
    pub fn stop_all(&mut self, reason: StopReason) {
        self.spare = None;
        for running in self.running.values_mut() {
            running.detached = true;
            running.stop_with(reason);
        }
    }

    /// `run` sent its last frame: the channel to release in the tunnel state, unless its
    /// tunnel is already gone.
    pub fn finished(&mut self, run: RunId) -> Option<ChannelId> {
        let running = self.running.remove(&run)?;
        if running.detached {
            return None;
        }
        // After its final frame: the next command of this tunnel will likely follow soon.
        if self.spare.is_none() {
            self.spare = Spare::start();
        }
        Some(running.channel)
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.running.len()
    }
}

impl Running {
    fn stop_with(&mut self, reason: StopReason) {
        if let Some(stop) = self.stop.take() {
            // The task may have just ended on its own; then there is nothing to stop.
            let _ = stop.send(reason);
        }
    }
}

/// Runs one command to its end: output frames while it runs, then exactly one final frame
/// (or a `tunnel_error` when it could not even start). Returns when that frame is queued, or
/// when the connection is gone and only the kill was left to do. The command starts on
/// `spare` when it takes it.
pub(crate) async fn execute(
    spec: CommandSpec,
    out: &mpsc::Sender<Event>,
    mut stop: oneshot::Receiver<StopReason>,
    timings: KillTimings,
    input: Option<InputReceiver>,
    spare: Option<Spare>,
) {
    let channel = spec.channel.as_str();
    let Some(Started {
        mut child,
        mut group,
        stdout,
        stderr,
        stdin,
    }) = start(&spec, out, spare).await
    else {
        return;
    };
    // Dropped with this call: the command's end closes its stdin.
    let mut feed = std::pin::pin!(output::feed_stdin(stdin, input, channel, out));
    let mut pumps = std::pin::pin!(async {
        tokio::join!(
            pump(stdout, Stream::Stdout, channel, spec.binary_output, out),
            pump(stderr, Stream::Stderr, channel, spec.binary_output, out)
        );
    });

    let started = Instant::now();
    let mut status = None;
    let mut drained = false;
    let mut kill = KillSequence::new(started, spec.timeout, timings);
    // Done when the shell has exited AND both pipes hit EOF: a background child still writing
    // to our pipes is part of the command's output.
    while status.is_none() || !drained {
        tokio::select! {
            waited = child.wait(), if status.is_none() => status = Some(waited),
            () = &mut pumps, if !drained => drained = true,
            () = &mut feed => {}
            stopped = &mut stop, if kill.reason().is_none() => {
                // A dropped sender is the connection's registry going away: kill too.
                let why = stopped.unwrap_or(StopReason::Cancelled);
                tracing::info!(channel_id = %channel, reason = why.as_str(), "stopping command");
                kill.stop(why, &group, &mut child);
            }
            () = sleep_until(kill.deadline()) => {
                if kill.deadline_passed(channel, &group, &mut child) {
                    drained = true;
                }
            }
        }
    }
    kill.finish(&mut group, &mut child);
    report_end(out, channel, status, kill.reason(), started).await;
}
