//! The direct path: a cross-node stream over a TCP connection from node to node, with NATS
//! used only to dial. On when a node has a cluster address (`RMM_CLUSTER_LISTEN`); a node
//! without one is dialled over NATS as before ([`crate::pipe`]).
//!
//! Why: over NATS each chunk of a stream passes through nats-server and five or six task
//! wake-ups per direction; over TCP it is one socket write and one read (bench/notes.md,
//! "Cluster mode").
//!
//! Who may connect: the dialling node asks over NATS (whose credentials and TLS keep others
//! out), and the dialled node answers with its address and a **ticket**: 122 random bits,
//! good for one connection within [`TICKET_LIFE`]. A connection to the cluster address must
//! say its ticket first ([`HELLO`] and the ticket) within [`HELLO_TIMEOUT`]; anything else
//! is closed unread, logged and counted (`rmm_cluster_direct_refused_total`). At most
//! [`MAX_HELLOS`] connections may be saying hello at once, and at most [`MAX_TICKETS`]
//! tickets wait for their connection. The bytes themselves are not encrypted: the cluster
//! address belongs on the nodes' private network (docs/deploy.md, "Cluster mode").
//!
//! A dead or stuck peer: a connection whose other node goes quiet (no presence heard for
//! [`crate::presence::SILENT_AFTER`]) is reset, as a stream over NATS is ([`Guarded`]): a
//! node that hangs (frozen, swapping) would otherwise hold forwarded requests forever, its
//! kernel still acknowledging their bytes. TCP keepalive (5 s idle, then 3 probes 1 s apart)
//! and a 10 s limit on unacknowledged data end a connection whose other node vanished.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

use crate::dial::{DIAL_TIMEOUT, Dial, DirectAnswer, Forwarded};
use crate::presence::ClusterView;

/// What a connection to a cluster address says first, before its ticket.
pub(crate) const HELLO: &[u8; 5] = b"rmmc1";
/// A ticket's length: a UUID's 32 hex digits.
const TICKET_LEN: usize = 32;
/// How long a ticket waits for its connection.
pub(crate) const TICKET_LIFE: Duration = DIAL_TIMEOUT;
/// How long a new connection has to say its ticket.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections saying hello at once, at most; more are closed at once.
pub(crate) const MAX_HELLOS: usize = 64;
/// Tickets waiting for their connection, at most; past that, dials go over NATS.
const MAX_TICKETS: usize = 1024;
/// How often a connection checks that its other node is still heard from.
const CHECK: Duration = Duration::from_millis(500);

/// Where a node listens for other nodes' direct connections.
#[derive(Debug, Clone)]
pub struct DirectSettings {
    /// The address to listen on (`RMM_CLUSTER_LISTEN`).
    pub listen: SocketAddr,
    /// The address other nodes connect to (`RMM_CLUSTER_ADVERTISE`); default: the address
    /// listened on (with the port the system chose, for port 0).
    pub advertise: Option<String>,
}

/// A node's cluster address: the tickets it gave and the connections that bring them.
#[derive(Debug)]
pub(crate) struct Direct {
    advertise: String,
    tickets: Mutex<HashMap<String, (Instant, Dial)>>,
    view: Arc<ClusterView>,
}

impl Direct {
    /// Listens on `settings.listen`; each connection that brings a ticket becomes a
    /// [`Forwarded`] connection on `accepted`.
    pub(crate) async fn start(
        settings: &DirectSettings,
        view: Arc<ClusterView>,
        accepted: tokio::sync::mpsc::Sender<Forwarded>,
    ) -> io::Result<(Arc<Self>, tokio::task::JoinHandle<()>)> {
        let listener = TcpListener::bind(settings.listen).await?;
        let bound = listener.local_addr()?;
        let direct = Arc::new(Self {
            advertise: settings
                .advertise
                .clone()
                .unwrap_or_else(|| bound.to_string()),
            tickets: Mutex::default(),
            view,
        });
        tracing::info!(listen = %bound, advertise = %direct.advertise, "cluster: direct streams from other nodes on this address");
        let task = tokio::spawn(Arc::clone(&direct).accept(listener, accepted));
        Ok((direct, task))
    }

    fn tickets(&self) -> MutexGuard<'_, HashMap<String, (Instant, Dial)>> {
        // Each update is one insert, removal or prune.
        self.tickets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A ticket for `dial`'s connection; `None` when too many wait (the dial goes over NATS).
    pub(crate) fn issue(&self, dial: Dial) -> Option<DirectAnswer> {
        let mut tickets = self.tickets();
        if tickets.len() >= MAX_TICKETS / 2 {
            tickets.retain(|_, (issued, _)| issued.elapsed() < TICKET_LIFE);
        }
        if tickets.len() >= MAX_TICKETS {
            return None;
        }
        let ticket = Uuid::new_v4().simple().to_string();
        tickets.insert(ticket.clone(), (Instant::now(), dial));
        Some(DirectAnswer {
            addr: self.advertise.clone(),
            ticket,
        })
    }

