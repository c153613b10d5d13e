//! The terminal part: keystroke echo round trip and output throughput through a terminal's
//! WebSocket (`POST .../terminals`, then `GET .../terminals/{id}/ws`), and the echo through
//! a child process's stdin and stdout, which is how `ssh -tt` is driven for the baseline.
//!
//! Both sides run the same remote shape: a PTY under `sh -c`. For the echo,
//! [`ECHO_COMMAND`] puts the PTY in raw mode without echo and `cat`s: each byte sent comes
//! back exactly once, from `cat`, and nothing else is written after the ready mark. For the
//! throughput, the PTY stays cooked (as it is for a user's `cat`): both sides receive every
//! `\n` as `\r\n`, and both count the bytes they received.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

use crate::api::{Api, Stream};

/// The echo's remote command: raw mode, no echo, a ready mark, then `cat`.
pub const ECHO_COMMAND: &str = "stty raw -echo; printf R; exec cat";
/// Written once the PTY is in raw mode; nothing is sent before it arrives (the PTY would
/// echo bytes sent earlier itself, and they would come back twice).
const READY: u8 = b'R';
/// One keystroke that has not come back within this is a failed run.
const ECHO_TIMEOUT: Duration = Duration::from_secs(5);
/// The ready mark, or an output frame while streaming, must come within this.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes to and from a remote `cat`.
trait Pipe {
    async fn send(&mut self, byte: u8) -> anyhow::Result<()>;
    /// Some bytes of output (never an empty read: the end is an error).
    async fn recv(&mut self) -> anyhow::Result<Vec<u8>>;
}

/// Waits for [`READY`], then sends one byte `warmup + iterations` times, timing each until
/// it has come back; the times after the warm-up. Stops early after `max`. A byte that
/// comes back wrong or late ends the run: what came back would be out of step.
async fn echo_loop(
    pipe: &mut impl Pipe,
    warmup: usize,
    iterations: usize,
    max: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let mut seen = Vec::new();
    while !seen.contains(&READY) {
        let got = tokio::time::timeout(SILENCE_TIMEOUT, pipe.recv())
            .await
            .context("the ready mark did not come")??;
        seen.extend(got);
    }
    if seen.last() != Some(&READY) {
        bail!(
            "unexpected output around the ready mark: {:?}",
            String::from_utf8_lossy(&seen)
        );
    }
    let deadline = Instant::now() + max;
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        if Instant::now() > deadline {
            eprintln!("echo: stopped after {} s", max.as_secs());
            break;
        }
        // Letters only: no ssh escape (`~` after a newline), nothing a shell would act on.
        let byte = b'a' + (i % 26) as u8;
        let started = Instant::now();
        pipe.send(byte).await?;
        match tokio::time::timeout(ECHO_TIMEOUT, pipe.recv()).await {
            Ok(Ok(got)) if got == [byte] => {
                if i >= warmup {
                    samples.push(started.elapsed());
                }
            }
            Ok(Ok(got)) => bail!("sent {:?}, got back {got:?}", byte as char),
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("byte {i} did not come back within {ECHO_TIMEOUT:?}"),
        }
    }
    Ok(samples)
}

/// A terminal's WebSocket as a [`Pipe`].
struct Socket(Stream);

impl Pipe for Socket {
    async fn send(&mut self, byte: u8) -> anyhow::Result<()> {
        self.0
            .send(Message::Binary(vec![byte].into()))
            .await
            .context("sending input")
    }

