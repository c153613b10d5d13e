//! Idle cross-node HTTP/1.1 connections, kept for the next request to the same node from the
//! same client IP address: a request then skips the dial (a NATS round trip) and the new
//! connection. Keyed by client IP too, because the serving node knows a connection's client
//! by the address it was dialled with. Bounded per key and in all, and dropped well
//! before the serving node closes an idle connection (after `RMM_HEADER_READ_TIMEOUT_SECS`,
//! at least 1 s; connections older than [`MAX_AGE`] are not reused).
//!
//! A client that gives up on a request (`rmm exec` drops its long poll for the command's end
//! once the stream told it) would cost the connection, and the next request a new dial:
//! HTTP/1.1 cannot abandon a request and keep its connection. So a request is sent in a task
//! of its own ([`exchange`]) that finishes it even when its client is gone, and a response
//! body dropped before its end is read to the end in the background ([`Drained`]) — each for
//! at most [`ABANDONED_GRACE`] and [`DRAIN_LIMIT`] bytes, else the connection is closed.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// A connection's sending half.
pub(crate) type Sender = hyper::client::conn::http1::SendRequest<BoxBody<Bytes, io::Error>>;

/// Idle connections kept per node and client address.
const MAX_IDLE_PER_KEY: usize = 8;
/// Idle connections kept in all.
const MAX_IDLE: usize = 256;
/// A connection idle since longer than this is not reused (the serving node may be closing
/// it: it closes idle connections after its header-read timeout, 1 s at the least).
pub(crate) const MAX_AGE: Duration = Duration::from_millis(800);
/// How long a request or response its client gave up on is still read, to keep its
/// connection.
const ABANDONED_GRACE: Duration = Duration::from_secs(1);
/// The most of an abandoned response read to keep its connection.
const DRAIN_LIMIT: usize = 1024 * 1024;

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

/// Why an exchange gave no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error(
        "the client went away before the answer, which did not come within {ABANDONED_GRACE:?}"
    )]
    Abandoned,
}

/// Sends `request` on `sender`'s connection and gives back the response; the connection goes
/// back to `pool` under `key` once the response is read to the end, by the client or, when
/// it goes away, by [`Drained`]. A client that goes away before the response arrives leaves
/// it to this task, which waits [`ABANDONED_GRACE`] for it.
pub(crate) async fn exchange(
    pool: &Arc<Pool>,
    key: Key,
    mut sender: Sender,
    request: hyper::Request<BoxBody<Bytes, io::Error>>,
) -> Result<hyper::Response<Drained>, ExchangeError> {
    let (mut tx, rx) = tokio::sync::oneshot::channel();
    let pool = Arc::clone(pool);
    tokio::spawn(async move {
        let sent = sender.send_request(request);
        tokio::pin!(sent);
        let result = tokio::select! {
            result = &mut sent => result,
            () = tx.closed() => match tokio::time::timeout(ABANDONED_GRACE, sent).await {
                Ok(result) => result,
                // Dropping the request closes the connection.
                Err(_) => return,
            },
        };
        let result = result.map(|response| {
            pool.keep(key, sender);
            response.map(Drained::new)
        });
        // A response nobody waits for any more is dropped: Drained reads it to the end.
        let _ = tx.send(result.map_err(ExchangeError::from));
    });
    rx.await.unwrap_or(Err(ExchangeError::Abandoned))
}

/// A forwarded response's body which, dropped before its end, is read to the end in the
/// background (at most [`DRAIN_LIMIT`] bytes within [`ABANDONED_GRACE`]), so the connection
/// it came on can serve the next request.
#[derive(Debug)]
pub(crate) struct Drained {
    inner: Option<Incoming>,
}

impl Drained {
    fn new(body: Incoming) -> Self {
        Self { inner: Some(body) }
    }
}

impl Body for Drained {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        let Some(body) = self.inner.take().filter(|b| !b.is_end_stream()) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(body));
        }
    }
}

/// Reads what is left of `body`, within the limits; an error or a limit drops it (and with
/// it the connection).
async fn drain(mut body: Incoming) {
    let read = async {
        let mut read = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, Bytes::len);
            if read > DRAIN_LIMIT {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(ABANDONED_GRACE, read).await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{Empty, Full};
    use hyper_util::rt::TokioIo;

    use super::*;

    /// A loopback HTTP/1.1 server: `/slow` answers after 100 ms, `/big` with 512 KiB,
    /// anything else `ok`. Counts the connections it accepted.
    async fn server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let addr = listener.local_addr().expect("an address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let service =
                    hyper::service::service_fn(|req: hyper::Request<Incoming>| async move {
                        let body = match req.uri().path() {
                            "/slow" => {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                Bytes::from_static(b"slow")
                            }
                            "/big" => Bytes::from(vec![b'x'; 512 * 1024]),
                            _ => Bytes::from_static(b"ok"),
                        };
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body)))
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (addr, accepted)
    }

    async fn connect(addr: std::net::SocketAddr) -> Sender {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshakes");
        tokio::spawn(connection);
        sender
    }

    fn get(path: &str) -> hyper::Request<BoxBody<Bytes, io::Error>> {
        hyper::Request::get(path)
            .header("host", "node")
            .body(Empty::new().map_err(|never| match never {}).boxed())
            .expect("a request")
    }

    fn key() -> Key {
        Key {
            node: "node-c".into(),
            remote: "127.0.0.1".into(),
            https: false,
        }
    }

    /// The connection back in the pool, within 2 s.
    async fn kept(pool: &Pool) -> Sender {
        for _ in 0..200 {
            if let Some(sender) = pool.take(&key()) {
                return sender;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the connection did not come back to the pool");
    }

    /// The connection comes back to the pool and serves the next request: no second one.
    async fn serves_the_next_request(pool: &Arc<Pool>, accepted: &AtomicUsize) {
        let sender = kept(pool).await;
        let response = exchange(pool, key(), sender, get("/fast"))
            .await
            .expect("answered");
        assert_eq!(text(response).await, "ok");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "a second connection was made"
        );
    }

    async fn text(response: hyper::Response<Drained>) -> Bytes {
        response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes()
    }

    #[tokio::test]
    async fn a_request_its_client_gave_up_on_keeps_its_connection() {
        let (addr, accepted) = server().await;
        let pool = Arc::new(Pool::default());
        let sender = connect(addr).await;
        // The client goes away 10 ms into a 100 ms answer.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(10),
            exchange(&pool, key(), sender, get("/slow")),
        )
        .await;
        assert!(gave_up.is_err(), "the slow answer came within 10 ms");
        serves_the_next_request(&pool, &accepted).await;
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_is_drained_and_its_connection_kept() {
        let (addr, accepted) = server().await;
        let pool = Arc::new(Pool::default());
        let sender = connect(addr).await;
        let response = exchange(&pool, key(), sender, get("/big"))
            .await
            .expect("answered");
        let mut body = response.into_body();
        let first = body.frame().await.expect("a frame").expect("data");
        assert!(first.data_ref().is_some_and(|d| d.len() < 512 * 1024));
        drop(body);
        serves_the_next_request(&pool, &accepted).await;
    }
}
