//! Idle cross-node HTTP/1.1 connections, kept for the next request to the same node from the
//! same client IP address: a request then skips the dial (a NATS round trip) and the new
//! connection. Keyed by client IP too, because the serving node knows a connection's client
//! by the address it was dialled with. Bounded per key and in all, and dropped well
//! before the serving node closes an idle connection (after `RMM_HEADER_READ_TIMEOUT_SECS`,
//! at least 1 s; connections older than [`MAX_AGE`] are not reused).

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// A connection's sending half.
pub(crate) type Sender = hyper::client::conn::http1::SendRequest<BoxBody<Bytes, io::Error>>;

/// Idle connections kept per node and client address.
const MAX_IDLE_PER_KEY: usize = 8;
/// Idle connections kept in all.
const MAX_IDLE: usize = 256;
/// A connection idle since longer than this is not reused (the serving node may be closing
/// it: it closes idle connections after its header-read timeout, 1 s at the least).
pub(crate) const MAX_AGE: Duration = Duration::from_millis(800);

/// Where a connection leads, and for whom.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub node: String,
    pub remote: String,
    pub https: bool,
}

#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<Key, Vec<(Instant, Sender)>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Vec<(Instant, Sender)>>> {
        // Each update is one push or pop: a panic elsewhere leaves the map usable.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently idle connection of `key` that can send now.
    pub(crate) fn take(&self, key: &Key) -> Option<Sender> {
        let mut idle = self.lock();
        let list = idle.get_mut(key)?;
        let found = loop {
            let Some((since, sender)) = list.pop() else {
                break None;
            };
            if since.elapsed() < MAX_AGE && sender.is_ready() && !sender.is_closed() {
                break Some(sender);
            }
        };
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    /// Keeps `sender` once its response has been read to the end (never, when that does not
    /// happen or the connection closes first).
    pub(crate) fn keep(self: &Arc<Self>, key: Key, mut sender: Sender) {
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            if sender.ready().await.is_err() {
                return;
            }
            let mut idle = pool.lock();
            let total: usize = idle.values().map(Vec::len).sum();
            if total >= MAX_IDLE {
                // Make room: connections past their age are of no use.
                idle.retain(|_, list| {
                    list.retain(|(since, _)| since.elapsed() < MAX_AGE);
                    !list.is_empty()
                });
                if idle.values().map(Vec::len).sum::<usize>() >= MAX_IDLE {
                    return;
                }
            }
            let list = idle.entry(key).or_default();
            if list.len() < MAX_IDLE_PER_KEY {
                list.push((Instant::now(), sender));
            }
        });
    }
}