    async fn recv(&mut self) -> anyhow::Result<Vec<u8>> {
        loop {
            match self.0.next().await {
                Some(Ok(Message::Binary(data))) if !data.is_empty() => return Ok(data.to_vec()),
                // The `attached` frame comes first on every attach; any other ends the echo.
                Some(Ok(Message::Text(text))) if text.contains(r#""type":"attached""#) => {}
                Some(Ok(Message::Text(text))) => bail!("the terminal ended: {text}"),
                Some(Ok(Message::Close(frame))) => bail!("the socket closed: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("the socket failed: {e}"),
                None => bail!("the socket ended"),
            }
        }
    }
}

/// A child process's stdin and stdout as a [`Pipe`].
struct Child {
    stdin: tokio::process::ChildStdin,
    stdout: tokio::process::ChildStdout,
    buf: Vec<u8>,
}

impl Pipe for Child {
    async fn send(&mut self, byte: u8) -> anyhow::Result<()> {
        self.stdin.write_all(&[byte]).await?;
        self.stdin.flush().await.context("writing to the command")
    }

    async fn recv(&mut self) -> anyhow::Result<Vec<u8>> {
        let n = self.stdout.read(&mut self.buf).await?;
        if n == 0 {
            bail!("the command closed its output");
        }
        Ok(self.buf[..n].to_vec())
    }
}

/// The echo through a terminal running [`ECHO_COMMAND`] in `session`.
///
/// # Errors
/// When the terminal cannot be opened or attached, or the echo goes wrong.
pub async fn echo_terminal(
    api: &Api,
    session: &str,
    warmup: usize,
    iterations: usize,
    max: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let terminal = api.open_terminal(session, ECHO_COMMAND).await?;
    let result = async {
        let mut socket = Socket(api.terminal_socket(session, &terminal).await?);
        let run = echo_loop(&mut socket, warmup, iterations, max).await;
        let _ = socket.0.close(None).await;
        run
    }
    .await;
    if let Err(e) = api.close_terminal(session, &terminal).await {
        eprintln!("echo: closing terminal {terminal} failed: {e:#}");
    }
    result
}

/// The echo through `program args...` (e.g. `ssh -tt host 'stty raw -echo; printf R; exec
/// cat'`), driven on its stdin and stdout.
///
/// # Errors
/// When the command cannot start or the echo goes wrong.
pub async fn echo_command(
    program: &str,
    args: &[String],
    warmup: usize,
    iterations: usize,
    max: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    let mut pipe = Child {
        stdin: child.stdin.take().context("no stdin")?,
        stdout: child.stdout.take().context("no stdout")?,
        buf: vec![0; 4096],
    };
    let run = echo_loop(&mut pipe, warmup, iterations, max).await;
    // Raw mode: no ^D; closing stdin ends ssh's side, and the kill makes sure.
    drop(pipe);
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    run
}

/// The shell command that streams `path` once the bench is attached: no echo (so the go
/// byte does not come back), a ready mark, one line read, then `cat`.
#[must_use]
pub fn cat_command(path: &str) -> String {
    format!("stty -echo; printf R; read x; exec cat '{path}'")
}

/// `cat PATH` through a terminal: opened, attached, started once attached (output with no
/// client attached is not kept), read as fast as the socket gives it until the exit frame.
/// The bytes after the ready mark and the time from the `POST` to the exit frame.
///
/// # Errors
/// When the terminal fails, the command exits non-zero, or the stream stalls for a minute.
pub async fn cat_through_terminal(
    api: &Api,
    session: &str,
    path: &str,
) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let terminal = api.open_terminal(session, &cat_command(path)).await?;
    let result = read_to_exit(api, session, &terminal, started).await;
    if result.is_err()
        && let Err(e) = api.close_terminal(session, &terminal).await
    {
        eprintln!("terminal cat: closing terminal {terminal} failed: {e:#}");
    }
    result
}

async fn read_to_exit(
    api: &Api,
    session: &str,
    terminal: &str,
    started: Instant,
) -> anyhow::Result<(u64, Duration)> {
    let mut socket = api.terminal_socket(session, terminal).await?;
    let mut ready = false;
    let mut bytes = 0u64;
    let mut frames = 0u64;
    loop {
        let frame = tokio::time::timeout(SILENCE_TIMEOUT, socket.next())
            .await
            .context("no frame for 60 s")?;
        match frame {
            Some(Ok(Message::Binary(data))) => {
                let mut data = &data[..];
                if !ready {
                    let Some(at) = data.iter().position(|b| *b == READY) else {
                        bail!("output before the ready mark: {data:?}");
                    };
                    data = &data[at + 1..];
                    ready = true;
                    socket.send(Message::Binary(b"\n".to_vec().into())).await?;
                }
                bytes += data.len() as u64;
                frames += 1;
            }
            Some(Ok(Message::Text(text))) => {
                let took = started.elapsed();
                let exit: serde_json::Value =
                    serde_json::from_str(text.as_str()).context("a text frame that is not JSON")?;
                if exit["type"] == "attached" {
                    continue;
                }
                if exit["type"] != "exit" || exit["exit_code"] != 0 {
                    bail!("the terminal ended with {text} after {bytes} bytes");
                }
                let _ = socket.close(None).await;
                eprintln!(
                    "terminal cat: {frames} output frames, {} bytes each on average",
                    bytes / frames.max(1)
                );
                return Ok((bytes, took));
            }
            Some(Ok(Message::Close(frame))) => {
                bail!("the socket closed after {bytes} bytes: {frame:?}")
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("the socket failed after {bytes} bytes: {e}"),
            None => bail!("the socket ended after {bytes} bytes"),
        }
    }
}

/// What `cat` of a file shows on a cooked PTY: every `\n` becomes `\r\n` (`onlcr`).
///
/// # Errors
/// When the file cannot be read.
pub fn bytes_on_a_pty(path: &std::path::Path) -> anyhow::Result<u64> {
    use std::io::Read as _;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        let newlines = buf[..n].iter().filter(|b| **b == b'\n').count();
        total += (n + newlines) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_command_quotes_its_path_and_waits_for_the_go() {
        assert_eq!(
            cat_command("/tmp/a b"),
            "stty -echo; printf R; read x; exec cat '/tmp/a b'"
        );
    }

    #[test]
    fn a_pty_shows_each_newline_as_two_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "ab\ncd\n\n").unwrap();
        assert_eq!(bytes_on_a_pty(&path).unwrap(), 7 + 3);
    }
}
