//! A connection's timers: when it pings and when its peer is dead ([`Clock`]), and how many
//! warnings about its unusable frames are logged ([`WarnBudget`]).

use rmm_domain::AgentId;

use super::ConnectionTimings;

/// When a connection pings and when it is dead, from two instants: the last inbound frame
/// and the last ping. Pings go every `ping_interval` (the first at once), whatever comes in.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    pub(super) inbound: tokio::time::Instant,
    pub(super) pinged: tokio::time::Instant,
    timings: ConnectionTimings,
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
        Self {
            inbound: now,
            // As if pinged one interval ago: the first ping goes at once.
            pinged: now.checked_sub(timings.ping_interval).unwrap_or(now),
            timings,
        }
    }

    pub(super) fn due(&self, now: tokio::time::Instant) -> Due {
        if now >= self.inbound + self.timings.read_idle {
            Due::Dead
        } else if now >= self.pinged + self.timings.ping_interval {
            Due::Ping
        } else {
            Due::Nothing
        }
    }

    /// The next instant something may be due.
    pub(super) fn next_wake(&self) -> tokio::time::Instant {
        (self.pinged + self.timings.ping_interval).min(self.inbound + self.timings.read_idle)
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
        let mut clock = Clock::new(start, timings);
        assert_eq!(clock.due(start), Due::Ping);
        clock.pinged = start;
        assert_eq!(clock.next_wake(), start + Duration::from_secs(20));
        assert_eq!(clock.due(start + Duration::from_secs(19)), Due::Nothing);
        // Inbound traffic does not delay the pings, only the deadline.
        clock.inbound = start + Duration::from_secs(15);
        assert_eq!(clock.due(start + Duration::from_secs(20)), Due::Ping);
        clock.pinged = start + Duration::from_secs(60);
        assert_eq!(clock.next_wake(), start + Duration::from_secs(75));
        assert_eq!(clock.due(start + Duration::from_secs(75)), Due::Dead);
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
