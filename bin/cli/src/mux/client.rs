//! `rmm exec`'s side of the mux: find (or start) it, hand it the command, relay its frames
//! to our stdout and stderr, and our Ctrl-C to it. Lean on purpose: no HTTP client, no TLS.

use std::io::Write as _;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;
use tokio::net::UnixStream;

use super::MuxPaths;
use crate::CliError;
use crate::config::ConfigDir;
use crate::exec::{ExecArgs, request_of, stdin_has_input};
use crate::muxwire::{
    ACCEPTED, EXIT, GO, INTERRUPT, NOTE, REQUEST, STDERR, STDOUT, frame, read_frame,
};
use crate::session::Interrupts;

/// How long a started mux may take to listen.
pub const START_WAIT: Duration = Duration::from_secs(3);
/// How long the mux may take to accept a request.
pub const ACCEPT_WAIT: Duration = Duration::from_secs(5);
/// ssh's code when the remote side failed rather than the command.
const EXIT_FAILED: u8 = 255;

/// Whether the mux is turned off (`--no-mux`, `RMM_MUX=off`), or this exec must run
/// directly (our stdin carries input for the command).
fn wanted(args: &ExecArgs) -> bool {
    let off =
        std::env::var("RMM_MUX").is_ok_and(|v| matches!(v.trim(), "off" | "0" | "no" | "false"));
    !(args.no_mux || off || (!args.no_stdin && stdin_has_input()))
}

/// Runs the exec through the mux: `Ok(None)` when it is not to be used or cannot be reached
/// before anything ran (the caller then runs it directly).
///
/// # Errors
/// Usage errors of the request (an empty command).
pub async fn exec(
    dir: &ConfigDir,
    server: &str,
    ca_file: Option<&Path>,
    token: &str,
    args: &ExecArgs,
) -> Result<Option<ExitCode>, CliError> {
    // A server URL the client would refuse is said by the direct path.
    let scheme_ok = ["http://", "https://", "ws://", "wss://"]
        .iter()
        .any(|scheme| {
            server
                .trim()
                .get(..scheme.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        });
    if !wanted(args) || !scheme_ok {
        return Ok(None);
    }
    let request = request_of(args)?;
    let mut interrupts = Interrupts::listen()?;
    let paths = MuxPaths::locate(dir, server, ca_file, token);
    if let Err(why) = paths.prepare_dir() {
        note(&format!("not using the exec mux: {why}"));
        return Ok(None);
    }
    let Some(socket) = connect_or_start(&paths, server, ca_file, token).await else {
        return Ok(None);
    };
    let body = serde_json::to_vec(&request)
        .map_err(|e| CliError::Local(format!("cannot encode the request: {e}")))?;
    let Some(socket) = handshake(socket, &body).await else {
        return Ok(None);
    };
    Ok(Some(relay(socket, &mut interrupts).await))
}

/// Sends the request; on "accepted", the go. `None`: nothing ran.
async fn handshake(mut socket: UnixStream, body: &[u8]) -> Option<UnixStream> {
    socket.write_all(&frame(REQUEST, body)).await.ok()?;
    match tokio::time::timeout(ACCEPT_WAIT, read_frame(&mut socket)).await {
        Ok(Ok(Some((ACCEPTED, _)))) => {}
        _ => return None,
    }
    socket.write_all(&frame(GO, &[])).await.ok()?;
    Some(socket)
}

/// The running mux's socket, after starting a mux when there is none.
async fn connect_or_start(
    paths: &MuxPaths,
    server: &str,
    ca_file: Option<&Path>,
    token: &str,
) -> Option<UnixStream> {
    if paths.socket.exists() {
        if let Err(why) = paths.check_socket() {
            note(&format!("not using the exec mux: {why}"));
            return None;
        }
        if let Ok(socket) = UnixStream::connect(&paths.socket).await {
            return Some(socket);
        }
    }
    let mut mux = start(server, ca_file, token)?;
    let deadline = Instant::now() + START_WAIT;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
        // It ended at once: it could not start (another mux may have won the race).
        let ended = !matches!(mux.try_wait(), Ok(None));
        if paths.check_socket().is_ok()
            && let Ok(socket) = UnixStream::connect(&paths.socket).await
        {
            return Some(socket);
        }
        if ended {
            return None;
        }
    }
    None
}

/// Starts `rmm mux` detached: its own process group (a Ctrl-C here is not its), no stdio.
fn start(server: &str, ca_file: Option<&Path>, token: &str) -> Option<std::process::Child> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe().ok()?;
    let mut command = std::process::Command::new(exe);
    command.arg("--server").arg(server);
    if let Some(ca_file) = ca_file {
        command.arg("--ca-file").arg(ca_file);
    }
    command
        .arg("mux")
        .env("RMM_TOKEN", token)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    // Waited for only while it starts: it outlives us (and is then the init process's child).
    command.spawn().ok()
}

/// Writes the mux's frames here until the exit code comes; relays Ctrl-C.
async fn relay(socket: UnixStream, interrupts: &mut Interrupts) -> ExitCode {
    let (mut from_mux, mut to_mux) = socket.into_split();
    // Our own output failed: the command was cancelled; say so once it has ended.
    let mut local_failure: Option<std::io::Error> = None;
    loop {
        tokio::select! {
            received = read_frame(&mut from_mux) => match received {
                Ok(Some((EXIT, code))) => {
                    if let Some(e) = local_failure {
                        note(&format!(
                            "cannot write the output here ({e}); the remote command was cancelled"
                        ));
                        return ExitCode::from(1);
                    }
                    return ExitCode::from(code.first().copied().unwrap_or(EXIT_FAILED));
                }
                Ok(Some((tag @ (STDOUT | STDERR), bytes))) if local_failure.is_none() => {
                    if let Err(e) = write_local(tag, &bytes) {
                        local_failure = Some(e);
                        let _ = to_mux.write_all(&frame(INTERRUPT, &[])).await;
                    }
                }
                Ok(Some((NOTE, line))) if local_failure.is_none() => {
                    note(&String::from_utf8_lossy(&line));
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    note("the exec mux (`rmm mux`) ended before the command did; its output stays on the server: see `rmm audit`, and run the command again (or with --no-mux)");
                    return ExitCode::from(EXIT_FAILED);
                }
            },
            () = interrupts.recv() => {
                let _ = to_mux.write_all(&frame(INTERRUPT, &[])).await;
            }
        }
    }
}

fn write_local(tag: u8, bytes: &[u8]) -> std::io::Result<()> {
    if tag == STDOUT {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(bytes)?;
        stdout.flush()
    } else {
        let mut stderr = std::io::stderr().lock();
        stderr.write_all(bytes)?;
        stderr.flush()
    }
}

fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "rmm: {line}");
}
