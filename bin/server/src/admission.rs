//! Admission control of agent handshakes. Each agent handshake costs a key digest, a database
//! lookup and, once upgraded, a re-check and a presence write. When a restarted server is hit
//! by its whole fleet at once, at most [`AdmissionSettings::in_flight`] handshakes run and at
//! most [`AdmissionSettings::queue`] wait (each at most [`QUEUE_WAIT`]); the rest are answered
//! `503 server_busy` with a `Retry-After` hint at once, before any digest or query, so a storm
//! costs the server a bounded amount of memory and CPU. Agents honour the hint with jitter
//! (docs/protocol.md, "Connection").
//!
//! The hint grows with the number of handshakes shed in the current second: the more agents
//! are turned away, the further apart they are asked to come back, up to [`MAX_HINT_SECS`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The longest a handshake waits in the queue before it is shed.
pub const QUEUE_WAIT: Duration = Duration::from_secs(5);
/// The largest `Retry-After` the server hands out (seconds).
pub const MAX_HINT_SECS: u64 = 10;

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
    /// Handshakes the slots and the queue hold together: the hint's step.
    per_hint: usize,
    epoch: Instant,
    /// The second (since `epoch`) the shed count belongs to, and the count.
    window: AtomicU64,
    shed_in_window: AtomicU64,
    shed_total: AtomicU64,
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
            per_hint: settings.queue + settings.in_flight.max(1),
            epoch: Instant::now(),
            window: AtomicU64::new(0),
            shed_in_window: AtomicU64::new(0),
            shed_total: AtomicU64::new(0),
        }
    }

    /// A handshake slot: at once when one is free, after a wait in the queue when there is
    /// room in it, else (or when the wait exceeds [`QUEUE_WAIT`]) the hint to come back.
    ///
    /// # Errors
    /// [`Shed`] when the handshake is turned away.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, Shed> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
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
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; a wait too long is shed.
            Ok(Err(_)) | Err(_) => Err(self.shed()),
        }
    }

    /// Handshakes shed since the start.
    #[must_use]
    pub fn shed_total(&self) -> u64 {
        self.shed_total.load(Ordering::Relaxed)
    }

    /// Counts one shed handshake and says when to come back.
    fn shed(&self) -> Shed {
        self.shed_total.fetch_add(1, Ordering::Relaxed);
        let now = self.epoch.elapsed().as_secs();
        if self.window.swap(now, Ordering::AcqRel) != now {
            self.shed_in_window.store(0, Ordering::Release);
        }
        let shed = self.shed_in_window.fetch_add(1, Ordering::AcqRel);
        Shed {
            retry_after_secs: hint_secs(shed, self.per_hint),
        }
    }
}

/// The `Retry-After` for the `shed`-th handshake turned away this second, when `per_hint`
/// handshakes fit in the server's queue and slots: one second for the first `per_hint`, one
/// more for each further `per_hint`, at most [`MAX_HINT_SECS`].
#[must_use]
pub fn hint_secs(shed: u64, per_hint: usize) -> u64 {
    let per_hint = u64::try_from(per_hint.max(1)).unwrap_or(u64::MAX);
    (1 + shed / per_hint).min(MAX_HINT_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_grows_with_the_handshakes_shed_this_second_up_to_the_cap() {
        assert_eq!(hint_secs(0, 500), 1);
        assert_eq!(hint_secs(499, 500), 1);
        assert_eq!(hint_secs(500, 500), 2);
        assert_eq!(hint_secs(2_600, 500), 6);
        assert_eq!(hint_secs(1_000_000, 500), MAX_HINT_SECS);
        // A step of zero counts as one.
        assert_eq!(hint_secs(3, 0), 4);
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
        assert_eq!(admission.shed_total(), 1);
        drop(a);
        assert_eq!(queued.await.unwrap(), Ok(()));
        assert_eq!(admission.shed_total(), 1);
    }
}
