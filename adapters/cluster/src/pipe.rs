//! A byte stream between two nodes over NATS: what a request forwarded to the node that
//! holds its agent travels in (HTTP/1.1, and the WebSocket it may upgrade to).
//!
//! Each end subscribes to its own reply subject (under the cluster's inbox prefix) and
//! publishes to the other's. Messages are numbered; one lost or out of order (NATS drops a
//! slow consumer's messages) resets the stream rather than corrupting it. At most
//! [`WINDOW`] bytes are in flight unacknowledged in each direction, so a reader that stops
//! reading stops the writer at the other node, and memory stays bounded. A stream whose other
//! node goes quiet (no presence heard for [`crate::presence::SILENT_AFTER`], or its lease
//! gone) is reset.
//!
//! Frames: `D` + 4-byte number + data; `A` + 8-byte count of bytes taken; `F` (no more data);
//! `R` (reset).

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio::sync::watch;

use crate::presence::ClusterView;

/// Unacknowledged bytes in flight, per direction.
pub const WINDOW: u64 = 1024 * 1024;
/// The largest data message.
const CHUNK: usize = 128 * 1024;
/// Bytes buffered between a stream's user and its pump, per direction.
const BUFFER: usize = 128 * 1024;
/// How often a stream checks that its other node is still within reach.
const CHECK: Duration = Duration::from_millis(500);
/// How long a stream whose user is done waits for the other end to finish too, before it is
/// reset (the other end may have vanished without a word while its node still answers).
const LINGER: Duration = Duration::from_secs(30);

/// Starts the pump between `local` (the stream's user holds the other end) and the node
/// `peer`, reached at `send_to`, with `incoming` the subscription to this end's subject.
pub(crate) fn pump(
    client: async_nats::Client,
    incoming: async_nats::Subscriber,
    send_to: String,
    local: DuplexStream,
    peer: Arc<str>,
    view: Arc<ClusterView>,
) {
    let (reader, writer) = tokio::io::split(local);
    let (acked_tx, acked_rx) = watch::channel(0u64);
    let (reset_tx, reset_rx) = watch::channel(false);
    tokio::spawn(inbound(
        client.clone(),
        incoming,
        send_to.clone(),
        writer,
        acked_tx,
        reset_tx.clone(),
        reset_rx.clone(),
        (peer, view),
    ));
    tokio::spawn(outbound(
        client, send_to, reader, acked_rx, reset_tx, reset_rx,
    ));
}

fn frame(kind: u8, body: &[u8], number: Option<u32>) -> Bytes {
    let mut out = BytesMut::with_capacity(1 + 4 + body.len());
    out.put_u8(kind);
    if let Some(n) = number {
        out.put_u32(n);
    }
    out.put_slice(body);
    out.freeze()
}

/// Bytes the user wrote go out, within the window the other end granted.
async fn outbound(
    client: async_nats::Client,
    send_to: String,
    mut reader: tokio::io::ReadHalf<DuplexStream>,
    mut acked: watch::Receiver<u64>,
    reset_tx: watch::Sender<bool>,
    mut reset: watch::Receiver<bool>,
) {
    let mut sent = 0u64;
    let mut number = 0u32;
    let mut buf = vec![0u8; CHUNK];
    loop {
        // Wait for room in the window.
        while sent.saturating_sub(*acked.borrow()) >= WINDOW {
            tokio::select! {
                changed = acked.changed() => if changed.is_err() { return },
                _ = reset.wait_for(|r| *r) => return,
            }
        }
        let room = usize::try_from(WINDOW - sent.saturating_sub(*acked.borrow()))
            .unwrap_or(CHUNK)
            .min(CHUNK);
        let n = tokio::select! {
            // A broken stream reads as its end.
            read = reader.read(&mut buf[..room]) => read.unwrap_or(0),
            _ = reset.wait_for(|r| *r) => return,
        };
        if n == 0 {
            let _ = client
                .publish(send_to.clone(), frame(b'F', &[], None))
                .await;
            return;
        }
        number = number.wrapping_add(1);
        if client
            .publish(send_to.clone(), frame(b'D', &buf[..n], Some(number)))
            .await
            .is_err()
        {
            let _ = reset_tx.send(true);
            return;
        }
        sent += n as u64;
    }
}

