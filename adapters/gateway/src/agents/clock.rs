//! A connection's timers: when it pings and when its peer is dead ([`Clock`]), and how many
//! warnings about its unusable frames are logged ([`WarnBudget`]).

use rmm_domain::AgentId;

use super::ConnectionTimings;

/// When a connection pings and when it is dead, from two instants: the last inbound frame
/// and the last ping. Pings go every `ping_interval` (the first at the next grid step),
/// whatever comes in.
///
/// Ping instants are aligned to a grid of [`PING_GRID`] shared by every connection of the
/// process: the pings due within one grid step go out in one timer wake-up, and their pongs
/// come back in a burst, instead of each costing the runtime a thread wake-up of its own (with
/// ~19k idle agents that was ~2,000 wake-ups a second, most of the server's idle CPU).
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    pub(super) inbound: tokio::time::Instant,
    pinged: tokio::time::Instant,
    timings: ConnectionTimings,
    /// The grid's origin.
    epoch: tokio::time::Instant,
}

/// The step of the grid pings are aligned to.
const PING_GRID: std::time::Duration = std::time::Duration::from_secs(1);

/// The process-wide origin of the ping grid: the first instant any connection asked for.
fn ping_epoch(now: tokio::time::Instant) -> tokio::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    tokio::time::Instant::from_std(*EPOCH.get_or_init(|| now.into_std()))
}

/// What the connection's timer found due.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Due {
    Dead,
    Ping,
    Nothing,
}

impl Clock {
    pub(super) fn new(now: tokio::time::Instant, timings: ConnectionTimings) -> Self {
        Self::with_epoch(now, timings, ping_epoch(now))
    }

    fn with_epoch(
        now: tokio::time::Instant,
        timings: ConnectionTimings,
        epoch: tokio::time::Instant,
    ) -> Self {
        Self {
            inbound: now,
            // As if pinged one interval ago: the first ping goes at the next grid step.
            pinged: now.checked_sub(timings.ping_interval).unwrap_or(now),
            timings,
            epoch,
        }
    }

    /// Notes a ping sent at `now`; the next one is due an interval after the grid step it
    /// belonged to (not after `now`, which a wake-up lands a little after that step).
    pub(super) fn pinged(&mut self, now: tokio::time::Instant) {
        self.pinged = self.grid_floor(now);
    }

    pub(super) fn due(&self, now: tokio::time::Instant) -> Due {
        if now >= self.inbound + self.timings.read_idle {
            Due::Dead
        } else if now >= self.ping_due() {
            Due::Ping
        } else {
            Due::Nothing
        }
    }

    /// The next instant something may be due.
    pub(super) fn next_wake(&self) -> tokio::time::Instant {
        self.ping_due().min(self.inbound + self.timings.read_idle)
    }

    /// When the next ping is due: an interval after the last one, on the grid.
    fn ping_due(&self) -> tokio::time::Instant {
        let at = self.pinged + self.timings.ping_interval;
        let floor = self.grid_floor(at);
        if floor == at { at } else { floor + PING_GRID }
    }

    /// The grid step at or before `at`.
    fn grid_floor(&self, at: tokio::time::Instant) -> tokio::time::Instant {
        let Some(since) = at.checked_duration_since(self.epoch) else {
            return at;
        };
        let step = PING_GRID.as_nanos();
        let steps = since.as_nanos() / step;
        // Whole steps since the epoch: fits u32 for 136 years of uptime at a 1 s grid.
        let steps = u32::try_from(steps).unwrap_or(u32::MAX);
        self.epoch + PING_GRID * steps
    }
}

/// Warnings about one connection's unusable frames logged per [`WARN_WINDOW`].
const WARNINGS_PER_WINDOW: u32 = 10;
/// The window of [`WARNINGS_PER_WINDOW`].
const WARN_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Rate-limits the warnings about one agent's unusable frames: at most
/// [`WARNINGS_PER_WINDOW`] per [`WARN_WINDOW`]; the first one over says that more are
/// suppressed, and one line later says how many were.
#[derive(Debug)]
pub(super) struct WarnBudget {
    window_start: tokio::time::Instant,
    logged: u32,
    suppressed: u64,
}

