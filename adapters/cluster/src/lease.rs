//! This node's lease, and the sweep that closes what lost nodes held.
//!
//! The lease lives in the database all nodes share, timed by the database's clock: renewed
//! every third of its time to live, so two missed renewals in a row still keep it. Every
//! node sweeps for leases that ran out every [`SWEEP`]; whichever claims one closes what that
//! node held (sessions `node_lost`, their commands `failed`, each with its audit entry) in one
//! transaction, and forgets the node's agents (they reconnect to the nodes left).

use std::sync::Arc;
use std::time::Duration;

use rmm_application::{App, Clock as _, NodeLeases, Ports};
use tokio::sync::watch;

use crate::presence::ClusterView;
use crate::{ClusterSettings, JoinError};

/// How often every node looks for leases that ran out.
pub const SWEEP: Duration = Duration::from_secs(2);

/// This node's lease: renewed in the background until [`Lease::leave`].
pub struct Lease {
    leave: Box<dyn FnOnce() -> futures_util::future::BoxFuture<'static, ()> + Send>,
    generation: u64,
    lost: watch::Receiver<bool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Takes the lease (a new generation) and starts renewing it.
    ///
    /// # Errors
    /// [`JoinError::Lease`] when the database cannot be reached.
    pub(crate) async fn take<L: NodeLeases>(
        leases: Arc<L>,
        settings: &ClusterSettings,
    ) -> Result<Self, JoinError> {
        let node = settings.node_id.clone();
        let ttl = settings.lease_ttl;
        let generation = leases.join(&node, ttl).await.map_err(JoinError::Lease)?;
        let (lost_tx, lost) = watch::channel(false);
        let renewer = tokio::spawn({
            let (leases, node) = (Arc::clone(&leases), node.clone());
            async move {
                let mut tick = tokio::time::interval(ttl / 3);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match leases.renew(&node, generation, ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::error!(%node, generation, "this node's lease ran out and another node closed what it held: stopping");
                            let _ = lost_tx.send(true);
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(%node, error = %e, "could not renew this node's lease; retrying");
                        }
                    }
                }
            }
        });
        let leave = {
            let (leases, node) = (Arc::clone(&leases), node.clone());
            Box::new(move || {
                Box::pin(async move {
                    if let Err(e) = leases.leave(&node, generation).await {
                        tracing::warn!(%node, error = %e, "could not give up this node's lease; the others close what is left when it runs out");
                    }
                }) as futures_util::future::BoxFuture<'static, ()>
            })
        };
        Ok(Self {
            leave,
            generation,
            lost,
            renewer,
        })
    }

    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn lost(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    pub(crate) async fn leave(self) {
        self.renewer.abort();
        (self.leave)().await;
    }
}

/// Sweeps for lost nodes every [`SWEEP`]: closes what they held, forgets their agents.
pub(crate) fn sweeper<P, L>(
    app: Arc<App<P>>,
    leases: Arc<L>,
    view: Arc<ClusterView>,
) -> tokio::task::JoinHandle<()>
where
    P: Ports,
    L: NodeLeases,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match rmm_application::sweep_lost_nodes(&*leases, app.clock().now()).await {
                Ok(lost) => {
                    for node in &lost {
                        view.forget(&node.node);
                    }
                    // Another node may have claimed it, or it left: forget what it had.
                    let silent = match leases.live_nodes().await {
                        Ok(live) => view.forget_all_but(&live),
                        Err(_) => Vec::new(),
                    };
                    for node in &silent {
                        tracing::info!(%node, "forgot a node whose lease is gone");
                    }
                    if !lost.is_empty() || !silent.is_empty() {
                        app.note_agents_changed();
                    }
                    let nodes = view.nodes();
                    let reachable = nodes.iter().filter(|(_, r)| *r).count();
                    metrics::gauge!("rmm_cluster_nodes", "state" => "reachable")
                        .set(reachable as f64);
                    metrics::gauge!("rmm_cluster_nodes", "state" => "silent")
                        .set((nodes.len() - reachable) as f64);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not sweep for lost nodes; retrying");
                }
            }
        }
    })
}
