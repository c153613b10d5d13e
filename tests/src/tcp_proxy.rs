//! A TCP proxy for fault injection: put it between two real processes (an `rmm-agent` and
//! `rmm-server`) and cut the path without closing anything. [`TcpProxy::partition`] turns it
//! into a black hole: no byte, FIN or new connection crosses, as when a router between the two
//! drops every packet; each side only learns of it from its own timers.
//! [`TcpProxy::heal`] lets traffic through again, as TCP's retransmissions would after the
//! path returns.
//!
//! While partitioned the proxy keeps reading what each side sends (holding it, up to a bound,
//! then leaving it in the kernel's buffers) so it can tell when a side gives up on a
//! connection: [`TcpProxy::wait_closed`] reports when the agent's or the server's side of a
//! connection closed, the moment each side detected its peer dead. Connections accepted while
//! partitioned are held, not refused (a SYN lost on the way, retransmitted by the kernel), and
//! reach the server once healed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// What a partitioned pump holds in memory per direction before it stops reading.
const HELD_MAX: usize = 1024 * 1024;

/// Which end of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The side that dialled the proxy (the agent).
    Client,
    /// The side the proxy dials (the server).
    Upstream,
}

/// What the proxy saw of one connection.
#[derive(Debug, Clone, Default)]
pub struct ConnectionLog {
    /// When the client connected to the proxy.
    pub accepted: Option<Instant>,
    /// When the last bytes were forwarded from the client to the server.
    pub last_to_upstream: Option<Instant>,
    /// When the last bytes were forwarded from the server to the client.
    pub last_to_client: Option<Instant>,
    /// When the client closed (or reset) its side.
    pub client_closed: Option<Instant>,
    /// When the server closed (or reset) its side.
    pub upstream_closed: Option<Instant>,
}

impl ConnectionLog {
    fn closed(&self, side: Side) -> Option<Instant> {
        match side {
            Side::Client => self.client_closed,
            Side::Upstream => self.upstream_closed,
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    connections: Mutex<Vec<ConnectionLog>>,
    changed: Notify,
}

impl Shared {
    fn update(&self, index: usize, f: impl FnOnce(&mut ConnectionLog)) {
        {
            let mut connections = self
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(log) = connections.get_mut(index) {
                f(log);
            }
        }
        self.changed.notify_waiters();
    }

    fn snapshot(&self) -> Vec<ConnectionLog> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A running proxy on a loopback port; stops (dropping every connection) when dropped.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    flowing: watch::Sender<bool>,
    shared: Arc<Shared>,
    acceptor: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let addr = listener.local_addr()?;
        let (flowing, _) = watch::channel(true);
        let shared = Arc::new(Shared::default());
        let acceptor = tokio::spawn(accept(
            listener,
            upstream,
            flowing.clone(),
            Arc::clone(&shared),
        ));
        Ok(Self {
            addr,
            flowing,
            shared,
            acceptor,
        })
    }

    /// The address clients dial instead of the upstream.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding anything, closing nothing; the moment it took effect.
    pub fn partition(&self) -> Instant {
        self.flowing.send_replace(false);
        Instant::now()
    }

    /// Forwards again: what was held goes through, held connections reach the upstream.
    pub fn heal(&self) -> Instant {
        self.flowing.send_replace(true);
        Instant::now()
    }

    /// What the proxy saw of each connection so far, in the order they were accepted.
    #[must_use]
    pub fn connections(&self) -> Vec<ConnectionLog> {
        self.shared.snapshot()
    }

    /// Waits until `side` of connection `index` (in accept order) has closed; when it did.
    ///
    /// # Errors
    /// When it has not closed within `within`.
    pub async fn wait_closed(
        &self,
        index: usize,
        side: Side,
        within: Duration,
    ) -> anyhow::Result<Instant> {
        self.wait_for(within, |logs| logs.get(index).and_then(|l| l.closed(side)))
            .await
            .with_context(|| format!("{side:?} side of proxied connection {index} still open"))
    }

    /// Waits until at least `count` connections have been accepted.
    ///
    /// # Errors
    /// When fewer were accepted within `within`.
    pub async fn wait_connections(&self, count: usize, within: Duration) -> anyhow::Result<()> {
        self.wait_for(within, |logs| (logs.len() >= count).then_some(()))
            .await
            .with_context(|| format!("the proxy did not accept {count} connections"))
    }

    async fn wait_for<T>(
        &self,
        within: Duration,
        mut check: impl FnMut(&[ConnectionLog]) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Registered before the check, so a change between the two is not missed.
            let changed = self.shared.changed.notified();
            if let Some(found) = check(&self.shared.snapshot()) {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                bail!("not within {within:?}");
            }
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    flowing: watch::Sender<bool>,
    shared: Arc<Shared>,
) {
    // The connections' tasks end with the acceptor (aborted on drop): no proxied socket
    // outlives the proxy.
    let mut tasks = tokio::task::JoinSet::new();
    while let Ok((client, _)) = listener.accept().await {
        let index = {
            let mut connections = shared
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            connections.push(ConnectionLog {
                accepted: Some(Instant::now()),
                ..ConnectionLog::default()
            });
            connections.len() - 1
        };
        shared.changed.notify_waiters();
        tasks.spawn(proxy_one(
            client,
            upstream,
            flowing.subscribe(),
            Arc::clone(&shared),
            index,
        ));
    }
}

/// One connection: dials the upstream once the path is up, then pumps both ways.
async fn proxy_one(
    client: TcpStream,
    upstream: SocketAddr,
    mut flowing: watch::Receiver<bool>,
    shared: Arc<Shared>,
    index: usize,
) {
    if flowing.wait_for(|up| *up).await.is_err() {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        shared.update(index, |l| l.upstream_closed = Some(Instant::now()));
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(
        client_read,
        server_write,
        flowing.clone(),
        Arc::clone(&shared),
        index,
        Side::Client,
    );
    let down = pump(
        server_read,
        client_write,
        flowing,
        shared,
        index,
        Side::Upstream,
    );
    tokio::join!(up, down);
}

/// Copies what `from` (the `side` end) sends to the other end while the path is up; while it
/// is down, reads and holds (so a close is seen) but forwards nothing, FIN included.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut flowing: watch::Receiver<bool>,
    shared: Arc<Shared>,
    index: usize,
    side: Side,
) {
    let mut held: Vec<u8> = Vec::new();
    let mut buf = vec![0_u8; 16 * 1024];
    let mut eof = false;
    loop {
        let up = *flowing.borrow_and_update();
        if up && !held.is_empty() {
            if to.write_all(&held).await.is_err() {
                return;
            }
            held.clear();
            forwarded(&shared, index, side);
        }
        if up && eof {
            let _ = to.shutdown().await;
            return;
        }
        if eof || held.len() >= HELD_MAX {
            // Nothing to read (or no room): only the path coming back changes anything.
            if flowing.changed().await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    eof = true;
                    shared.update(index, |l| match side {
                        Side::Client => l.client_closed = Some(Instant::now()),
                        Side::Upstream => l.upstream_closed = Some(Instant::now()),
                    });
                }
                Ok(n) => held.extend_from_slice(&buf[..n]),
            },
            changed = flowing.changed() => if changed.is_err() { return },
        }
    }
}

fn forwarded(shared: &Shared, index: usize, from: Side) {
    let now = Instant::now();
    shared.update(index, |l| match from {
        Side::Client => l.last_to_upstream = Some(now),
        Side::Upstream => l.last_to_client = Some(now),
    });
}
