//! `rmm mux`: the mux process itself (see the design in [`super`]).

use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use rmm_client::{ApiClient, Token};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::MuxPaths;
use crate::config::ConfigDir;
use crate::exec::{Job, Sink, Spec, describe, run_job};
use crate::muxwire::{
    ACCEPTED, EXIT, FrameWriter, GO, INTERRUPT, MAX_FRAME, MuxRequest, REQUEST, WarmStreams,
    our_uid,
};
use crate::session::Interrupts;

/// How long an exec may take to send its request and its go.
const HANDSHAKE: Duration = Duration::from_secs(5);

/// `rmm mux` (started by `rmm exec`, not by hand).
#[derive(Debug, Args)]
pub struct MuxArgs {
    /// Exit after this many seconds without an exec.
    #[arg(
        long,
        env = "RMM_MUX_IDLE_SECS",
        default_value_t = 600,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub idle_secs: u64,
}

struct State {
    client: ApiClient,
    dir: ConfigDir,
    warm: WarmStreams,
    active: AtomicUsize,
    last_done: Mutex<Instant>,
}

/// Counts an exec as running while it lives.
struct Busy(Arc<State>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        if let Ok(mut last) = self.0.last_done.lock() {
            *last = Instant::now();
        }
    }
}

/// Runs the mux until it is idle for `args.idle_secs` or its socket is gone. Exits 0 when
/// another mux already serves the socket; 1 when it cannot start.
pub async fn serve(server: &str, ca_file: Option<&Path>, args: MuxArgs) -> ExitCode {
    let Some((state, paths, listener)) = bind(server, ca_file).await else {
        return ExitCode::from(1);
    };
    let inode = std::fs::symlink_metadata(&paths.socket)
        .map(|m| m.ino())
        .ok();
    let idle = Duration::from_secs(args.idle_secs);
    let mut tick = tokio::time::interval(idle.min(Duration::from_secs(1)));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((conn, _)) = accepted {
                    state.active.fetch_add(1, Ordering::SeqCst);
                    let busy = Busy(Arc::clone(&state));
                    tokio::spawn(async move { handle(busy, conn).await });
                }
            }
            _ = tick.tick() => {
                let ours = std::fs::symlink_metadata(&paths.socket).map(|m| m.ino()).ok();
                if ours.is_none() || ours != inode {
                    return ExitCode::SUCCESS;
                }
                let idle_for = state.last_done.lock().map(|l| l.elapsed()).unwrap_or_default();
                if state.active.load(Ordering::SeqCst) == 0 && idle_for >= idle {
                    let _ = std::fs::remove_file(&paths.socket);
                    return ExitCode::SUCCESS;
                }
            }
        }
    }
}

/// The socket (unless another mux serves it) and the client.
async fn bind(
    server: &str,
    ca_file: Option<&Path>,
) -> Option<(Arc<State>, MuxPaths, UnixListener)> {
    let dir = ConfigDir::locate().ok()?;
    let token = match crate::config::token_from_env() {
        Ok(Some(token)) => token,
        Ok(None) | Err(_) => dir.load_token().ok()??,
    };
    let client = ApiClient::with_ca_file(server, Some(Token::clone(&token)), ca_file).ok()?;
    let paths = MuxPaths::locate(&dir, server, ca_file, token.expose());
    paths.prepare_dir().ok()?;
    if paths.socket.exists() {
        if StdUnixStream::connect(&paths.socket).is_ok() {
            return None;
        }
        std::fs::remove_file(&paths.socket).ok()?;
    }
    let listener = UnixListener::bind(&paths.socket).ok()?;
    std::fs::set_permissions(&paths.socket, std::fs::Permissions::from_mode(0o600)).ok()?;
    let state = Arc::new(State {
        client,
        dir,
        warm: WarmStreams::default(),
        active: AtomicUsize::new(0),
        last_done: Mutex::new(Instant::now()),
    });
    Some((state, paths, listener))
}

/// One exec: checks who it is, takes its request, waits for its go, runs the command.
async fn handle(busy: Busy, conn: UnixStream) {
    let ours = conn.peer_cred().is_ok_and(|cred| cred.uid() == our_uid());
    if !ours {
        return;
    }
    let Some(socket) = conn
        .into_std()
        .ok()
        .filter(|s| s.set_nonblocking(false).is_ok())
    else {
        return;
    };
    let Ok(reader) = socket.try_clone() else {
        return;
    };
    let writer = FrameWriter::new(socket);
    let (request_tx, request_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel();
    let (interrupt_tx, interrupt_rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || read_exec(reader, request_tx, go_tx, &interrupt_tx));
    let Ok(Ok(request)) = tokio::time::timeout(HANDSHAKE, request_rx).await else {
        return;
    };
    if writer.send(ACCEPTED, &[]).is_err() {
        return;
    }
    if !matches!(tokio::time::timeout(HANDSHAKE, go_rx).await, Ok(Ok(()))) {
        return;
    }
    let mut interrupts = Interrupts::relayed(interrupt_rx);
    let code = run(&busy.0, &request, &writer, &mut interrupts).await;
    let _ = writer.send(EXIT, &[code]);
}

async fn run(
    state: &State,
    request: &MuxRequest,
    writer: &FrameWriter,
    interrupts: &mut Interrupts,
) -> u8 {
    let sink = Sink::Mux(writer.clone());
    let spec = Spec {
        command: &request.command,
        timeout_secs: request.timeout_secs,
        stdin: false,
    };
    let job = Job {
        input: &request.agent,
        keep: request.keep,
        spec: &spec,
        sink: &sink,
        warm: Some(&state.warm),
    };
    let (code, message) = match run_job(&state.client, &state.dir, &job, interrupts).await {
        Ok(ending) => describe(&ending),
        Err(e) => (1, Some(e.to_string())),
    };
    if let Some(message) = message {
        sink.note(&message);
    }
    code
}

/// The exec's side of the socket, read on a thread of its own (blocking): its request, its
/// go, then each Ctrl-C; its end (it went away) counts as one more Ctrl-C.
fn read_exec(
    mut socket: StdUnixStream,
    request: oneshot::Sender<MuxRequest>,
    go: oneshot::Sender<()>,
    interrupts: &mpsc::UnboundedSender<()>,
) {
    let _ = socket.set_read_timeout(Some(HANDSHAKE));
    let Some(parsed) = read_frame(&mut socket)
        .filter(|(tag, _)| *tag == REQUEST)
        .and_then(|(_, body)| serde_json::from_slice::<MuxRequest>(&body).ok())
    else {
        return;
    };
    if request.send(parsed).is_err() {
        return;
    }
    if !matches!(read_frame(&mut socket), Some((GO, _))) || go.send(()).is_err() {
        return;
    }
    let _ = socket.set_read_timeout(None);
    loop {
        match read_frame(&mut socket) {
            Some((INTERRUPT, _)) => {
                if interrupts.send(()).is_err() {
                    return;
                }
            }
            Some(_) => {}
            None => {
                let _ = interrupts.send(());
                return;
            }
        }
    }
}

/// One frame, blocking; `None` at the end, on an error or a frame too long.
fn read_frame(socket: &mut StdUnixStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0_u8; 5];
    socket.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return None;
    }
    let mut body = vec![0; len];
    socket.read_exact(&mut body).ok()?;
    Some((head[0], body))
}
