//! The password-hashing threads: at most [`HashLimits::concurrent`] hashes at once, each on a
//! thread of its own that lives as long as the pool and owns argon2's working memory (19 MiB
//! with the default parameters), allocated once and reused by every hash it runs. So the
//! memory hashing takes is bounded by the number of threads: allocated per hash, as argon2
//! does by itself, the allocator kept much of it after each hash, growing without bound
//! under a login flood. In front of the threads a queue of at most
//! [`HashLimits::queue`] hashes, each waiting at most [`HashLimits::wait`] for a thread; a hash
//! that does not fit, or whose wait runs out, is [`HashingBusy`] and never runs.

use std::num::NonZeroUsize;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use argon2::Block;
use rmm_application::HashingBusy;

/// How much password hashing may run and wait at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashLimits {
    /// Hashes computed at once (threads).
    pub concurrent: NonZeroUsize,
    /// Hashes waiting for a thread, at most.
    pub queue: usize,
    /// How long a hash may wait for a thread.
    pub wait: Duration,
}

impl HashLimits {
    /// The default number of concurrent hashes: the number of cores, at most 4.
    #[must_use]
    pub fn default_concurrent() -> NonZeroUsize {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        NonZeroUsize::new(cores.min(4)).unwrap_or(NonZeroUsize::MIN)
    }
}

impl Default for HashLimits {
    fn default() -> Self {
        Self {
            concurrent: Self::default_concurrent(),
            queue: 64,
            wait: Duration::from_secs(2),
        }
    }
}

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const GIVEN_UP: u8 = 2;

/// A hash to compute, given the thread's working memory.
type Work = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// One hash to compute, unless its caller gave up waiting.
struct Job {
    state: Arc<AtomicU8>,
    work: Work,
}

/// The threads and their queue, started on first use.
#[derive(Debug, Clone, Default)]
pub(crate) struct HashPool {
    limits: HashLimits,
    queue: Arc<OnceLock<SyncSender<Job>>>,
}

impl HashPool {
    pub(crate) fn new(limits: HashLimits) -> Self {
        Self {
            limits,
            queue: Arc::default(),
        }
    }

    pub(crate) fn limits(&self) -> HashLimits {
        self.limits
    }

    fn sender(&self) -> &SyncSender<Job> {
        self.queue.get_or_init(|| {
            // Capacity 0 would be a rendezvous channel: a hash fits only when a thread waits.
            let (tx, rx) = std::sync::mpsc::sync_channel(self.limits.queue);
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..self.limits.concurrent.get() {
                let rx = Arc::clone(&rx);
                let spawned = std::thread::Builder::new()
                    .name(format!("argon2-{i}"))
                    .spawn(move || work(&rx));
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start a password-hashing thread");
                }
            }
            tx
        })
    }

    /// Runs `f` on a hashing thread, with that thread's working memory.
    ///
    /// # Errors
    /// [`HashingBusy`] when the queue is full, or no thread took `f` within the wait.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, HashingBusy> {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        let job = Job {
            state: Arc::clone(&state),
            work: Box::new(move |memory| {
                let _ = tx.send(f(memory));
            }),
        };
        match self.sender().try_send(job) {
            Ok(()) => hashes(WAITING).increment(1.0),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => return Err(HashingBusy),
        }
        match tokio::time::timeout(self.limits.wait, &mut rx).await {
            Ok(done) => done.map_err(|_| HashingBusy),
            // Still queued: it will be skipped. Already running: its result is worth waiting for.
            Err(_) => {
                match state.compare_exchange(QUEUED, GIVEN_UP, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => Err(HashingBusy),
                    Err(_) => rx.await.map_err(|_| HashingBusy),
                }
            }
        }
    }
}

/// The `state` label values of `rmm_password_hashes`: hashes in the queue (a given-up one
/// until a thread skips it), and hashes computing.
const WAITING: &str = "waiting";
const RUNNING_STATE: &str = "running";

/// The `rmm_password_hashes` gauge of `state` (for `/metrics`; a no-op without a recorder).
fn hashes(state: &'static str) -> metrics::Gauge {
    metrics::gauge!("rmm_password_hashes", "state" => state)
}

/// A hashing thread: takes jobs until the pool is dropped.
fn work(rx: &Mutex<Receiver<Job>>) {
    let mut memory = Vec::new();
    loop {
        let job = {
            let Ok(rx) = rx.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        hashes(WAITING).decrement(1.0);
        if job
            .state
            .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // A panic drops the job's answer (its caller sees HashingBusy); the thread lives on.
            hashes(RUNNING_STATE).increment(1.0);
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| (job.work)(&mut memory)));
            hashes(RUNNING_STATE).decrement(1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    use super::*;

    fn pool(concurrent: usize, queue: usize, wait_ms: u64) -> HashPool {
        HashPool::new(HashLimits {
            concurrent: NonZeroUsize::new(concurrent).unwrap(),
            queue,
            wait: Duration::from_millis(wait_ms),
        })
    }

    /// A job that holds its thread until `release` is set, counting how many run at once.
    fn holding(
        running: &Arc<AtomicUsize>,
        peak: &Arc<AtomicUsize>,
        release: &Arc<std::sync::atomic::AtomicBool>,
    ) -> impl FnOnce(&mut Vec<Block>) -> usize + Send + 'static {
        let (running, peak, release) = (Arc::clone(running), Arc::clone(peak), Arc::clone(release));
        move |_: &mut Vec<Block>| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let started = Instant::now();
            while !release.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(1));
            }
            running.fetch_sub(1, Ordering::SeqCst);
            now
        }
    }

    #[tokio::test]
    async fn at_most_concurrent_hashes_run_and_a_full_queue_is_refused_at_once() {
        let pool = pool(2, 3, 5_000);
        let (running, peak) = (Arc::default(), Arc::default());
        let release = Arc::default();
        let mut admitted = Vec::new();
        let mut submit = || {
            let (pool, job) = (pool.clone(), holding(&running, &peak, &release));
            admitted.push(tokio::spawn(async move { pool.run(job).await }));
        };
        // Two running (wait until both threads hold one), then three queued.
        submit();
        submit();
        let started = Instant::now();
        while running.load(Ordering::SeqCst) < 2 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "jobs never started"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        submit();
        submit();
        submit();
        // The spawned submissions run (on this single-threaded runtime) before we go on.
        tokio::task::yield_now().await;
        let refused_at = Instant::now();
        assert_eq!(pool.run(|_| 0).await, Err(HashingBusy));
        assert!(refused_at.elapsed() < Duration::from_millis(500));
        release.store(true, Ordering::SeqCst);
        for job in admitted {
            assert!(job.await.unwrap().is_ok());
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_hash_that_waits_too_long_is_refused_and_never_runs() {
        let pool = pool(1, 4, 100);
        let (running, peak) = (Arc::default(), Arc::default());
        let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let holder = {
            let (pool, job) = (pool.clone(), holding(&running, &peak, &release));
            tokio::spawn(async move { pool.run(job).await })
        };
        while running.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&ran);
        let waited = pool
            .run(move |_| counter.fetch_add(1, Ordering::SeqCst))
            .await;
        assert_eq!(waited, Err(HashingBusy));
        release.store(true, Ordering::SeqCst);
        // The holder still gets its answer (it was running when its wait ran out).
        assert_eq!(holder.await.unwrap(), Ok(1));
        assert_eq!(pool.run(|_| 7).await, Ok(7));
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the given-up hash ran");
    }
}
