//! [`ReadAhead`]: reads a socket in bulk while it streams, and straight into the caller's
//! buffer while it idles.
//!
//! The agents' WebSocket reads through a small buffer (its size is memory every idle agent
//! holds), and tungstenite reads at most that much per call: a streaming agent would cost a
//! system call per kilobyte. Below it, this reader notices a small read (at most 4 KiB) that
//! filled the caller's buffer (more is waiting), and from then on reads [`BULK`] bytes per
//! system call into a buffer of its own, handing them out by copy; once a refill fits in the
//! caller's buffer whole (the stream has paused), the buffer is freed again. Idle connections
//! hold none, and larger readers (hyper's own buffered reads) are passed straight through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read per system call while a connection streams.
pub const BULK: usize = 64 * 1024;
/// Reads this small that fill up switch to bulk reads; larger readers (hyper reads into
/// 8 KiB and more) are passed straight through.
const SMALL_READ: usize = 4 * 1024;

/// A reader that switches to bulk reads while its peer streams (see the module docs).
#[derive(Debug)]
pub struct ReadAhead<T> {
    inner: T,
    /// The bulk buffer, only while streaming, and what of it is not handed out yet.
    bulk: Option<Box<[u8]>>,
    start: usize,
    end: usize,
}

impl<T> ReadAhead<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            bulk: None,
            start: 0,
            end: 0,
        }
    }

    /// Whether the bulk buffer is held now.
    pub fn is_bulk(&self) -> bool {
        self.bulk.is_some()
    }

    /// Copies what is buffered into `dst`; true if anything was.
    fn hand_out(&mut self, dst: &mut ReadBuf<'_>) -> bool {
        let Some(bulk) = &self.bulk else {
            return false;
        };
        if self.start >= self.end {
            return false;
        }
        let n = dst.remaining().min(self.end - self.start);
        dst.put_slice(&bulk[self.start..self.start + n]);
        self.start += n;
        true
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let want = dst.remaining();
        if want == 0 || this.hand_out(dst) {
            return Poll::Ready(Ok(()));
        }
        if let Some(bulk) = this.bulk.as_mut() {
            let mut into = ReadBuf::new(bulk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut into))?;
            let got = into.filled().len();
            (this.start, this.end) = (0, got);
            this.hand_out(dst);
            if this.start >= this.end {
                // It all fit the caller's buffer: the stream has paused.
                this.bulk = None;
            }
            return Poll::Ready(Ok(()));
        }
        let before = dst.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, dst))?;
        if dst.filled().len() - before == want && want <= SMALL_READ {
            // The caller's buffer filled: more is waiting, read ahead from now on.
            this.bulk = Some(vec![0; BULK].into_boxed_slice());
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadAhead<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn a_stream_read_in_small_pieces_arrives_whole_through_the_bulk_buffer() {
        let (mut peer, ours) = tokio::io::duplex(4 * BULK);
        let data: Vec<u8> = (0..3 * BULK + 123).map(|i| (i * 7 % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            peer.write_all(&sent).await?;
            peer.shutdown().await?;
            Ok::<_, io::Error>(peer)
        });
        let mut reader = ReadAhead::new(ours);
        let mut got = Vec::new();
        let mut piece = [0u8; 1024];
        let mut saw_bulk = false;
        loop {
            let n = reader.read(&mut piece).await.expect("read");
            if n == 0 {
                break;
            }
            saw_bulk |= reader.is_bulk();
            got.extend_from_slice(&piece[..n]);
        }
        writer.await.expect("join").expect("write");
        assert_eq!(got.len(), data.len());
        assert!(got == data, "bytes differ");
        assert!(saw_bulk, "a stream of full reads switches to bulk reads");
    }

    #[tokio::test]
    async fn a_large_reader_such_as_hyper_is_passed_straight_through() {
        let (mut peer, ours) = tokio::io::duplex(4 * BULK);
        let mut reader = ReadAhead::new(ours);
        let mut large = vec![0u8; 8 * 1024];
        peer.write_all(&[7u8; 8 * 1024]).await.expect("write");
        assert_eq!(reader.read(&mut large).await.expect("read"), 8 * 1024);
        assert!(!reader.is_bulk(), "hyper's own buffer reads; no second one");
    }

    #[tokio::test]
    async fn a_paused_stream_gives_the_bulk_buffer_back() {
        let (mut peer, ours) = tokio::io::duplex(4 * BULK);
        let mut reader = ReadAhead::new(ours);
        let mut piece = [0u8; 1024];
        // A full read: the next goes through the bulk buffer.
        peer.write_all(&[1u8; 1024]).await.expect("write");
        assert_eq!(reader.read(&mut piece).await.expect("read"), 1024);
        assert!(reader.is_bulk());
        // Then a small frame, as an idle agent's heartbeat: all of it fits, the buffer goes.
        peer.write_all(b"heartbeat").await.expect("write");
        assert_eq!(reader.read(&mut piece).await.expect("read"), 9);
        assert_eq!(&piece[..9], b"heartbeat");
        assert!(!reader.is_bulk(), "an idle connection holds no bulk buffer");
        // A small read in direct mode does not take it again.
        peer.write_all(b"ping").await.expect("write");
        assert_eq!(reader.read(&mut piece).await.expect("read"), 4);
        assert!(!reader.is_bulk());
    }
}
