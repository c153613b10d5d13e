//! When to redial: exponential backoff with full jitter, reset only by a connection that
//! stayed up long enough to count as healthy. Pure arithmetic; the random draw comes in as an
//! argument (a number in `[0, 1)`) so tests pick it.
//!
//! Full jitter (a uniform delay in `[0, ceiling]`) spreads thousands of agents that lost the
//! same server at the same instant, so a restarted server is not hit by all of them at once.
//!
//! A server at capacity answers the upgrade `503` with `Retry-After: N` (seconds): the agent
//! then waits in `[N, N + 1 s)` (the server hands the agents it turns away different seconds;
//! the jitter spreads those given the same one), without growing its backoff: the server is up and said when to come back, so a storm of
//! reconnects never pushes an agent out to the backoff's cap.

use std::time::Duration;

/// Exponential backoff state of the redial loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    stable_after: Duration,
    /// Consecutive failures (refused dials and connections that ended before `stable_after`).
    failures: u32,
}

impl Backoff {
    #[must_use]
    pub fn new(base: Duration, cap: Duration, stable_after: Duration) -> Self {
        Self {
            base,
            cap,
            stable_after,
            failures: 0,
        }
    }

    /// The largest delay after `failures` consecutive failures: `min(cap, base * 2^failures)`.
    #[must_use]
    pub fn ceiling(&self, failures: u32) -> Duration {
        // 2^31 * any non-zero base already exceeds every sane cap; saturate instead of wrapping.
        let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next dial, given a uniform draw `unit` in `[0, 1)`, and counts
    /// the failure that made it necessary.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let ceiling = self.ceiling(self.failures);
        self.failures = self.failures.saturating_add(1);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// A connection ended after being up for `up`: a long-lived one proves the path healthy
    /// and resets the backoff; a short one keeps growing it (a server that accepts and then
    /// drops us must not be hammered either).
    pub fn connection_lasted(&mut self, up: Duration) {
        if up >= self.stable_after {
            self.failures = 0;
        }
    }

    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The delay after the server answered the upgrade `503`, given its `Retry-After` hint
    /// (see [`parse_retry_after`]) and a uniform draw `unit` in `[0, 1)`: with a hint, in
    /// `[hint, hint + 1 s)` (the hint capped at the backoff's cap; the server spreads the
    /// agents it turns away over the seconds, the jitter within the second), the failure count
    /// unchanged; without one (or `Retry-After: 0`), an ordinary failure ([`Self::next_delay`]).
    pub fn after_busy(&mut self, retry_after: Option<Duration>, unit: f64) -> Duration {
        match retry_after.filter(|hint| !hint.is_zero()) {
            Some(hint) => hint.min(self.cap) + Duration::from_secs(1).mul_f64(unit.clamp(0.0, 1.0)),
            None => self.next_delay(unit),
        }
    }
}

/// A `Retry-After` header's value in seconds (its HTTP-date form is not honoured: `None`).
#[must_use]
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The slow retry after the server rejected our key: around `every`, jittered to
/// `[every/2, every*3/2)` so a fleet with a revoked key does not retry in lockstep.
#[must_use]
pub fn rejected_delay(every: Duration, unit: f64) -> Duration {
    every / 2 + every.mul_f64(unit.clamp(0.0, 1.0))
}

/// A uniform draw in `[0, 1)` from the operating system's generator. Should that fail (it
/// does not on supported systems), the clock's nanoseconds still spread agents apart.
#[must_use]
pub fn random_unit() -> f64 {
    let bits = getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| {
                u64::from(d.subsec_nanos()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            })
    });
    // The top 53 bits fill an f64 mantissa exactly: every value is < 1.
    #[allow(clippy::cast_precision_loss)]
    let unit = (bits >> 11) as f64 / (1u64 << 53) as f64;
    unit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn backoff() -> Backoff {
        Backoff::new(secs(1), secs(60), secs(60))
    }

    #[test]
    fn ceilings_double_from_the_base_up_to_the_cap() {
        let b = backoff();
        let ceilings: Vec<u64> = (0..9).map(|n| b.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.ceiling(u32::MAX), secs(60));
    }

    #[test]
    fn delays_stay_within_zero_and_the_ceiling() {
        for unit in [0.0, 0.25, 0.5, 0.999_999, 1.0, -3.0, 7.0] {
            let mut b = backoff();
            for n in 0..40 {
                let d = b.next_delay(unit);
                assert!(d <= b.ceiling(n), "{d:?} > ceiling {n}");
                assert!(d <= secs(60));
            }
        }
        let mut b = backoff();
        assert_eq!(b.next_delay(0.0), Duration::ZERO);
        assert_eq!(b.next_delay(0.5), secs(1));
        assert_eq!(b.next_delay(0.5), secs(2));
        assert_eq!(b.failures(), 3);
    }

    #[test]
    fn only_a_connection_that_stayed_up_long_enough_resets_the_backoff() {
        let mut b = backoff();
        for _ in 0..5 {
            b.next_delay(0.5);
        }
        b.connection_lasted(secs(59));
        assert_eq!(b.failures(), 5);
        assert_eq!(b.next_delay(1.0), secs(32));
        b.connection_lasted(secs(60));
        assert_eq!(b.failures(), 0);
        assert_eq!(b.next_delay(1.0), secs(1));
    }

    #[test]
    fn a_busy_server_is_retried_after_its_hint_with_jitter_and_the_backoff_kept() {
        let mut b = backoff();
        b.next_delay(0.5);
        b.next_delay(0.5);
        assert_eq!(b.after_busy(Some(secs(3)), 0.0), secs(3));
        assert_eq!(
            b.after_busy(Some(secs(3)), 0.5),
            Duration::from_millis(3500)
        );
        assert!(b.after_busy(Some(secs(3)), 0.999_999) < secs(4));
        // The hint does not count as a failure: the next refusal continues from 2.
        assert_eq!(b.failures(), 2);
        // A hint beyond the cap is capped; none (or zero) is an ordinary failure.
        assert_eq!(b.after_busy(Some(secs(3600)), 0.0), secs(60));
        assert_eq!(b.after_busy(None, 1.0), secs(4));
        assert_eq!(b.after_busy(Some(Duration::ZERO), 1.0), secs(8));
        assert_eq!(b.failures(), 4);
    }

    #[test]
    fn retry_after_is_read_in_seconds_only() {
        assert_eq!(parse_retry_after("7"), Some(secs(7)));
        assert_eq!(parse_retry_after(" 2 "), Some(secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after(""), None);
    }

    #[test]
    fn a_rejected_key_retries_slowly_with_jitter() {
        assert_eq!(rejected_delay(secs(60), 0.0), secs(30));
        assert_eq!(rejected_delay(secs(60), 0.5), secs(60));
        assert!(rejected_delay(secs(60), 0.999) < secs(90));
    }

    #[test]
    fn random_draws_are_in_the_unit_interval_and_vary() {
        let draws: Vec<f64> = (0..64).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        assert!(draws.windows(2).any(|w| (w[0] - w[1]).abs() > f64::EPSILON));
    }
}