/// Messages from the other end: data to the user (acknowledged once taken), the other
/// end's acknowledgements, its end, a reset.
#[allow(clippy::too_many_arguments)]
async fn inbound(
    client: async_nats::Client,
    mut incoming: async_nats::Subscriber,
    send_to: String,
    mut writer: tokio::io::WriteHalf<DuplexStream>,
    acked: watch::Sender<u64>,
    reset_tx: watch::Sender<bool>,
    mut reset: watch::Receiver<bool>,
    (peer, view): (Arc<str>, Arc<ClusterView>),
) {
    let mut expected = 1u32;
    let mut taken = 0u64;
    let mut told = 0u64;
    let mut check = tokio::time::interval(CHECK);
    let mut fin = false;
    let mut done_at: Option<tokio::time::Instant> = None;
    let reason = loop {
        let message = tokio::select! {
            m = incoming.next() => m,
            _ = check.tick() => match checked(acked.is_closed(), fin, &mut done_at, view.silent(&peer)) {
                Check::Go => continue,
                Check::Done => return,
                Check::Reset(why) => break why,
            },
            _ = reset.wait_for(|r| *r) => break "reset here",
        };
        let Some(message) = message else {
            break "NATS subscription ended";
        };
        let payload = message.payload;
        match payload.first() {
            Some(b'D') if payload.len() >= 5 && !fin => {
                let number = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
                if number != expected {
                    break "a message was lost";
                }
                expected = expected.wrapping_add(1);
                let data = &payload[5..];
                if writer.write_all(data).await.is_err() {
                    break "the user closed the stream";
                }
                taken += data.len() as u64;
                if taken - told >= WINDOW / 4 {
                    told = taken;
                    let _ = client
                        .publish(send_to.clone(), frame(b'A', &taken.to_be_bytes(), None))
                        .await;
                }
            }
            Some(b'A') if payload.len() == 9 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&payload[1..9]);
                acked.send_replace(u64::from_be_bytes(n));
            }
            Some(b'F') => {
                fin = true;
                let _ = writer.shutdown().await;
                if acked.is_closed() {
                    // Both directions are done.
                    return;
                }
            }
            Some(b'R') => break "reset by the other node",
            _ => break "a malformed message",
        }
    };
    tracing::debug!(%peer, reason, "cross-node stream ended");
    let _ = reset_tx.send(true);
    if reason != "reset by the other node" {
        let _ = client.publish(send_to, frame(b'R', &[], None)).await;
    }
    // Dropping the writer (and the outbound task's reader, which stops on the reset) tells
    // the user the stream broke.
}

enum Check {
    Go,
    /// Both sides finished.
    Done,
    Reset(&'static str),
}

/// The periodic check of a stream: both ends done; this side done and the other silent for
/// [`LINGER`]; the other node gone quiet.
fn checked(
    done_here: bool,
    done_there: bool,
    done_at: &mut Option<tokio::time::Instant>,
    node_silent: bool,
) -> Check {
    if done_here {
        if done_there {
            return Check::Done;
        }
        if done_at
            .get_or_insert_with(tokio::time::Instant::now)
            .elapsed()
            >= LINGER
        {
            return Check::Reset("the other end did not finish");
        }
    }
    if node_silent {
        return Check::Reset("the other node is out of reach");
    }
    Check::Go
}

/// A new stream's two ends: the user's, and the pump's.
pub(crate) fn ends() -> (DuplexStream, DuplexStream) {
    tokio::io::duplex(BUFFER)
}
