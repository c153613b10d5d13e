//! Admission control of agent handshakes. Each agent handshake costs a key digest, a database
//! lookup and, once upgraded, a re-check and a presence write. When a restarted server is hit
//! by its whole fleet at once, at most [`AdmissionSettings::in_flight`] handshakes run and at
//! most [`AdmissionSettings::queue`] wait (each at most [`QUEUE_WAIT`]); the rest are answered
//! `503 server_busy` with a `Retry-After` hint at once, before any digest or query, so a storm
//! costs the server a bounded amount of memory and CPU. Agents honour the hint with jitter
//! (docs/protocol.md, "Connection").
//!
//! The hint is a place in line: the server measures how fast it admits handshakes and hands
//! each turned-away agent the next free moment at that rate, so a fleet shed in one second
//! comes back spread over exactly the time the server needs to take it (the agent adds under
//! a second of jitter). Guessing the rate too high only brings agents back early, to be given
//! a later moment; too low would leave the server idle, so the guess errs high.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::Args;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The longest a handshake waits in the queue before it is shed.
pub const QUEUE_WAIT: Duration = Duration::from_secs(5);
/// The largest `Retry-After` the server hands out (seconds): the agents' backoff cap.
pub const MAX_HINT_SECS: u64 = 60;
/// The admission rate assumed until one is measured (handshakes per second): above what this
/// kind of machine does (about 1,100 per second on 2 cores), as the guess must err high.
const GUESSED_RATE: f64 = 2_000.0;
/// How long admissions are counted before their rate replaces the guess.
const MEASURE_AFTER: Duration = Duration::from_millis(250);
/// The measured rate is raised by this much: agents come back early rather than leave the
/// server idle. The rate measured in a storm's first second is the lowest of the storm (the
/// server is also turning thousands away): with 1.25, 19,500 restarted agents were spaced
/// over up to 9 s while the server admitted ~2,800 a second at 75% of a core; with 2, the
/// storm took 6–8 s in three runs out of three, turning away no more agents.
const OPTIMISM: f64 = 2.0;
/// While handshakes are shed, the log says how many, at most this often.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Flags and environment variables of the admission control.
#[derive(Debug, Clone, Copy, Args)]
pub struct AdmissionSettings {
    /// Agent handshakes (key check, database lookup, registration) run at once.
    #[arg(
        long = "agent-handshakes",
        env = "RMM_AGENT_HANDSHAKES",
        default_value_t = 64,
        global = true
    )]
    pub in_flight: usize,
    /// Agent handshakes waiting for a slot, at most; more are answered 503 with Retry-After.
    #[arg(
        long = "agent-handshake-queue",
        env = "RMM_AGENT_HANDSHAKE_QUEUE",
        default_value_t = 512,
        global = true
    )]
    pub queue: usize,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            in_flight: 64,
            queue: 512,
        }
    }
}

/// The handshake gate (one per server).
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
    /// Handshakes given a slot since the start.
    admitted: AtomicU64,
    shed_total: AtomicU64,
    line: Mutex<Line>,
}

/// The moments handed to turned-away agents. Never locked across an `.await`.
#[derive(Debug)]
struct Line {
    /// The last moment handed out; before now when nobody is waiting to come back.
    until: Instant,
    /// When the current backlog began, and `admitted` then: the rate is measured from there.
    since: Instant,
    admitted_since: u64,
    /// The last backlog log line, and `admitted` and `shed_total` then.
    logged: Instant,
    admitted_logged: u64,
    shed_logged: u64,
}

/// A handshake turned away: come back after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shed {
    pub retry_after_secs: u64,
}

impl Admission {
    #[must_use]
    pub fn new(settings: AdmissionSettings) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(settings.in_flight.max(1))),
            waiting: AtomicUsize::new(0),
            queue: settings.queue,
            admitted: AtomicU64::new(0),
            shed_total: AtomicU64::new(0),
            line: Mutex::new(Line {
                until: Instant::now(),
                since: Instant::now(),
                admitted_since: 0,
                logged: Instant::now(),
                admitted_logged: 0,
                shed_logged: 0,
            }),
        }
    }

    /// A handshake slot: at once when one is free, after a wait in the queue when there is
    /// room in it, else (or when the wait exceeds [`QUEUE_WAIT`]) the hint to come back.
    ///
    /// # Errors
    /// [`Shed`] when the handshake is turned away.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, Shed> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            self.admitted.fetch_add(1, Ordering::Relaxed);
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(self.shed());
        }
        let waited =
            tokio::time::timeout(QUEUE_WAIT, Arc::clone(&self.slots).acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match waited {
            Ok(Ok(permit)) => {
                self.admitted.fetch_add(1, Ordering::Relaxed);
                Ok(permit)
            }
            // The semaphore is never closed; a wait too long is shed.
            Ok(Err(_)) | Err(_) => Err(self.shed()),
        }
    }

    /// Handshakes shed since the start.
    #[must_use]
    pub fn shed_total(&self) -> u64 {
        self.shed_total.load(Ordering::Relaxed)
    }

    /// Counts one shed handshake and says when to come back: the next free moment in line.
    fn shed(&self) -> Shed {
        self.shed_total.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let admitted = self.admitted.load(Ordering::Relaxed);
        let mut line = self.line.lock().unwrap_or_else(PoisonError::into_inner);
        if line.until <= now {
            // Nobody is waiting to come back: a new backlog, measured afresh.
            line.since = now;
            line.admitted_since = admitted;
        }
        let rate = admission_rate(
            admitted.saturating_sub(line.admitted_since),
            now.saturating_duration_since(line.since),
        );
        line.until = line.until.max(now) + Duration::from_secs_f64(1.0 / rate);
        if now.saturating_duration_since(line.logged) >= LOG_EVERY {
            let shed = self.shed_total.load(Ordering::Relaxed);
            tracing::info!(
                admitted = admitted - line.admitted_logged,
                shed = shed - line.shed_logged,
                over_ms = now.saturating_duration_since(line.logged).as_millis(),
                spacing_rate = rate.round(),
                line_ends_in_secs = line.until.saturating_duration_since(now).as_secs_f32(),
                "agent handshakes shed: the server is busy; agents are told when to come back"
            );
            line.logged = now;
            line.admitted_logged = admitted;
            line.shed_logged = shed;
        }
        Shed {
            retry_after_secs: hint_secs(line.until.saturating_duration_since(now)),
        }
    }
}

