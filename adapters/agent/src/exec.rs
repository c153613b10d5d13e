//! Runs the commands of a tunnel: one task per command, the platform shell, stdin closed, its
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

use std::collections::HashMap;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rmm_domain::ChannelId;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Event;
use super::chunker::Chunker;
use rmm_protocol::{AgentMessage, TerminalOutput, TunnelDataPayload};

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
}

/// The commands running for one connection. Dropping it stops every one of them (each task
/// sees its stop sender dropped and kills its process group).
#[derive(Debug)]
pub struct Commands {
    events: mpsc::Sender<Event>,
    timings: KillTimings,
    next_run: RunId,
    running: HashMap<RunId, Running>,
}

#[derive(Debug)]
struct Running {
    channel: ChannelId,
    stop: Option<oneshot::Sender<StopReason>>,
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
        // Detached: the task ends by itself (the process exits or is killed); the registry
        // reaches it through `stop` and hears of its end through `Event::CommandEnded`.
        tokio::spawn(async move {
            execute(spec, &events, stopped, timings).await;
            // After the final frame, in the same queue: the channel is released only once the
            // server has been told how the command ended.
            let _ = events.send(Event::CommandEnded(run)).await;
        });
        self.running.insert(
            run,
            Running {
                channel,
                stop: Some(stop),
                detached: false,
            },
        );
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
        for running in self.running.values_mut() {
            running.detached = true;
            running.stop_with(reason);
        }
    }

    /// `run` sent its last frame: the channel to release in the tunnel state, unless its
    /// tunnel is already gone.
    pub fn finished(&mut self, run: RunId) -> Option<ChannelId> {
        let running = self.running.remove(&run)?;
        (!running.detached).then_some(running.channel)
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

/// Where a kill stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// SIGTERM sent; SIGKILL at the deadline.
    Terminating,
    /// SIGKILL sent; stop waiting for the pipes at the deadline.
    Killed,
}

