//! Our stdout and stderr, written as the remote command's output arrives.

use std::io::Write as _;

use rmm_client::OutputKind;

/// Our stdout and stderr, with the bytes written to each.
#[derive(Debug, Default)]
pub(super) struct LocalOutput {
    stdout: u64,
    stderr: u64,
}

impl LocalOutput {
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
        match kind {
            OutputKind::Stdout => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(bytes)?;
                stdout.flush()?;
                self.stdout += bytes.len() as u64;
            }
            OutputKind::Stderr => {
                let mut stderr = std::io::stderr().lock();
                stderr.write_all(bytes)?;
                stderr.flush()?;
                self.stderr += bytes.len() as u64;
            }
        }
        Ok(())
    }
}
