//! Cluster mode: several `rmm-server` nodes share one PostgreSQL and a NATS server.
//!
//! - **Leases** ([`lease`]): each node holds a lease in the database and renews it; a node
//!   whose lease runs out (killed, cut off) is claimed by another, which closes what it held
//!   (`node_lost`). A node that restarts takes its lease back with a new generation and
//!   reconciles only its own sessions.
//! - **Presence** ([`presence`]): each node tells the others over NATS which agents are
//!   connected to it and in which mode, so `GET /api/v1/agents` lists an agent as connected
//!   wherever it is, and a node drops a connection that an agent has replaced on another node.
//! - **Forwarding** ([`forward`]): a request for an agent on another node is served there,
//!   over a TCP connection to that node's cluster address ([`direct`]) when it has one, else
//!   over NATS ([`pipe`]).
//!
//! Single-node mode uses none of this: no NATS, no lease.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rmm_application::{App, NodeLeases, Ports};
use rmm_gateway::agents::WsAgentGateway;
use tokio::sync::watch;

mod answer;
mod dial;
pub mod direct;
pub mod forward;
pub mod lease;
mod pipe;
mod pool;
pub mod presence;
mod subjects;

pub use dial::{Connection, Forwarded, Stream};
pub use direct::DirectSettings;
pub use forward::{Forward, Forwarder, SessionNode};
pub use presence::ClusterView;
pub use subjects::Subjects;

/// How a node joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The NATS server(s), comma-separated (`nats://host:4222`, `tls://host:4222`).
    pub nats_url: String,
    /// This node's id: unique in the cluster, the same across its restarts.
    pub node_id: String,
    /// A NATS credentials file (JWT and NKey seed), when the server requires one.
    pub creds: Option<PathBuf>,
    /// A PEM file of CA certificates to trust for the NATS server's TLS certificate.
    pub ca: Option<PathBuf>,
    /// Whether to require TLS to NATS.
    pub tls: bool,
    /// The first token of every subject this cluster uses (one NATS account may hold more
    /// than one cluster, each with its own prefix).
    pub subject_prefix: String,
    /// How long a lease lasts without renewal: a dead node is found within this (plus one
    /// sweep period).
    pub lease_ttl: Duration,
    /// This node's cluster address, for other nodes' direct connections; `None`: they reach
    /// it over NATS.
    pub direct: Option<DirectSettings>,
}

/// The node ids a node may have: what a NATS subject token allows, and short.
///
/// # Errors
/// A message naming the setting and what is allowed.
pub fn check_node_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "node id {id:?} is not valid (RMM_NODE_ID): use 1 to 64 letters, digits, '-' or '_'"
        ))
    }
}

/// How a node's HTTP side and the cluster meet.
pub struct Links {
    /// Where the requests other nodes forward go, to be served as connections.
    pub accepted: tokio::sync::mpsc::Sender<Forwarded>,
    /// The node of an open session.
    pub session_node: SessionNode,
    /// The largest JSON body the forwarder reads to route a request.
    pub max_json_body: usize,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").finish_non_exhaustive()
    }
}