/// Handshakes per second to space the line by: what was admitted over `elapsed` (raised by
/// [`OPTIMISM`]), or [`GUESSED_RATE`] before [`MEASURE_AFTER`].
fn admission_rate(admitted: u64, elapsed: Duration) -> f64 {
    if elapsed < MEASURE_AFTER || admitted == 0 {
        return GUESSED_RATE;
    }
    #[allow(clippy::cast_precision_loss)] // A count of handshakes: far below 2^52.
    let measured = admitted as f64 / elapsed.as_secs_f64();
    (measured * OPTIMISM).max(1.0)
}

/// The `Retry-After` for a moment `ahead` of now: whole seconds, rounded up, 1 to
/// [`MAX_HINT_SECS`].
#[must_use]
pub fn hint_secs(ahead: Duration) -> u64 {
    let secs = ahead.as_secs() + u64::from(ahead.subsec_nanos() > 0);
    secs.clamp(1, MAX_HINT_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_is_the_moment_ahead_rounded_up_within_bounds() {
        assert_eq!(hint_secs(Duration::ZERO), 1);
        assert_eq!(hint_secs(Duration::from_millis(1)), 1);
        assert_eq!(hint_secs(Duration::from_millis(1_000)), 1);
        assert_eq!(hint_secs(Duration::from_millis(1_001)), 2);
        assert_eq!(hint_secs(Duration::from_secs(17)), 17);
        assert_eq!(hint_secs(Duration::from_secs(3_600)), MAX_HINT_SECS);
    }

    #[test]
    fn the_rate_is_guessed_high_until_measured_then_measured_with_a_margin() {
        assert!((admission_rate(500, Duration::from_millis(100)) - GUESSED_RATE).abs() < 1e-9);
        assert!((admission_rate(0, Duration::from_secs(5)) - GUESSED_RATE).abs() < 1e-9);
        let rate = admission_rate(1_100, Duration::from_secs(1));
        assert!((rate - 1_100.0 * OPTIMISM).abs() < 1e-6, "{rate}");
    }

    #[tokio::test]
    async fn a_backlog_is_spread_at_the_measured_rate() {
        let admission = Admission::new(AdmissionSettings {
            in_flight: 1,
            queue: 0,
        });
        let _held = admission.enter().await.unwrap();
        // Before any measure: the guessed rate, one moment after the other.
        let mut hints = Vec::new();
        for _ in 0..4_000 {
            hints.push(admission.enter().await.unwrap_err().retry_after_secs);
        }
        assert_eq!(hints[0], 1);
        assert!(
            hints.windows(2).all(|w| w[0] <= w[1]),
            "hints never go back"
        );
        // 4,000 at 2,000 per second: the last comes back two seconds on.
        assert_eq!(*hints.last().unwrap(), 2);
        assert_eq!(admission.shed_total(), 4_000);
    }

    #[tokio::test]
    async fn beyond_the_slots_and_the_queue_handshakes_are_shed_at_once() {
        let admission = Arc::new(Admission::new(AdmissionSettings {
            in_flight: 2,
            queue: 1,
        }));
        let a = admission.enter().await.unwrap();
        let _b = admission.enter().await.unwrap();
        // The third waits in the queue; the fourth finds it full.
        let queued = tokio::spawn({
            let admission = Arc::clone(&admission);
            async move { admission.enter().await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let shed = admission.enter().await.unwrap_err();
        assert_eq!(shed.retry_after_secs, 1);
        assert_eq!(admission.admitted.load(Ordering::Relaxed), 2);
        assert_eq!(admission.shed_total(), 1);
        drop(a);
        assert_eq!(queued.await.unwrap(), Ok(()));
        assert_eq!(admission.shed_total(), 1);
    }
}