impl WarnBudget {
    pub(super) fn new(now: tokio::time::Instant) -> Self {
        Self {
            window_start: now,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether to log one more warning at `now`.
    pub(super) fn allow(&mut self, agent: AgentId, now: tokio::time::Instant) -> bool {
        if now.duration_since(self.window_start) >= WARN_WINDOW {
            self.flush(agent);
            *self = Self::new(now);
        }
        if self.logged < WARNINGS_PER_WINDOW {
            self.logged += 1;
            return true;
        }
        if self.suppressed == 0 {
            tracing::warn!(agent_id = %agent, per_window = WARNINGS_PER_WINDOW, window_secs = WARN_WINDOW.as_secs(), "more unusable frames from agent; suppressing their warnings for the rest of the window");
        }
        self.suppressed += 1;
        false
    }

    /// Logs how many warnings were suppressed, if any.
    pub(super) fn flush(&mut self, agent: AgentId) {
        if self.suppressed > 0 {
            tracing::warn!(agent_id = %agent, suppressed = self.suppressed, "warnings about unusable frames from agent suppressed");
            self.suppressed = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn the_clock_pings_every_interval_and_declares_a_silent_peer_dead() {
        let timings = ConnectionTimings {
            ping_interval: Duration::from_secs(20),
            read_idle: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
        };
        let start = Instant::now();
        let mut clock = Clock::with_epoch(start, timings, start);
        assert_eq!(clock.due(start), Due::Ping);
        clock.pinged(start);
        assert_eq!(clock.next_wake(), start + Duration::from_secs(20));
        assert_eq!(clock.due(start + Duration::from_secs(19)), Due::Nothing);
        // Inbound traffic does not delay the pings, only the deadline.
        clock.inbound = start + Duration::from_secs(15);
        assert_eq!(clock.due(start + Duration::from_secs(20)), Due::Ping);
        // A ping sent a little after its grid step counts from that step.
        clock.pinged(start + Duration::from_millis(60_040));
        assert_eq!(clock.next_wake(), start + Duration::from_secs(75));
        assert_eq!(clock.due(start + Duration::from_secs(75)), Due::Dead);
    }

    #[test]
    fn connections_that_start_apart_ping_on_the_same_grid_step() {
        let timings = ConnectionTimings {
            ping_interval: Duration::from_secs(20),
            read_idle: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
        };
        let epoch = Instant::now();
        let a = Clock::with_epoch(epoch + Duration::from_millis(2_100), timings, epoch);
        let b = Clock::with_epoch(epoch + Duration::from_millis(2_900), timings, epoch);
        // Both first pings wait for the step at 3 s (not sent at once, not 0.8 s apart).
        assert_eq!(a.next_wake(), epoch + Duration::from_secs(3));
        assert_eq!(b.next_wake(), a.next_wake());
        // Never more than one step late, and a deadline off the grid is kept exactly.
        let mut c = Clock::with_epoch(epoch + Duration::from_millis(10), timings, epoch);
        c.pinged(epoch + Duration::from_millis(1_010));
        assert_eq!(c.next_wake(), epoch + Duration::from_secs(21));
        assert_eq!(
            c.due(epoch + Duration::from_millis(60_010)),
            Due::Dead,
            "the read deadline is 60 s after the last inbound frame, exactly"
        );
    }

    #[test]
    fn warnings_are_limited_per_window_and_the_suppressed_ones_counted() {
        let agent = AgentId::from_uuid(Uuid::from_u128(7));
        let start = Instant::now();
        let mut budget = WarnBudget::new(start);
        let allowed = (0..1000).filter(|_| budget.allow(agent, start)).count();
        assert_eq!(allowed, WARNINGS_PER_WINDOW as usize);
        assert_eq!(budget.suppressed, 1000 - u64::from(WARNINGS_PER_WINDOW));
        // A new window logs again, and the count is reported (and reset) on the way.
        assert!(budget.allow(agent, start + WARN_WINDOW));
        assert_eq!((budget.suppressed, budget.logged), (0, 1));
    }
}
