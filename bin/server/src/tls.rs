//! HTTPS for rmm-server: the same listener serves HTTP, the API docs and both WebSockets over
//! TLS when `RMM_TLS_CERT` / `RMM_TLS_KEY` name a PEM certificate chain and private key.
//! rustls with the ring provider (no aws-lc). SIGHUP re-reads both files; a bad new pair is
//! logged and the one in use kept, so a renewal that went wrong never takes the server down.
//!
//! The handshake runs in the connection's own task (on its first read or write), not in the
//! accept loop, so a slow or silent client cannot hold up anyone else's connection; it is
//! bounded by [`HANDSHAKE_TIMEOUT`].

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use anyhow::Context as _;
use poem::http::uri::Scheme;
use poem::listener::{Acceptor, TcpAcceptor};
use poem::web::{LocalAddr, RemoteAddr};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;

use crate::read_ahead::ReadAhead;

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate chain and private key files (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The server's TLS configuration, replaced whole on reload.
pub struct ServerTls {
    files: TlsFiles,
    current: watch::Sender<Arc<ServerConfig>>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads both files and logs which certificate is served.
    ///
    /// # Errors
    /// One line naming the file that is unreadable or holds no usable PEM item, or saying
    /// that the key does not belong to the certificate.
    pub fn load(files: TlsFiles) -> anyhow::Result<Self> {
        let (config, about) = server_config(&files)?;
        tracing::info!(cert = %files.cert.display(), key = %files.key.display(), %about, "TLS on: serving HTTPS and WSS");
        let (current, _) = watch::channel(config);
        Ok(Self { files, current })
    }

    /// Re-reads both files; on success new connections get the new certificate (open ones
    /// keep theirs), on failure the one in use is kept.
    ///
    /// # Errors
    /// As [`Self::load`]; the certificate in use is then unchanged.
    pub fn reload(&self) -> anyhow::Result<()> {
        let (config, about) = server_config(&self.files)?;
        self.current.send_replace(config);
        tracing::info!(cert = %self.files.cert.display(), %about, "TLS certificate reloaded");
        Ok(())
    }

    /// Reloads on every SIGHUP from now on. The handler is installed before this returns, so
    /// a SIGHUP sent once the server answers never falls to the default action (exit).
    ///
    /// # Errors
    /// When the signal handler cannot be installed.
    pub fn reload_on_sighup(self: &Arc<Self>) -> io::Result<()> {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let tls = Arc::clone(self);
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                if let Err(e) = tls.reload() {
                    tracing::error!(error = %format!("{e:#}"), "SIGHUP: the new TLS certificate or key is unusable; keeping the one in use");
                }
            }
        });
        Ok(())
    }
}

/// Builds the rustls configuration of `files`, and a description of the certificate served.
fn server_config(files: &TlsFiles) -> anyhow::Result<(Arc<ServerConfig>, String)> {
    let chain = read_certificates(&files.cert)?;
    let key = read_key(&files.key)?;
    let about = describe(&chain);
    let mut config = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS configuration")?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .with_context(|| {
        format!(
            "cannot use the TLS certificate {} (RMM_TLS_CERT) with the key {} (RMM_TLS_KEY)",
            files.cert.display(),
            files.key.display()
        )
    })?;
    // HTTP/1.1 only: the WebSockets upgrade over it, and the server speaks nothing else.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), about))
}

fn read_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| pem_error(path, "RMM_TLS_CERT", &e))?;
    if chain.is_empty() {
        anyhow::bail!(
            "the TLS certificate file {} (RMM_TLS_CERT) holds no PEM certificate",
            path.display()
        );
    }
    Ok(chain)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, "RMM_TLS_KEY", &e))
}

fn pem_error(path: &Path, setting: &str, e: &rustls::pki_types::pem::Error) -> anyhow::Error {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => anyhow::anyhow!("cannot read {} ({setting}): {io}", path.display()),
        Error::NoItemsFound => {
            anyhow::anyhow!("{} ({setting}) holds no usable PEM item", path.display())
        }
        other => anyhow::anyhow!("{} ({setting}) is not valid PEM: {other}", path.display()),
    }
}

/// The leaf certificate's SHA-256 fingerprint (as `openssl x509 -fingerprint -sha256` shows
/// it) and the length of the chain.
fn describe(chain: &[CertificateDer<'_>]) -> String {
    let fingerprint = chain.first().map_or_else(String::new, |leaf| {
        let hex = hex::encode_upper(sha2::Sha256::digest(leaf.as_ref()));
        hex.as_bytes()
            .chunks(2)
            .map(|pair| String::from_utf8_lossy(pair).into_owned())
            .collect::<Vec<_>>()
            .join(":")
    });
    format!(
        "certificate SHA-256 {fingerprint}, {} in chain",
        chain.len()
    )
}

/// The scheme of the server's URLs: `https` with TLS, else `http`.
#[must_use]
pub fn scheme(tls: Option<&Arc<ServerTls>>) -> &'static str {
    if tls.is_some() { "https" } else { "http" }
}

/// The listener's acceptor: plain TCP, or TLS with the configuration current at each accept.
pub struct ServerAcceptor {
    tcp: TcpAcceptor,
    tls: Option<watch::Receiver<Arc<ServerConfig>>>,
    /// Cluster mode: the requests other nodes forward here, served as connections (already
    /// decrypted: they came over NATS, whose own TLS protects them, or from the cluster
    /// address, which is on the nodes' private network).
    forwarded: Option<tokio::sync::mpsc::Receiver<rmm_cluster::Forwarded>>,
}