    /// The dial a ticket was given for, once, within its life.
    fn redeem(&self, ticket: &[u8]) -> Option<Dial> {
        let ticket = std::str::from_utf8(ticket).ok()?;
        let (issued, dial) = self.tickets().remove(ticket)?;
        (issued.elapsed() < TICKET_LIFE).then_some(dial)
    }

    async fn accept(
        self: Arc<Self>,
        listener: TcpListener,
        accepted: tokio::sync::mpsc::Sender<Forwarded>,
    ) {
        let hellos = Arc::new(tokio::sync::Semaphore::new(MAX_HELLOS));
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    tracing::warn!(error = %e, "cluster: cannot accept a direct connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&hellos).try_acquire_owned() else {
                refused(peer, "too many connections saying hello at once");
                continue;
            };
            let direct = Arc::clone(&self);
            let accepted = accepted.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let hello = tokio::time::timeout(HELLO_TIMEOUT, hello(stream)).await;
                let (stream, ticket) = match hello {
                    Ok(Ok(pair)) => pair,
                    Ok(Err(e)) => return refused(peer, &e.to_string()),
                    Err(_) => return refused(peer, "no ticket within the hello timeout"),
                };
                let Some(dial) = direct.redeem(&ticket) else {
                    return refused(peer, "unknown, used or expired ticket");
                };
                let io = Guarded::new(
                    stream,
                    Arc::from(dial.from.as_str()),
                    Arc::clone(&direct.view),
                );
                let forwarded = Forwarded {
                    io: Box::new(io),
                    remote: dial.remote.parse().ok(),
                    local: dial.local.parse().ok(),
                    https: dial.https,
                    from: dial.from,
                };
                let _ = accepted.send(forwarded).await;
            });
        }
    }
}

/// Reads a new connection's hello and ticket.
async fn hello(mut stream: TcpStream) -> io::Result<(TcpStream, [u8; TICKET_LEN])> {
    tune(&stream);
    let mut hello = [0u8; HELLO.len()];
    stream.read_exact(&mut hello).await?;
    if &hello != HELLO {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a node's hello",
        ));
    }
    let mut ticket = [0u8; TICKET_LEN];
    stream.read_exact(&mut ticket).await?;
    Ok((stream, ticket))
}

fn refused(peer: SocketAddr, why: &str) {
    tracing::warn!(%peer, why, "cluster: refused a connection to the cluster address");
    metrics::counter!("rmm_cluster_direct_refused_total").increment(1);
}

/// Connects to `node`, which gave `answer`, and says its ticket.
pub(crate) async fn connect(
    answer: &DirectAnswer,
    node: &str,
    view: &Arc<ClusterView>,
) -> io::Result<Guarded> {
    let mut stream = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&answer.addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    tune(&stream);
    let mut hello = Vec::with_capacity(HELLO.len() + answer.ticket.len());
    hello.extend_from_slice(HELLO);
    hello.extend_from_slice(answer.ticket.as_bytes());
    stream.write_all(&hello).await?;
    Ok(Guarded::new(stream, Arc::from(node), Arc::clone(view)))
}

/// A connection to another node, reset once that node goes quiet.
#[derive(Debug)]
pub(crate) struct Guarded {
    inner: TcpStream,
    state: Arc<Guard>,
}

