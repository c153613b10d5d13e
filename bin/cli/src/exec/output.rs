//! Where the remote command's output goes as it arrives: our own stdout and stderr, or (in
//! the exec mux, `rmm mux`) the socket of the `rmm exec` that asked, framed per stream.

use std::io::Write as _;

use rmm_client::OutputKind;

/// Where output and rmm's own one-line notes are written.
#[derive(Debug, Clone, Default)]
pub(crate) enum Sink {
    /// This process's stdout and stderr.
    #[default]
    Local,
    /// The socket of an `rmm exec` the mux runs a command for.
    #[cfg(unix)]
    Mux(crate::muxwire::FrameWriter),
}

/// Our stdout and stderr, with the bytes written to each.
#[derive(Debug, Default)]
pub(crate) struct LocalOutput {
    stdout: u64,
    stderr: u64,
    sink: Sink,
}

impl LocalOutput {
    pub(crate) fn new(sink: Sink) -> Self {
        Self {
            stdout: 0,
            stderr: 0,
            sink,
        }
    }

    pub(super) fn written(&self, kind: OutputKind) -> u64 {
        match kind {
            OutputKind::Stdout => self.stdout,
            OutputKind::Stderr => self.stderr,
        }
    }

    /// Writes and flushes at once: output must show as it arrives, not when a buffer fills.
    pub(super) fn write(&mut self, kind: OutputKind, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        match (&self.sink, kind) {
            (Sink::Local, OutputKind::Stdout) => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(bytes)?;
                stdout.flush()?;
            }
            (Sink::Local, OutputKind::Stderr) => {
                let mut stderr = std::io::stderr().lock();
                stderr.write_all(bytes)?;
                stderr.flush()?;
            }
            #[cfg(unix)]
            (Sink::Mux(socket), kind) => socket.output(kind, bytes)?,
        }
        match kind {
            OutputKind::Stdout => self.stdout += bytes.len() as u64,
            OutputKind::Stderr => self.stderr += bytes.len() as u64,
        }
        Ok(())
    }

    /// One line of rmm's own on stderr (`rmm: ` is put in front).
    pub(crate) fn note(&self, line: &str) {
        self.sink.note(line);
    }
}

impl Sink {
    /// One line of rmm's own on stderr (`rmm: ` is put in front); best effort.
    pub(crate) fn note(&self, line: &str) {
        match self {
            Self::Local => {
                let _ = writeln!(std::io::stderr(), "rmm: {line}");
            }
            #[cfg(unix)]
            Self::Mux(socket) => {
                let _ = socket.note(line);
            }
        }
    }
}