/// Why the cluster could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cannot read the NATS credentials file {path} (RMM_NATS_CREDS): {source}")]
    Creds {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to NATS at {url} (RMM_NATS_URL): {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot subscribe to NATS subject {subject}: {source}")]
    Subscribe {
        subject: String,
        #[source]
        source: async_nats::SubscribeError,
    },
    #[error("cannot listen on the cluster address {addr} (RMM_CLUSTER_LISTEN): {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot take this node's lease in the database: {0}")]
    Lease(#[source] rmm_application::StoreError),
}

/// A node's part in the cluster, for as long as it serves.
#[derive(Debug)]
pub struct Node {
    pub view: Arc<ClusterView>,
    forwarder: Forwarder,
    lease: lease::Lease,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// Joins: takes the lease, connects to NATS, starts telling and hearing presence, and
    /// takes the requests other nodes forward (onto `accepted`, to serve as connections).
    ///
    /// # Errors
    /// [`JoinError`].
    pub async fn join<P, L>(
        settings: &ClusterSettings,
        app: Arc<App<P>>,
        leases: Arc<L>,
        links: Links,
    ) -> Result<Self, JoinError>
    where
        P: Ports<Gateway = WsAgentGateway>,
        L: NodeLeases,
    {
        let client = connect(settings).await?;
        let subjects = Subjects::new(&settings.subject_prefix, &settings.node_id);
        let view = Arc::new(ClusterView::new(settings.node_id.clone()));
        // The cluster address before the lease: a node that cannot listen stops without
        // leaving a lease for the others to sweep.
        let (direct, listening) = match &settings.direct {
            Some(direct) => {
                let (direct, task) =
                    direct::Direct::start(direct, Arc::clone(&view), links.accepted.clone())
                        .await
                        .map_err(|source| JoinError::Listen {
                            addr: direct.listen,
                            source,
                        })?;
                (Some(direct), Some(task))
            }
            None => (None, None),
        };
        let lease = lease::Lease::take(Arc::clone(&leases), settings).await?;
        tracing::info!(node = %settings.node_id, generation = lease.generation(), nats = %settings.nats_url, "joined the cluster");
        app.gateway()
            .set_elsewhere(Arc::clone(&view) as Arc<dyn rmm_gateway::agents::Elsewhere>);
        let mut tasks = presence::start(
            client.clone(),
            subjects.clone(),
            Arc::clone(&view),
            Arc::clone(&app),
        )
        .await?;
        tasks.extend(listening);
        tasks.push(
            answer::answer_dials(
                client.clone(),
                subjects.clone(),
                Arc::clone(&view),
                links.accepted,
                direct,
            )
            .await?,
        );
        let local: forward::IsLocal = {
            let app = Arc::clone(&app);
            Arc::new(move |agent| app.gateway().connected_here(agent))
        };
        tasks.push(lease::sweeper(app, leases, Arc::clone(&view)));
        let forwarder = Forwarder::new(
            client,
            subjects,
            Arc::clone(&view),
            links.session_node,
            local,
            links.max_json_body,
        );
        Ok(Self {
            view,
            forwarder,
            lease,
            tasks,
        })
    }

    /// What forwards requests to the nodes that serve them.
    #[must_use]
    pub fn forwarder(&self) -> Forwarder {
        self.forwarder.clone()
    }

    /// Changes to `true` when this node lost its lease: another node has closed what it
    /// held, so it must stop serving.
    #[must_use]
    pub fn lost(&self) -> watch::Receiver<bool> {
        self.lease.lost()
    }

    /// Leaves the cluster (after its sessions are closed): the lease is given up, so no
    /// other node waits for it to run out.
    pub async fn leave(self) {
        for task in &self.tasks {
            task.abort();
        }
        self.lease.leave().await;
    }
}

async fn connect(settings: &ClusterSettings) -> Result<async_nats::Client, JoinError> {
    let subjects = Subjects::new(&settings.subject_prefix, &settings.node_id);
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("rmm-server {}", settings.node_id))
        // Replies come back under the cluster's prefix, not the shared `_INBOX.>`: the
        // permissions that keep other users of the NATS server out cover them too.
        .custom_inbox_prefix(subjects.inbox_prefix())
        // No retry at start: a wrong URL or credentials stop the start with one line naming
        // the setting. Once connected, the client reconnects for as long as it takes.
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                async_nats::Event::Disconnected => {
                    tracing::warn!(
                        "NATS disconnected: agents on other nodes are out of reach until it is back"
                    );
                }
                other => tracing::info!(event = %other, "NATS"),
            }
        });
    if let Some(path) = &settings.creds {
        options = options
            .credentials_file(path)
            .await
            .map_err(|source| JoinError::Creds {
                path: path.clone(),
                source,
            })?;
    }
    if let Some(ca) = &settings.ca {
        options = options.add_root_certificates(ca.clone());
    }
    if settings.tls {
        options = options.require_tls(true);
    }
    options
        .connect(settings.nats_url.as_str())
        .await
        .map_err(|source| JoinError::Connect {
            url: settings.nats_url.clone(),
            source,
        })
}