#[derive(Debug, Default)]
struct Guard {
    reset: AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl Guarded {
    /// Wraps `inner`, and watches `peer` in `view` for as long as the connection lives.
    fn new(inner: TcpStream, peer: Arc<str>, view: Arc<ClusterView>) -> Self {
        let state = Arc::new(Guard::default());
        let watched = Arc::downgrade(&state);
        tokio::spawn(async move {
            let mut check = tokio::time::interval(CHECK);
            loop {
                check.tick().await;
                let Some(state) = watched.upgrade() else {
                    return;
                };
                if view.silent(&peer) {
                    tracing::debug!(%peer, "cluster: reset a connection to a node gone quiet");
                    state.reset.store(true, Ordering::SeqCst);
                    state.reader.wake();
                    state.writer.wake();
                    return;
                }
            }
        });
        Self { inner, state }
    }

    /// The error of a reset connection, once `waker` is registered to hear of one.
    fn check(&self, waker: &AtomicWaker, cx: &Context<'_>) -> io::Result<()> {
        waker.register(cx.waker());
        if self.state.reset.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the other node went quiet",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(&this.state.reader, cx)?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(&this.state.writer, cx)?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(&this.state.writer, cx)?;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// No Nagle delay (each write is a whole HTTP message or WebSocket frame), and a dead peer
/// found within seconds.
fn tune(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cluster: cannot set TCP_NODELAY");
    }
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(5))
        .with_interval(Duration::from_secs(1))
        .with_retries(3);
    if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cluster: cannot set TCP keepalive");
    }
    if let Err(e) = socket.set_tcp_user_timeout(Some(Duration::from_secs(10))) {
        tracing::debug!(error = %e, "cluster: cannot set TCP_USER_TIMEOUT");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dial() -> Dial {
        Dial {
            reply_to: String::new(),
            from: "a".into(),
            remote: "127.0.0.1:5000".into(),
            local: "127.0.0.1:8080".into(),
            https: false,
            direct: true,
        }
    }

    fn view() -> Arc<ClusterView> {
        Arc::new(ClusterView::new("b".into()))
    }

    async fn node() -> (
        Arc<Direct>,
        SocketAddr,
        tokio::sync::mpsc::Receiver<Forwarded>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let settings = DirectSettings {
            listen: "127.0.0.1:0".parse().expect("an address"),
            advertise: None,
        };
        let (direct, _task) = Direct::start(&settings, view(), tx).await.expect("listens");
        let addr = direct.advertise.parse().expect("the bound address");
        (direct, addr, rx)
    }

    #[tokio::test]
    async fn a_ticket_opens_one_connection_with_the_dials_addresses() {
        let (direct, _, mut accepted) = node().await;
        let answer = direct.issue(dial()).expect("a ticket");
        let mut dialler = connect(&answer, "b", &view()).await.expect("connects");
        dialler
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("writes");
        let mut served = tokio::time::timeout(Duration::from_secs(5), accepted.recv())
            .await
            .expect("served in time")
            .expect("a connection");
        assert_eq!(served.from, "a");
        assert_eq!(served.remote, Some("127.0.0.1:5000".parse().expect("addr")));
        let mut first = [0u8; 16];
        served.io.read_exact(&mut first).await.expect("reads");
        assert_eq!(
            &first, b"GET / HTTP/1.1\r\n",
            "the bytes after the ticket are the stream's"
        );
        // The same ticket again is refused: the connection is closed unread.
        let mut again = connect(&answer, "b", &view()).await.expect("connects");
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), again.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(accepted.try_recv().is_err(), "a used ticket serves nothing");
    }

    #[tokio::test]
    async fn a_connection_without_a_ticket_is_closed_unserved() {
        let (_direct, addr, mut accepted) = node().await;
        let mut stranger = TcpStream::connect(addr).await.expect("connects");
        stranger
            .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("writes");
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), stranger.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(accepted.try_recv().is_err());
        // A forged ticket of the right shape is refused too.
        let forged = DirectAnswer {
            addr: addr.to_string(),
            ticket: Uuid::new_v4().simple().to_string(),
        };
        let mut forger = connect(&forged, "b", &view()).await.expect("connects");
        let read = tokio::time::timeout(Duration::from_secs(5), forger.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(accepted.try_recv().is_err());
    }

    #[tokio::test]
    async fn an_expired_ticket_is_refused() {
        let (direct, _, _accepted) = node().await;
        let answer = direct.issue(dial()).expect("a ticket");
        if let Some(entry) = direct.tickets().get_mut(&answer.ticket) {
            entry.0 = Instant::now()
                .checked_sub(TICKET_LIFE + Duration::from_secs(1))
                .expect("the clock is past the ticket life");
        }
        assert!(direct.redeem(answer.ticket.as_bytes()).is_none());
    }

    #[tokio::test]
    async fn tickets_are_bounded() {
        let (direct, _, _accepted) = node().await;
        let issued = (0..MAX_TICKETS + 10)
            .filter_map(|_| direct.issue(dial()))
            .count();
        assert_eq!(issued, MAX_TICKETS);
    }

    #[tokio::test]
    async fn a_connection_to_a_node_gone_quiet_is_reset() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("an address");
        let accepting = tokio::spawn(async move { listener.accept().await });
        let stream = TcpStream::connect(addr).await.expect("connects");
        // The other end stays open and says nothing, as a frozen node's kernel would.
        let _other = accepting.await.expect("accepts").expect("a connection");
        let view = view();
        let mut guarded = Guarded::new(stream, Arc::from("c"), Arc::clone(&view));
        let mut buf = [0u8; 1];
        let waited = tokio::time::timeout(Duration::from_millis(700), guarded.read(&mut buf)).await;
        assert!(
            waited.is_err(),
            "a quiet connection to a node not known as silent ended"
        );
        // The node's lease is gone: it is silent from now on.
        view.forget("c");
        let read = tokio::time::timeout(Duration::from_secs(5), guarded.read(&mut buf))
            .await
            .expect("the read ends once the node is silent");
        assert_eq!(
            read.map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::ConnectionReset)
        );
        let write = guarded.write_all(b"x").await;
        assert_eq!(
            write.map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::ConnectionReset)
        );
    }
}
