//! [`Metered`]: any store, with each port call timed into the `rmm_store_query_seconds`
//! histogram (label `op`: the port method, `trait.method`, a fixed set) and each command end
//! counted in `rmm_commands_total` (label `status`). The stores themselves know nothing of
//! metrics; `rmm-server` wraps the one it opens. Recorded through the `metrics` facade: with no
//! recorder installed (metrics off, tests) a record is a no-op.

use std::future::Future;
use std::time::Instant;

use rmm_domain::CommandStatus;

mod cluster;
mod ports;

/// The store `S`, its calls timed (see the module's documentation).
#[derive(Debug, Clone)]
pub struct Metered<S>(S);

impl<S> Metered<S> {
    pub const fn new(store: S) -> Self {
        Self(store)
    }

    /// The store inside.
    pub const fn inner(&self) -> &S {
        &self.0
    }
}

/// Runs `call`, recording how long it took under `op`.
async fn timed<T>(op: &'static str, call: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let result = call.await;
    metrics::histogram!("rmm_store_query_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    result
}

/// A command reached its final `status` (counted once: the store ends a command once).
fn command_ended(status: CommandStatus) {
    metrics::counter!("rmm_commands_total", "status" => status.as_str()).increment(1);
}
