//! What `rmm exec` and the exec mux (`rmm mux`, see [`crate::mux`]) share: where the mux's
//! socket is and the checks that it is private, the frames on that socket, and the session
//! streams the mux keeps warm between commands.
//!
//! A frame is one tag byte, a big-endian `u32` length, then that many bytes.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rmm_client::{OutputKind, SessionStream};
use rmm_domain::SessionId;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::ConfigDir;

/// exec -> mux: the request (JSON of [`MuxRequest`]).
pub const REQUEST: u8 = b'R';
/// exec -> mux: run it (sent once the mux has accepted; nothing runs without it).
pub const GO: u8 = b'G';
/// exec -> mux: Ctrl-C.
pub const INTERRUPT: u8 = b'C';
/// mux -> exec: the request is taken.
pub const ACCEPTED: u8 = b'A';
/// mux -> exec: bytes of the command's stdout / stderr.
pub const STDOUT: u8 = b'O';
pub const STDERR: u8 = b'E';
/// mux -> exec: one line of rmm's own for stderr (without `rmm: ` and the newline).
pub const NOTE: u8 = b'M';
/// mux -> exec: the exit code (one byte); the last frame.
pub const EXIT: u8 = b'X';
/// The largest frame either side reads.
pub const MAX_FRAME: usize = 1 << 20;

/// What `rmm exec` asks the mux to run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MuxRequest {
    pub agent: String,
    pub command: String,
    pub timeout_secs: Option<u64>,
    pub keep: bool,
}

/// The mux's folder and socket for one server, config folder and login.
#[derive(Debug, Clone)]
pub struct MuxPaths {
    pub dir: PathBuf,
    pub socket: PathBuf,
}

impl MuxPaths {
    /// `RMM_MUX_DIR`, else `mux/` in the config folder; the socket is named by a digest of
    /// this rmm's version, the server, the CA file, the config folder and the token (a new
    /// login gets a new mux; the old one ends when idle).
    #[must_use]
    pub fn locate(config: &ConfigDir, server: &str, ca_file: Option<&Path>, token: &str) -> Self {
        let dir = std::env::var_os("RMM_MUX_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| config.path().join("mux"));
        let mut digest = Sha256::new();
        for part in [
            env!("CARGO_PKG_VERSION").as_bytes(),
            server.trim().as_bytes(),
            ca_file.map_or(&b""[..], |p| p.as_os_str().as_encoded_bytes()),
            config.path().as_os_str().as_encoded_bytes(),
            token.as_bytes(),
        ] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part);
        }
        let name = hex::encode(&digest.finalize()[..10]);
        Self {
            socket: dir.join(format!("{name}.sock")),
            dir,
        }
    }

    /// Creates the folder (0700) when missing, then checks it.
    ///
    /// # Errors
    /// One line saying what is wrong and how to fix it.
    pub fn prepare_dir(&self) -> Result<(), String> {
        #[cfg(unix)]
        if !self.dir.exists() {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        }
        check_private(&self.dir, true)
    }

    /// Checks the socket: a socket, ours, mode 0600.
    ///
    /// # Errors
    /// One line saying what is wrong and how to fix it.
    pub fn check_socket(&self) -> Result<(), String> {
        check_private(&self.socket, false)
    }
}

/// The user this process runs as.
#[cfg(unix)]
#[must_use]
pub fn our_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// A folder (0700) or socket (0600) that is ours, not a link, with no access for others.
fn check_private(path: &Path, is_dir: bool) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
        let meta = std::fs::symlink_metadata(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let (kind_ok, want, what) = if is_dir {
            (meta.is_dir(), 0o700, "a folder")
        } else {
            (meta.file_type().is_socket(), 0o600, "a socket")
        };
        if !kind_ok {
            return Err(format!("{} is not {what}; remove it", path.display()));
        }
        if meta.uid() != our_uid() {
            return Err(format!(
                "{} belongs to uid {}, not to you; remove it or set RMM_MUX_DIR",
                path.display(),
                meta.uid()
            ));
        }
        let mode = meta.mode() & 0o777;
        if mode != want {
            return Err(format!(
                "{} has mode {mode:o}, not {want:o}; run `chmod {want:o} {}`",
                path.display(),
                path.display()
            ));
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        let _ = (path, is_dir);
        Err("the exec mux needs Unix sockets".into())
    }
}

