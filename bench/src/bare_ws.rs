//! The idle fleet's peer: a bare agent WebSocket server on tokio and tokio-tungstenite (the
//! server's own stack) doing only what the protocol makes any server do with idle agents —
//! accept the upgrade, read and decode every frame, ping each connection every
//! `--ping-secs` on the same 1 s grid as `rmm-server`, drop a silent one — and nothing of
//! ours: no keys, no registry, no presence, no database. `bench/run.sh --sim` runs the same
//! simulated fleet against it, so the server's idle CPU and RSS per agent are printed beside
//! the floor of the stack they run on, on the same machine.
//!
//! Loopback only: [`serve`] refuses any other listen address.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use rmm_protocol::AgentMessage;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The grid pings are aligned to (as `rmm-server`'s agent connections).
const PING_GRID: Duration = Duration::from_secs(1);
/// No frame for this long: the connection is dropped (as `rmm-server`'s default).
const READ_IDLE: Duration = Duration::from_secs(60);

/// Serves agents on `listen` until the process is killed.
///
/// # Errors
/// A listen address off loopback, or one that cannot be bound.
pub async fn serve(listen: SocketAddr, ping_every: Duration) -> anyhow::Result<()> {
    if !listen.ip().is_loopback() {
        bail!("the bare WebSocket peer listens on loopback only, not {listen}");
    }
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    let epoch = Instant::now();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors and the like: the fleet's dial retries, as against the server.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(connection(stream, epoch, ping_every));
    }
}

/// One agent: the same WebSocket settings as `rmm-server`'s agent socket.
async fn connection(stream: TcpStream, epoch: Instant, ping_every: Duration) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_message_size(Some(1024 * 1024))
        .max_frame_size(Some(1024 * 1024));
    let Ok(socket) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut sink, mut frames) = socket.split();
    let mut inbound = Instant::now();
    let mut next_ping = on_grid(epoch, Instant::now());
    loop {
        let wake = next_ping.min(inbound + READ_IDLE);
        tokio::select! {
            frame = frames.next() => {
                inbound = Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        // Decoded as the server decodes it, then dropped.
                        let _ = std::hint::black_box(serde_json::from_str::<AgentMessage>(&text));
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                    Some(Ok(_)) => {}
                }
            }
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if now >= inbound + READ_IDLE {
                    return;
                }
                if now >= next_ping {
                    if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                        return;
                    }
                    next_ping = on_grid(epoch, next_ping + ping_every);
                }
            }
        }
    }
}

/// The first grid step at or after `at`.
fn on_grid(epoch: Instant, at: Instant) -> Instant {
    let since = at.saturating_duration_since(epoch);
    let steps = since.as_nanos().div_ceil(PING_GRID.as_nanos());
    epoch + PING_GRID * u32::try_from(steps).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_land_on_the_grid_step_at_or_after_their_time() {
        let epoch = Instant::now();
        assert_eq!(on_grid(epoch, epoch), epoch);
        assert_eq!(
            on_grid(epoch, epoch + Duration::from_millis(1)),
            epoch + PING_GRID
        );
        assert_eq!(
            on_grid(epoch, epoch + Duration::from_secs(20)),
            epoch + Duration::from_secs(20)
        );
    }

    #[tokio::test]
    async fn it_refuses_a_listen_address_off_loopback() {
        let e = serve("10.0.0.1:0".parse().expect("addr"), Duration::from_secs(20))
            .await
            .expect_err("refused");
        assert!(e.to_string().contains("loopback"), "{e}");
    }
}
