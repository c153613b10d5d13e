//! The per-user cap on open sessions under concurrent opens of one user.
//!
//! The store counts the user's open sessions and inserts the pending one in one statement,
//! but a statement does not see another open of the same user whose insert is still on its
//! way. So each open of a user is counted here from before its insert until the insert
//! answered: an open checks the cap minus the opens of that user in flight (a stricter
//! check, never a looser one). Only when that refuses while others are in flight does it wait
//! for them and check again, exactly. Opens of one user therefore run side by side (they used
//! to take turns, which bounded one user's opens per second by a database round trip).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rmm_domain::UserId;
use tokio::sync::Notify;

/// One entry per user who opened a tunnel.
#[derive(Debug, Default)]
pub(crate) struct OpenGates(Mutex<HashMap<UserId, Arc<Gate>>>);

#[derive(Debug, Default)]
struct Gate {
    in_flight: AtomicU64,
    done: Notify,
}

/// An open counted in flight; dropped once its insert answered.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Gate>);

impl OpenGates {
    /// Counts an open of `user` in flight until the guard is dropped.
    pub(crate) fn enter(&self, user: UserId) -> InFlight {
        let gate = {
            let mut gates = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(gates.entry(user).or_default())
        };
        gate.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(gate)
    }
}

impl InFlight {
    /// The user's other opens in flight now.
    pub(crate) fn others(&self) -> u64 {
        self.0.in_flight.load(Ordering::SeqCst).saturating_sub(1)
    }

    /// Waits until fewer than `others` other opens are in flight.
    pub(crate) async fn fewer_than(&self, others: u64) {
        loop {
            // Created before the check: a drop in between still wakes it.
            let done = self.0.done.notified();
            if self.others() < others {
                return;
            }
            done.await;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.done.notify_waiters();
    }
}
