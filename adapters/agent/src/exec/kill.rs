//! Killing a command: its whole process group (grandchildren too), SIGTERM, a grace period,
//! then SIGKILL; and the group swept even if the task is dropped mid-way.

use std::time::Duration;

use tokio::process::Child;
use tokio::time::Instant;

use super::{KillTimings, StopReason};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kill {
    /// SIGHUP: the terminal hung up (terminals, which are Unix only).
    #[cfg_attr(not(unix), allow(dead_code))]
    Hangup,
    /// SIGTERM: ask.
    Soft,
    /// SIGKILL: insist.
    Hard,
}

/// The command's process group. While armed, dropping it (the task aborted, the runtime shut
/// down mid-kill) sends SIGKILL to the group: no process outlives the agent's hold on it.
#[derive(Debug)]
pub(crate) struct Group {
    #[cfg(unix)]
    pgid: Option<nix::unistd::Pid>,
    // Only Unix has a group to kill on drop.
    #[cfg_attr(not(unix), allow(dead_code))]
    armed: bool,
}

impl Group {
    pub(crate) fn of(child: &Child) -> Self {
        Self {
            // `process_group(0)` (or a terminal's `setsid`) made the shell the leader: the group
            // id is its pid.
            #[cfg(unix)]
            pgid: child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(nix::unistd::Pid::from_raw),
            armed: true,
        }
    }

    #[cfg(unix)]
    pub(crate) fn signal(&self, child: &mut Child, how: Kill) {
        use nix::sys::signal::{Signal, killpg};
        let Some(pgid) = self.pgid else {
            // No pid means the shell was already reaped; nothing of ours to find by group.
            let _ = child.start_kill();
            return;
        };
        let signal = match how {
            Kill::Hangup => Signal::SIGHUP,
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
    pub(crate) fn signal(&self, child: &mut Child, _how: Kill) {
        let _ = child.start_kill();
    }

    /// The command ended and, if it was killed, its group was swept: nothing left to kill.
    /// Processes a command deliberately left behind (`nohup job >/dev/null 2>&1 &`) after a
    /// normal exit are not ours to kill.
    pub(crate) fn disarm(&mut self) {
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

/// Where a kill stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// SIGTERM sent; SIGKILL at the deadline.
    Terminating,
    /// SIGKILL sent; stop waiting for the pipes at the deadline.
    Killed,
}

/// Where a command's kill stands and when its next step is due: a timeout (if any) while it
/// runs, then SIGTERM, the grace, SIGKILL, the drain.
#[derive(Debug)]
pub(super) struct KillSequence {
    timings: KillTimings,
    phase: Phase,
    deadline: Option<Instant>,
    reason: Option<StopReason>,
}

impl KillSequence {
    /// A command started at `started`, limited to `timeout`. An absurd timeout (beyond what
    /// `Instant` can hold) is no timeout.
    pub(super) fn new(started: Instant, timeout: Option<Duration>, timings: KillTimings) -> Self {
        Self {
            timings,
            phase: Phase::Running,
            deadline: timeout.and_then(|t| started.checked_add(t)),
            reason: None,
        }
    }

    /// Why the agent is killing the command, once it is.
    pub(super) fn reason(&self) -> Option<StopReason> {
        self.reason
    }

    /// When [`Self::deadline_passed`] is due, if ever.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Kills the command for `why`: SIGTERM to its group now, SIGKILL after the grace.
    pub(super) fn stop(&mut self, why: StopReason, group: &Group, child: &mut Child) {
        self.reason = Some(why);
        group.signal(child, Kill::Soft);
        self.phase = Phase::Terminating;
        self.deadline = Instant::now().checked_add(self.timings.grace);
    }

    /// The deadline passed: the next step. `true` when the pipes are no longer worth waiting
    /// for.
    pub(super) fn deadline_passed(
        &mut self,
        channel: &str,
        group: &Group,
        child: &mut Child,
    ) -> bool {
        match self.phase {
            Phase::Running => {
                tracing::info!(channel_id = %channel, "command timed out");
                self.stop(StopReason::TimedOut, group, child);
                false
            }
            Phase::Terminating => {
                group.signal(child, Kill::Hard);
                self.phase = Phase::Killed;
                self.deadline = Instant::now().checked_add(self.timings.drain);
                false
            }
            Phase::Killed => {
                tracing::warn!(channel_id = %channel, "output pipes still open after SIGKILL (held by a process outside the group); not waiting for them");
                self.deadline = None;
                // The shell itself is dead; only an uninterruptible (D state) leader could make
                // the wait for its status last.
                true
            }
        }
    }

    /// The command ended (exited and its pipes closed, or given up on): no member of a killed
    /// group may outlive the kill, and nothing is left to kill on drop.
    pub(super) fn finish(&self, group: &mut Group, child: &mut Child) {
        if self.phase == Phase::Terminating {
            // The shell died of SIGTERM, but a group member may be ignoring it (and no longer
            // hold our pipes): the group must not outlive the kill.
            group.signal(child, Kill::Hard);
        }
        group.disarm();
    }
}

/// Resolves at `deadline`; never without one.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