/// Runs one command to its end: output frames while it runs, then exactly one final frame
/// (or a `tunnel_error` when it could not even start). Returns when that frame is queued, or
/// when the connection is gone and only the kill was left to do.
pub async fn execute(
    spec: CommandSpec,
    out: &mpsc::Sender<Event>,
    mut stop: oneshot::Receiver<StopReason>,
    timings: KillTimings,
) {
    let channel = spec.channel.as_str();
    let mut child = match spawn(&spec.command) {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!(channel_id = %channel, error = %e, "command could not be started");
            send(
                out,
                AgentMessage::TunnelError {
                    channel_id: channel.to_owned(),
                    // The reference's wording for this case.
                    error: format!("Failed to execute command: {e}"),
                },
            )
            .await;
            return;
        }
    };
    let mut group = Group::of(&child);
    tracing::info!(channel_id = %channel, pid = ?child.id(), timeout_secs = ?spec.timeout.map(|t| t.as_secs()), "command started");
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        // Both were configured as pipes; spawn hands them out exactly once.
        group.signal(&mut child, Kill::Hard);
        send(
            out,
            error_frame(channel, "Failed to execute command: no output pipes"),
        )
        .await;
        return;
    };
    let mut pumps = std::pin::pin!(async {
        tokio::join!(
            pump(stdout, Stream::Stdout, channel, out),
            pump(stderr, Stream::Stderr, channel, out)
        );
    });

    let started = Instant::now();
    let mut status: Option<std::io::Result<ExitStatus>> = None;
    let mut drained = false;
    let mut reason: Option<StopReason> = None;
    let mut phase = Phase::Running;
    // An absurd timeout (beyond what `Instant` can hold) is no timeout.
    let mut deadline = spec.timeout.and_then(|t| started.checked_add(t));
    // Done when the shell has exited AND both pipes hit EOF: a background child still writing
    // to our pipes is part of the command's output.
    while status.is_none() || !drained {
        tokio::select! {
            waited = child.wait(), if status.is_none() => status = Some(waited),
            () = &mut pumps, if !drained => drained = true,
            stopped = &mut stop, if reason.is_none() => {
                // A dropped sender is the connection's registry going away: kill too.
                let why = stopped.unwrap_or(StopReason::Cancelled);
                tracing::info!(channel_id = %channel, reason = why.as_str(), "stopping command");
                reason = Some(why);
                group.signal(&mut child, Kill::Soft);
                phase = Phase::Terminating;
                deadline = Instant::now().checked_add(timings.grace);
            }
            () = sleep_until(deadline) => match phase {
                Phase::Running => {
                    tracing::info!(channel_id = %channel, "command timed out");
                    reason = Some(StopReason::TimedOut);
                    group.signal(&mut child, Kill::Soft);
                    phase = Phase::Terminating;
                    deadline = Instant::now().checked_add(timings.grace);
                }
                Phase::Terminating => {
                    group.signal(&mut child, Kill::Hard);
                    phase = Phase::Killed;
                    deadline = Instant::now().checked_add(timings.drain);
                }
                Phase::Killed => {
                    tracing::warn!(channel_id = %channel, "output pipes still open after SIGKILL (held by a process outside the group); not waiting for them");
                    drained = true;
                    deadline = None;
                    // The shell itself is dead; only an uninterruptible (D state) leader
                    // could make the wait for its status below last.
                }
            },
        }
    }
    if phase == Phase::Terminating {
        // The shell died of SIGTERM, but a group member may be ignoring it (and no longer hold
        // our pipes): the group must not outlive the kill.
        group.signal(&mut child, Kill::Hard);
    }
    group.disarm();

    let (exit_code, signal) = match status {
        Some(Ok(status)) => exit_fields(status),
        Some(Err(e)) => {
            tracing::warn!(channel_id = %channel, error = %e, "cannot read the command's exit status");
            (-1, None)
        }
        // The loop ends only with a status; kept total rather than unwrapped.
        None => (-1, None),
    };
    tracing::info!(channel_id = %channel, exit_code, signal = ?signal, end_reason = ?reason.map(StopReason::as_str), elapsed_ms = started.elapsed().as_millis(), "command ended");
    let last = TerminalOutput {
        exit_code: Some(exit_code),
        signal,
        end_reason: reason.map(|r| r.as_str().to_owned()),
        ..TerminalOutput::default()
    };
    send(out, output_frame(channel, last)).await;
}

/// Which pipe a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn chunk(self, bytes: &[u8]) -> TerminalOutput {
        match self {
            Self::Stdout => TerminalOutput::chunk(bytes, b""),
            Self::Stderr => TerminalOutput::chunk(b"", bytes),
        }
    }
}

/// Streams one pipe until EOF, one frame per chunk, as soon as it is read.
async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    stream: Stream,
    channel: &str,
    out: &mpsc::Sender<Event>,
) {
    let mut chunker = Chunker::default();
    loop {
        let read = match pipe.read(chunker.spare()).await {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(channel_id = %channel, stream = ?stream, error = %e, "reading command output failed");
                break;
            }
        };
        if let Some(chunk) = chunker.filled(read) {
            send_with(out, || output_frame(channel, stream.chunk(&chunk))).await;
        }
    }
    if let Some(rest) = chunker.finish() {
        send_with(out, || output_frame(channel, stream.chunk(&rest))).await;
    }
}

/// Queues a frame, waiting for room: this wait is the backpressure on the command's output.
async fn send(out: &mpsc::Sender<Event>, frame: AgentMessage) {
    send_with(out, || frame).await;
}

/// Like [`send`], but the frame (up to ~4x its raw chunk once encoded losslessly) is built
/// only once there is room for it, so a waiting command holds just its raw chunk.
async fn send_with(out: &mpsc::Sender<Event>, frame: impl FnOnce() -> AgentMessage) {
    // An error means the connection is gone; its registry went with it, so the command is
    // being killed and its output has nowhere to go. Reading on lets the pipes reach EOF.
    if let Ok(permit) = out.reserve().await {
        permit.send(Event::Frame(frame()));
    }
}

fn output_frame(channel: &str, output: TerminalOutput) -> AgentMessage {
    AgentMessage::TunnelData {
        channel_id: channel.to_owned(),
        data: TunnelDataPayload::TerminalOutput(output),
    }
}