/// Reads one frame: its tag and bytes; `None` at the end of the stream.
///
/// # Errors
/// I/O errors, a frame longer than [`MAX_FRAME`], a stream cut inside a frame.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0_u8; 5];
    match reader.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    reader.read_exact(&mut head[1..]).await?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("a frame of {len} bytes")));
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await?;
    Ok(Some((head[0], body)))
}

/// One frame, as bytes.
#[must_use]
pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(tag);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body[..len as usize]);
    out
}

/// The mux's writing side of one exec's socket (blocking writes: the exec reads them as it
/// writes its own output, so a slow reader slows the command's relay, and memory stays
/// bounded).
#[cfg(unix)]
#[derive(Debug, Clone)]
pub struct FrameWriter {
    socket: Arc<std::os::unix::net::UnixStream>,
}

#[cfg(unix)]
impl FrameWriter {
    #[must_use]
    pub fn new(socket: std::os::unix::net::UnixStream) -> Self {
        Self {
            socket: Arc::new(socket),
        }
    }

    /// Writes a frame, off the runtime's worker when on a multi-thread runtime.
    ///
    /// # Errors
    /// The socket's (the exec went away).
    pub fn send(&self, tag: u8, body: &[u8]) -> std::io::Result<()> {
        let write = || {
            for chunk in body
                .chunks(MAX_FRAME)
                .chain(body.is_empty().then_some(&[][..]))
            {
                (&*self.socket).write_all(&frame(tag, chunk))?;
            }
            Ok(())
        };
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi {
            tokio::task::block_in_place(write)
        } else {
            write()
        }
    }

    /// Output bytes of the command.
    ///
    /// # Errors
    /// The socket's.
    pub fn output(&self, kind: OutputKind, bytes: &[u8]) -> std::io::Result<()> {
        let tag = match kind {
            OutputKind::Stdout => STDOUT,
            OutputKind::Stderr => STDERR,
        };
        self.send(tag, bytes)
    }

    /// One line of rmm's own.
    ///
    /// # Errors
    /// The socket's.
    pub fn note(&self, line: &str) -> std::io::Result<()> {
        self.send(NOTE, line.as_bytes())
    }
}

/// Session streams kept open between commands, each read (and its frames dropped) by a task
/// while no command uses it, so the server never sees a watcher fall behind.
#[derive(Debug, Default)]
pub struct WarmStreams {
    parked: Mutex<HashMap<SessionId, Parked>>,
}

#[derive(Debug)]
struct Parked {
    stop: oneshot::Sender<()>,
    reader: JoinHandle<Option<SessionStream>>,
}

impl WarmStreams {
    /// The open stream of `session`, if one is parked and still open.
    pub async fn take(&self, session: SessionId) -> Option<SessionStream> {
        let parked = self.parked.lock().ok()?.remove(&session)?;
        let _ = parked.stop.send(());
        parked.reader.await.ok().flatten()
    }

    /// Parks `stream` for the next command in `session`.
    pub fn put(&self, session: SessionId, mut stream: SessionStream) {
        let (stop, mut stopped) = oneshot::channel();
        let reader = tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stopped => return Some(stream),
                    message = stream.next_message() => match message {
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => return None,
                    },
                }
            }
        });
        if let Ok(mut parked) = self.parked.lock()
            && let Some(old) = parked.insert(session, Parked { stop, reader })
        {
            old.reader.abort();
        }
    }

    /// Drops the parked stream of `session` (the session is gone).
    pub fn forget(&self, session: SessionId) {
        if let Some(old) = self.parked.lock().ok().and_then(|mut p| p.remove(&session)) {
            old.reader.abort();
        }
    }
}
