//! Our standard input, read on a thread of its own and handed over in chunks as they come:
//! a keystroke in raw mode, or up to 64 KiB of a pipe.
//!
//! A plain thread, not tokio's stdin: tokio reads stdin on its blocking pool and a read in
//! progress cannot be cancelled, so the runtime's shutdown would wait for the next key press
//! after a shell ended. The thread here is simply left behind when rmm exits.

use std::io::Read as _;

use futures_util::Stream;
use tokio::sync::mpsc;

/// How much one read takes at most.
const CHUNK: usize = 64 * 1024;
/// Chunks read ahead of the consumer: the pipe is read no faster than it is sent on.
const AHEAD: usize = 4;

/// Standard input's chunks; `None` once it has ended (EOF, or after an error).
#[derive(Debug)]
pub struct Input {
    chunks: mpsc::Receiver<std::io::Result<Vec<u8>>>,
}

impl Input {
    /// Starts reading standard input.
    #[must_use]
    pub fn spawn() -> Self {
        let (tx, chunks) = mpsc::channel(AHEAD);
        std::thread::spawn(move || read_stdin(&tx));
        Self { chunks }
    }

    /// The next chunk; `None` at the end.
    pub async fn recv(&mut self) -> Option<std::io::Result<Vec<u8>>> {
        self.chunks.recv().await
    }

    /// The chunks as a stream (a request body).
    pub fn into_stream(self) -> impl Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
        futures_util::stream::unfold(self, |mut input| async move {
            let chunk = input.recv().await?;
            Some((chunk, input))
        })
    }
}

fn read_stdin(tx: &mpsc::Sender<std::io::Result<Vec<u8>>>) {
    let stdin = std::io::stdin();
    let mut stdin = stdin.lock();
    let mut buf = vec![0_u8; CHUNK];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let chunk = buf.get(..n).unwrap_or_default().to_vec();
                if tx.blocking_send(Ok(chunk)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
}
