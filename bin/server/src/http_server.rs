//! The HTTP/1.1 server loop, in place of `poem::Server` (which builds hyper without a timer,
//! so none of hyper's timeouts apply, and has no connection cap):
//!
//! - hyper's header-read timeout: a client must send each request's head within
//!   [`Limits::header_read_timeout`] of the connection's start or of its previous response
//!   (so an idle keep-alive connection is closed after it too);
//! - a connection cap: each connection holds a permit for as long as its socket is open
//!   (an upgraded WebSocket included); at the cap, new connections wait in the listen backlog
//!   instead of taking the descriptors the rest of the server needs;
//! - graceful shutdown: on the signal, stop accepting, let requests in flight finish, and wait
//!   up to a grace period for connections to close.
//!
//! HTTP/1.1 only, as over TLS (ALPN `http/1.1`): the WebSockets upgrade over it.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::combinators::BoxBody;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, EndpointExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::limits::Limits;

/// The listen backlog asked for; Linux caps it at `net.core.somaxconn` (4,096 by default).
/// tokio's own, 1,024, overflowed when a restarted server's whole fleet (19,500 agents here)
/// reconnected within the same second: the kernel dropped the handshakes it had no room
/// for, and those agents waited for TCP's retransmissions (1, 3, 7, 15 s and on), long after
/// the server had caught up.
pub const LISTEN_BACKLOG: u32 = 65_535;

/// Listens on `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as tokio's `bind` sets it,
/// so a restarted server binds at once).
///
/// # Errors
/// When the socket cannot be created, bound or put to listen.
pub fn listen(addr: std::net::SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How long shutdown waits for open connections to close.
pub const GRACE: Duration = Duration::from_secs(5);
/// At most one "connection cap reached" warning per this long.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Serves `endpoint` on `acceptor` within `limits` until `shutdown` resolves, then shuts down
/// gracefully (see the module's documentation).
///
/// # Errors
/// None today: accept errors (out of descriptors, a reset before accept) are logged and the
/// loop goes on.
pub async fn run<A, E>(
    mut acceptor: A,
    endpoint: E,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    A: Acceptor,
    A::Io: Unpin,
    E: Endpoint + 'static,
{
    let endpoint = Arc::new(endpoint.map_to_response());
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut last_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permit(&permits, limits.max_connections, &mut last_warning) => permit,
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = acceptor.accept() => accepted,
        };
        let (io, local, remote, scheme) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and the like: do not spin; the permit goes back.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let io = Permitted {
            io,
            _permit: permit,
        };
        tokio::spawn(connection(
            io,
            (local, remote, scheme),
            Arc::clone(&endpoint),
            limits.header_read_timeout,
            stop_rx.clone(),
        ));
    }
    drop(acceptor);
    let _ = stop_tx.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(GRACE, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::info!(
            open = limits.max_connections - permits.available_permits(),
            "connections still open after the grace period are dropped"
        );
    }
    Ok(())
}

/// A connection permit; warns (at most every [`CAP_WARNING_EVERY`]) when none is free.
async fn permit(
    permits: &Arc<Semaphore>,
    cap: usize,
    last_warning: &mut Option<Instant>,
) -> OwnedSemaphorePermit {
    if let Ok(permit) = Arc::clone(permits).try_acquire_owned() {
        return permit;
    }
    if last_warning.is_none_or(|at| at.elapsed() >= CAP_WARNING_EVERY) {
        *last_warning = Some(Instant::now());
        tracing::warn!(
            max_connections = cap,
            "connection cap reached: new connections wait until one closes (RMM_MAX_CONNECTIONS)"
        );
    }
    // The semaphore is never closed.
    match Arc::clone(permits).acquire_owned().await {
        Ok(permit) => permit,
        Err(_) => std::future::pending().await,
    }
}

type Addresses = (LocalAddr, RemoteAddr, poem::http::uri::Scheme);

/// Serves one connection until it closes, or until shutdown (then the request in flight may
/// finish, and keep-alive ends).
async fn connection<Io, E>(
    io: Io,
    (local, remote, scheme): Addresses,
    endpoint: Arc<E>,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    E: Endpoint<Output = poem::Response> + 'static,
{
    let peer = remote.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let endpoint = Arc::clone(&endpoint);
        let request = poem::Request::from((req, local.clone(), remote.clone(), scheme.clone()));
        async move {
            let response = endpoint.get_response(request).await;
            Ok::<_, Infallible>(hyper::Response::<BoxBody<Bytes, io::Error>>::from(response))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // A client that was too slow, or went away: routine, not worth more than debug.
        tracing::debug!(remote = %peer, error = %e, "connection ended with an error");
    }
}

/// Resolves once shutdown has begun (or the server is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// A connection's socket with its permit: the permit goes back when the socket is dropped,
/// wherever it went (hyper, or a WebSocket after an upgrade).
struct Permitted<Io> {
    io: Io,
    _permit: OwnedSemaphorePermit,
}

impl<Io: AsyncRead + Unpin> AsyncRead for Permitted<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Permitted<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// More connections than tokio's default backlog (1,024) complete their handshake while
    /// nothing accepts them: the kernel queues them instead of dropping their SYNs.
    #[tokio::test]
    async fn the_listen_backlog_holds_more_handshakes_than_tokios_default() {
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let want = somaxconn.min(1_500);
        assert!(
            want > 1_100,
            "net.core.somaxconn is {somaxconn}: this test needs it above 1,100"
        );
        // One descriptor per client.
        let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .expect("getrlimit");
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
            .expect("raise the open-file limit");
        let listener = listen("127.0.0.1:0".parse().expect("address")).expect("listen");
        let addr = listener.local_addr().expect("local address");
        let mut clients = Vec::new();
        for _ in 0..want {
            let connect = tokio::net::TcpStream::connect(addr);
            match tokio::time::timeout(Duration::from_secs(1), connect).await {
                Ok(Ok(client)) => clients.push(client),
                _ => break,
            }
        }
        assert_eq!(
            clients.len(),
            want,
            "handshakes the kernel completed unaccepted"
        );
    }
}