fn error_frame(channel: &str, error: &str) -> AgentMessage {
    AgentMessage::TunnelError {
        channel_id: channel.to_owned(),
        error: error.to_owned(),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn spawn(command: &str) -> std::io::Result<Child> {
    let mut cmd = shell(command);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A last resort for the shell itself should the task vanish; [`Group`] covers the rest.
        .kill_on_drop(true);
    cmd.spawn()
}

#[cfg(unix)]
fn shell(command: &str) -> Command {
    // An absolute path: a service's PATH may be minimal or hostile.
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(command);
    // Its own process group: one killpg reaches everything the command starts, and signals
    // aimed at the agent's own group (a Ctrl-C in its terminal) do not reach the command.
    cmd.process_group(0);
    cmd
}

#[cfg(not(unix))]
fn shell(command: &str) -> Command {
    let mut cmd = Command::new("cmd");
    // cmd.exe parses its own command line; the C-runtime quoting of `arg` would mangle it.
    cmd.arg("/C").raw_arg(command);
    cmd
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// SIGTERM: ask.
    Soft,
    /// SIGKILL: insist.
    Hard,
}

/// The command's process group. While armed, dropping it (the task aborted, the runtime shut
/// down mid-kill) sends SIGKILL to the group: no process outlives the agent's hold on it.
#[derive(Debug)]
struct Group {
    #[cfg(unix)]
    pgid: Option<nix::unistd::Pid>,
    // Only Unix has a group to kill on drop.
    #[cfg_attr(not(unix), allow(dead_code))]
    armed: bool,
}

impl Group {
    fn of(child: &Child) -> Self {
        Self {
            // `process_group(0)` made the shell the leader: the group id is its pid.
            #[cfg(unix)]
            pgid: child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(nix::unistd::Pid::from_raw),
            armed: true,
        }
    }

    #[cfg(unix)]
    fn signal(&self, child: &mut Child, how: Kill) {
        use nix::sys::signal::{Signal, killpg};
        let Some(pgid) = self.pgid else {
            // No pid means the shell was already reaped; nothing of ours to find by group.
            let _ = child.start_kill();
            return;
        };
        let signal = match how {
            Kill::Soft => Signal::SIGTERM,
            Kill::Hard => Signal::SIGKILL,
        };
        match killpg(pgid, signal) {
            // ESRCH: the whole group is already gone.
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => {
                tracing::warn!(pgid = pgid.as_raw(), signal = signal.as_str(), error = %e, "cannot signal the command's process group")
            }
        }
    }

    /// Without process groups only the shell can be killed (untested).
    #[cfg(not(unix))]
    fn signal(&self, child: &mut Child, _how: Kill) {
        let _ = child.start_kill();
    }

    /// The command ended and, if it was killed, its group was swept: nothing left to kill.
    /// Processes a command deliberately left behind (`nohup job >/dev/null 2>&1 &`) after a
    /// normal exit are not ours to kill.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        #[cfg(unix)]
        if self.armed
            && let Some(pgid) = self.pgid
        {
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// The final frame's `exit_code` and `signal`: a process killed by a signal reports 128 + its
/// number (the shells' convention) and the signal's name.
fn exit_fields(status: ExitStatus) -> (i32, Option<String>) {
    if let Some(code) = status.code() {
        return (code, None);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(signo) = status.signal() {
            let name = nix::sys::signal::Signal::try_from(signo)
                .map_or_else(|_| format!("SIG{signo}"), |s| s.as_str().to_owned());
            return (128 + signo, Some(name));
        }
    }
    (-1, None)
}

#[cfg(test)]
#[cfg(target_os = "linux")]
pub(super) mod tests {
    use sha2::{Digest as _, Sha256};

    use super::*;
    use crate::chunker::CHUNK;

    /// What one command sent, in order.
    #[derive(Debug, Default)]
    struct Outcome {
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        /// Every output frame except the last.
        chunks: Vec<TerminalOutput>,
        last: Option<TerminalOutput>,
        errors: Vec<String>,
        /// When the first output arrived, since the start.
        first_output_after: Option<Duration>,
        elapsed: Duration,
    }

    fn spec(command: &str, timeout: Option<Duration>) -> CommandSpec {
        CommandSpec {
            channel: ChannelId::parse("cmd-1").unwrap(),
            command: command.to_owned(),
            timeout,
        }
    }

    fn fast_kill() -> KillTimings {
        KillTimings {
            grace: Duration::from_millis(500),
            drain: Duration::from_millis(500),
        }
    }

    /// Runs `command` through [`execute`] with a small queue (so backpressure is exercised)
    /// and collects its frames; `on_first_output` may act on the stop sender once output has
    /// started (the cancel tests).
    async fn run_with(
        spec: CommandSpec,
        timings: KillTimings,
        mut on_first_output: impl FnMut(&[u8], &mut Option<oneshot::Sender<StopReason>>),
    ) -> Outcome {
        let (tx, mut rx) = mpsc::channel(4);
        let (stop, stopped) = oneshot::channel();
        let mut stop = Some(stop);
        let started = Instant::now();
        let task = tokio::spawn(async move { execute(spec, &tx, stopped, timings).await });
        let mut outcome = Outcome::default();
        while let Some(event) = rx.recv().await {
            let Event::Frame(frame) = event else {
                panic!("execute itself sends only frames, got {event:?}");
            };
            match frame {
                AgentMessage::TunnelData {
                    channel_id,
                    data: TunnelDataPayload::TerminalOutput(output),
                } => {
                    assert_eq!(channel_id, "cmd-1");
                    assert!(
                        outcome.last.is_none(),
                        "a frame after the final one: {output:?}"
                    );
                    if output.exit_code.is_some() {
                        assert_eq!((output.stdout.as_str(), output.stderr.as_str()), ("", ""));
                        outcome.last = Some(output);
                        continue;
                    }
                    let (out, err) = output.bytes().unwrap();
                    assert!(out.len() <= CHUNK && err.len() <= CHUNK);
                    assert!(out.is_empty() != err.is_empty(), "one stream per frame");
                    if outcome.first_output_after.is_none() {
                        outcome.first_output_after = Some(started.elapsed());
                    }
                    on_first_output(&out, &mut stop);
                    outcome.stdout.extend_from_slice(&out);
                    outcome.stderr.extend_from_slice(&err);
                    outcome.chunks.push(output);
                }
                AgentMessage::TunnelError { error, .. } => outcome.errors.push(error),
                other => panic!("unexpected frame {other:?}"),
            }
        }
        task.await.unwrap();
        outcome.elapsed = started.elapsed();
        outcome
    }

    async fn run(command: &str, timeout: Option<Duration>) -> Outcome {
        run_with(spec(command, timeout), fast_kill(), |_, _| {}).await
    }

    fn last(outcome: &Outcome) -> &TerminalOutput {
        outcome.last.as_ref().expect("a final frame")
    }

    /// The live (not zombie) processes of a process group, from /proc.
    pub(crate) fn live_members(pgid: i32) -> Vec<i32> {
        let mut members = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after ')'.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
                members.push(pid);
            }
        }
        members
    }

    /// Polls briefly: a SIGKILLed process is gone a moment after the signal, not at once.
    pub(crate) async fn assert_group_gone(pgid: i32) {
        for _ in 0..50 {
            if live_members(pgid).is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "processes of group {pgid} survived: {:?}",
            live_members(pgid)
        );
    }

    /// The commands below print `$$` first: the shell's pid, which is the group id.
    fn pgid_of(outcome: &Outcome) -> i32 {
        let text = String::from_utf8_lossy(&outcome.stdout);
        text.lines().next().unwrap().trim().parse().unwrap()
    }

    #[tokio::test]
    async fn stdout_stderr_and_the_exit_code_are_reported() {
        let outcome = run("echo out; echo err >&2; exit 3", None).await;
        assert_eq!(outcome.stdout, b"out\n");
        assert_eq!(outcome.stderr, b"err\n");
        let last = last(&outcome);
        assert_eq!(last.exit_code, Some(3));
        assert_eq!(
            (last.signal.as_deref(), last.end_reason.as_deref()),
            (None, None)
        );
        // Valid UTF-8 travels as the reference's plain strings.
        assert!(
            outcome
                .chunks
                .iter()
                .all(|c| c.stdout_b64.is_none() && c.stderr_b64.is_none())
        );
    }

    #[tokio::test]
    async fn bytes_that_are_not_utf8_arrive_byte_for_byte() {
        let outcome = run(r"printf '\377\376abc\200'", None).await;
        assert_eq!(outcome.stdout, b"\xff\xfeabc\x80");
        assert!(outcome.chunks[0].stdout_b64.is_some());
        assert_eq!(last(&outcome).exit_code, Some(0));
    }

    #[tokio::test]
    async fn eight_megabytes_of_output_arrive_intact_in_bounded_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("expected");
        let outcome = run(
            &format!(
                "head -c 8000000 /dev/urandom | base64 | tee {}",
                copy.display()
            ),
            None,
        )
        .await;
        let expected = std::fs::read(&copy).unwrap();
        assert!(expected.len() > 10_000_000);
        assert_eq!(Sha256::digest(&outcome.stdout), Sha256::digest(&expected));
        assert!(outcome.chunks.len() >= expected.len() / CHUNK);
        assert_eq!(last(&outcome).exit_code, Some(0));
    }

    #[tokio::test]
    async fn raw_binary_output_arrives_intact() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("expected");
        let outcome = run(
            &format!("head -c 2000000 /dev/urandom | tee {}", copy.display()),
            None,
        )
        .await;
        let expected = std::fs::read(&copy).unwrap();
        assert_eq!(expected.len(), 2_000_000);
        assert!(outcome.stdout == expected, "binary output differs");
    }

    #[tokio::test]
    async fn a_command_reading_stdin_sees_eof_at_once() {
        let outcome = run("cat; echo done", None).await;
        assert_eq!(outcome.stdout, b"done\n");
        assert_eq!(last(&outcome).exit_code, Some(0));
        assert!(
            outcome.elapsed < Duration::from_secs(2),
            "{:?}",
            outcome.elapsed
        );
    }

    #[tokio::test]
    async fn output_is_streamed_while_the_command_still_runs() {
        let outcome = run("echo first; sleep 3; echo last", None).await;
        let first = outcome.first_output_after.unwrap();
        assert!(
            first < Duration::from_secs(1),
            "first output after {first:?}"
        );
        assert_eq!(outcome.chunks[0].stdout, "first\n");
        assert_eq!(outcome.stdout, b"first\nlast\n");
        assert!(outcome.elapsed >= Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_group_including_background_children() {
        let outcome = run(
            "echo $$; sleep 1000 & sleep 1000",
            Some(Duration::from_secs(1)),
        )
        .await;
        let last = last(&outcome);
        assert_eq!(last.end_reason.as_deref(), Some("timed_out"));
        assert_eq!(last.signal.as_deref(), Some("SIGTERM"));
        assert_eq!(last.exit_code, Some(128 + 15));
        assert!(outcome.elapsed >= Duration::from_secs(1));
        assert!(
            outcome.elapsed < Duration::from_secs(5),
            "{:?}",
            outcome.elapsed
        );
        assert_group_gone(pgid_of(&outcome)).await;
    }

    #[tokio::test]
    async fn a_group_that_ignores_sigterm_gets_sigkill_after_the_grace() {
        let outcome = run(
            "trap '' TERM; echo $$; sleep 1000 & sleep 1000",
            Some(Duration::from_millis(300)),
        )
        .await;
        let last = last(&outcome);
        assert_eq!(last.end_reason.as_deref(), Some("timed_out"));
        assert_eq!(
            (last.exit_code, last.signal.as_deref()),
            (Some(137), Some("SIGKILL"))
        );
        // Timeout, then the whole grace before the KILL.
        assert!(
            outcome.elapsed >= Duration::from_millis(800),
            "{:?}",
            outcome.elapsed
        );
        assert_group_gone(pgid_of(&outcome)).await;
    }

    #[tokio::test]
    async fn a_cancel_kills_the_group_and_says_so() {
        let outcome = run_with(spec("echo $$; sleep 1000", None), fast_kill(), |_, stop| {
            if let Some(stop) = stop.take() {
                stop.send(StopReason::Cancelled).unwrap();
            }
        })
        .await;
        let last = last(&outcome);
        assert_eq!(last.end_reason.as_deref(), Some("cancelled"));
        assert!(last.exit_code.is_some_and(|code| code > 128));
        assert!(outcome.elapsed < Duration::from_secs(3));
        assert_group_gone(pgid_of(&outcome)).await;
    }

    #[tokio::test]
    async fn a_dropped_stop_sender_kills_too() {
        // The registry of a lost connection goes away without a word: that is a kill.
        let outcome = run_with(spec("echo $$; sleep 1000", None), fast_kill(), |_, stop| {
            stop.take();
        })
        .await;
        assert_eq!(last(&outcome).end_reason.as_deref(), Some("cancelled"));
        assert_group_gone(pgid_of(&outcome)).await;
    }

    #[tokio::test]
    async fn a_shell_killed_by_a_signal_reports_128_plus_its_number_and_its_name() {
        let outcome = run("kill -9 $$", None).await;
        let last = last(&outcome);
        assert_eq!(
            (
                last.exit_code,
                last.signal.as_deref(),
                last.end_reason.as_deref()
            ),
            (Some(137), Some("SIGKILL"), None)
        );
    }

    #[tokio::test]
    async fn a_command_that_cannot_start_is_a_tunnel_error() {
        // A NUL byte cannot go into an argument: spawning fails before any process exists.
        let outcome = run("echo a\0b", None).await;
        assert!(outcome.last.is_none());
        assert!(
            matches!(outcome.errors.as_slice(), [e] if e.starts_with("Failed to execute command")),
            "{:?}",
            outcome.errors
        );
    }

    #[tokio::test]
    async fn an_aborted_task_still_kills_its_group() {
        // The runtime shutting down drops tasks mid-flight: the group must not survive that.
        let (tx, mut rx) = mpsc::channel(4);
        let (_stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            execute(spec("echo $$; sleep 1000", None), &tx, stopped, fast_kill()).await;
        });
        let Some(Event::Frame(AgentMessage::TunnelData {
            data: TunnelDataPayload::TerminalOutput(output),
            ..
        })) = rx.recv().await
        else {
            panic!("expected output");
        };
        let pgid: i32 = output.stdout.trim().parse().unwrap();
        assert!(!live_members(pgid).is_empty());
        task.abort();
        let _ = task.await;
        assert_group_gone(pgid).await;
    }

    #[tokio::test]
    async fn the_registry_releases_channels_only_of_commands_still_in_the_tunnel() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut commands = Commands::new(tx, fast_kill());
        let one = ChannelId::parse("cmd-1").unwrap();
        let two = ChannelId::parse("cmd-2").unwrap();
        commands.start(CommandSpec {
            channel: one.clone(),
            command: "sleep 1000".into(),
            timeout: None,
        });
        commands.start(CommandSpec {
            channel: two.clone(),
            command: "sleep 1000".into(),
            timeout: None,
        });
        assert_eq!(commands.len(), 2);
        commands.cancel(&one);
        let mut released = Vec::new();
        let mut reasons = Vec::new();
        while released.is_empty() {
            match rx.recv().await.unwrap() {
                Event::Frame(AgentMessage::TunnelData {
                    channel_id,
                    data: TunnelDataPayload::TerminalOutput(output),
                }) => reasons.push((channel_id, output.end_reason)),
                Event::CommandEnded(run) => released.push(commands.finished(run)),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(released, vec![Some(one)]);
        assert_eq!(
            reasons,
            vec![("cmd-1".to_owned(), Some("cancelled".to_owned()))]
        );
        // The tunnel closes: the other command dies too, but its channel is no longer ours.
        commands.stop_all(StopReason::Cancelled);
        loop {
            if let Event::CommandEnded(run) = rx.recv().await.unwrap() {
                assert_eq!(commands.finished(run), None);
                break;
            }
        }
        assert!(commands.is_empty());
        let _ = two;
    }
}