impl fmt::Debug for ServerAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerAcceptor")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// The acceptor for `listener`: TLS when `tls` is given (reloaded on SIGHUP), else plain.
///
/// # Errors
/// When the listener or the SIGHUP handler cannot be set up.
pub fn acceptor(
    listener: tokio::net::TcpListener,
    tls: Option<&Arc<ServerTls>>,
) -> io::Result<ServerAcceptor> {
    let tls = match tls {
        Some(tls) => {
            tls.reload_on_sighup()?;
            Some(tls.current.subscribe())
        }
        None => None,
    };
    Ok(ServerAcceptor {
        tcp: TcpAcceptor::from_tokio(listener)?,
        tls,
        forwarded: None,
    })
}

impl ServerAcceptor {
    /// Cluster mode: also accept the requests other nodes forward.
    #[must_use]
    pub fn with_forwarded(
        mut self,
        forwarded: Option<tokio::sync::mpsc::Receiver<rmm_cluster::Forwarded>>,
    ) -> Self {
        self.forwarded = forwarded;
        self
    }
}

/// A forwarded request's connection, with the addresses and scheme its client used at the
/// node that forwarded it.
fn forwarded(f: rmm_cluster::Forwarded) -> (ServerIo, LocalAddr, RemoteAddr, Scheme) {
    let remote = f.remote.map_or_else(
        || RemoteAddr(poem::Addr::Custom("forwarded", f.from.clone().into())),
        |a| RemoteAddr(poem::Addr::SocketAddr(a)),
    );
    let local = f.local.map_or_else(
        || LocalAddr(poem::Addr::Custom("forwarded", f.from.into())),
        |a| LocalAddr(poem::Addr::SocketAddr(a)),
    );
    let scheme = if f.https { Scheme::HTTPS } else { Scheme::HTTP };
    (ServerIo::Forwarded(f.io), local, remote, scheme)
}

impl Acceptor for ServerAcceptor {
    type Io = ServerIo;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.tcp.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(ServerIo, LocalAddr, RemoteAddr, Scheme)> {
        let accepted = match &mut self.forwarded {
            Some(rx) => tokio::select! {
                tcp = self.tcp.accept() => tcp,
                Some(f) = rx.recv() => return Ok(forwarded(f)),
            },
            None => self.tcp.accept().await,
        };
        let (stream, local, remote, scheme) = accepted?;
        // Every write of ours is a whole response or WebSocket frame: Nagle's algorithm only
        // delays them. Without this, a keystroke's input frame to the agent waited for the
        // agent's delayed ACK of the credit frame before it (40 ms per keystroke; bench/notes.md).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on an accepted connection");
        }
        let Some(tls) = &self.tls else {
            return Ok((
                ServerIo::Plain(ReadAhead::new(stream)),
                local,
                remote,
                scheme,
            ));
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.borrow()));
        let handshake = async move {
            tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
        };
        Ok((
            ServerIo::Handshaking(Box::pin(handshake)),
            local,
            remote,
            Scheme::HTTPS,
        ))
    }
}

type Handshake = Pin<Box<dyn Future<Output = io::Result<TlsStream<TcpStream>>> + Send>>;

/// One accepted connection: plain, or TLS (handshaking until its first read or write).
pub enum ServerIo {
    /// Read ahead in bulk while it streams ([`ReadAhead`]); TLS has rustls's buffer.
    Plain(ReadAhead<TcpStream>),
    Handshaking(Handshake),
    Tls(Box<TlsStream<TcpStream>>),
    /// Cluster mode: a request another node forwarded (see `rmm_cluster::forward`).
    Forwarded(rmm_cluster::Connection),
    Failed,
}

impl fmt::Debug for ServerIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plain(_) => "ServerIo::Plain",
            Self::Handshaking(_) => "ServerIo::Handshaking",
            Self::Tls(_) => "ServerIo::Tls",
            Self::Forwarded(_) => "ServerIo::Forwarded",
            Self::Failed => "ServerIo::Failed",
        })
    }
}

impl ServerIo {
    /// Drives the handshake, if one is under way, to its end.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Self::Handshaking(handshake) = self {
            match ready!(handshake.as_mut().poll(cx)) {
                Ok(stream) => *self = Self::Tls(Box::new(stream)),
                Err(e) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    *self = Self::Failed;
                    return Poll::Ready(Err(e));
                }
            }
        }
        match self {
            Self::Failed => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            ))),
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// Runs `$op` on the ready stream, plain or TLS.
macro_rules! on_stream {
    ($self:ident, $cx:ident, |$s:ident| $op:expr) => {{
        let this = $self.get_mut();
        ready!(this.poll_ready($cx))?;
        match this {
            ServerIo::Plain($s) => {
                let $s = Pin::new($s);
                $op
            }
            ServerIo::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $op
            }
            ServerIo::Forwarded($s) => {
                let $s = Pin::new($s.as_mut());
                $op
            }
            ServerIo::Handshaking(_) | ServerIo::Failed => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            ))),
        }
    }};
}

impl AsyncRead for ServerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        on_stream!(self, cx, |s| s.poll_read(cx, buf))
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        on_stream!(self, cx, |s| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        on_stream!(self, cx, |s| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
            Self::Forwarded(s) => s.is_write_vectored(),
            Self::Handshaking(_) | Self::Failed => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(self, cx, |s| s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(self, cx, |s| s.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests;
