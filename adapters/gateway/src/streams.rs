//! Live fan-out of a session's frames to the technicians watching it (the client WebSocket).
//!
//! Each session has a broadcast channel of encoded frames and a replay buffer of the most
//! recent ones, bounded in bytes, so a watcher who joins late first sees what is buffered of
//! the running and recent commands. Publishing never waits: a watcher that falls behind the
//! broadcast capacity is told so and dropped, and never slows the agent or other watchers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use rmm_application::{SessionStreams, StreamEvent};
use rmm_domain::SessionId;
use tokio::sync::broadcast;

use rmm_protocol::{AgentMessage, TerminalOutput, TunnelDataPayload, encode};

/// Frames a watcher may lag behind before it is dropped.
pub const WATCHER_LAG_FRAMES: usize = 1024;
/// Bytes of recent frames kept per session for late watchers.
pub const REPLAY_BYTES: usize = 1024 * 1024;

#[derive(Debug)]
struct SessionStream {
    live: broadcast::Sender<Arc<str>>,
    replay: VecDeque<Arc<str>>,
    replay_bytes: usize,
}

/// What a new watcher gets: the buffered frames, then the live feed.
#[derive(Debug)]
pub struct Subscription {
    pub replay: Vec<Arc<str>>,
    pub live: broadcast::Receiver<Arc<str>>,
}

/// The [`SessionStreams`] adapter.
#[derive(Debug, Default)]
pub struct BroadcastStreams {
    sessions: Mutex<HashMap<SessionId, SessionStream>>,
}

impl BroadcastStreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, SessionStream>> {
        // Every update leaves the map consistent, so a poisoned lock is still usable.
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Joins a session's stream. Replay and subscription are taken under one lock, so no
    /// frame falls between them.
    pub fn subscribe(&self, session: SessionId) -> Subscription {
        let mut sessions = self.lock();
        let stream = sessions.entry(session).or_insert_with(new_stream);
        Subscription {
            replay: stream.replay.iter().cloned().collect(),
            live: stream.live.subscribe(),
        }
    }

    /// Encodes an event as the reference frame an agent sent (`tunnel_data` / `tunnel_error`).
    #[must_use]
    pub fn encode_event(event: &StreamEvent) -> String {
        match event {
            StreamEvent::Output { channel, chunk } => {
                let mut output = TerminalOutput::chunk(&chunk.stdout, &chunk.stderr);
                output.exit_code = chunk.exit_code;
                output.signal.clone_from(&chunk.signal);
                output.end_reason.clone_from(&chunk.end_reason);
                encode(&AgentMessage::TunnelData {
                    channel_id: channel.to_string(),
                    data: TunnelDataPayload::TerminalOutput(output),
                })
            }
            StreamEvent::Error { channel, error } => encode(&AgentMessage::TunnelError {
                channel_id: channel.to_string(),
                error: error.clone(),
            }),
        }
    }
}

fn new_stream() -> SessionStream {
    let (live, _) = broadcast::channel(WATCHER_LAG_FRAMES);
    SessionStream {
        live,
        replay: VecDeque::new(),
        replay_bytes: 0,
    }
}

impl SessionStreams for BroadcastStreams {
    fn publish(&self, session: SessionId, event: &StreamEvent) {
        let frame: Arc<str> = Self::encode_event(event).into();
        let mut sessions = self.lock();
        let stream = sessions.entry(session).or_insert_with(new_stream);
        stream.replay_bytes += frame.len();
        stream.replay.push_back(Arc::clone(&frame));
        while stream.replay_bytes > REPLAY_BYTES {
            match stream.replay.pop_front() {
                Some(old) => stream.replay_bytes -= old.len(),
                None => break,
            }
        }
        // No receivers is fine: nobody watches right now.
        let _ = stream.live.send(frame);
    }

    fn end_session(&self, session: SessionId) {
        // Dropping the sender ends every watcher's feed.
        self.lock().remove(&session);
    }
}

#[cfg(test)]
mod tests {
    use rmm_application::OutputChunk;
    use rmm_domain::ChannelId;
    use uuid::Uuid;

    use super::*;

    fn output(text: &str) -> StreamEvent {
        StreamEvent::Output {
            channel: ChannelId::parse("c-1").unwrap(),
            chunk: OutputChunk {
                stdout: text.as_bytes().to_vec(),
                ..OutputChunk::default()
            },
        }
    }

    const S: SessionId = SessionId::from_uuid(Uuid::from_u128(1));

    #[tokio::test]
    async fn watchers_get_the_replay_then_live_frames_in_the_reference_format() {
        let hub = BroadcastStreams::default();
        hub.publish(S, &output("early\n"));
        let mut sub = hub.subscribe(S);
        assert_eq!(sub.replay.len(), 1);
        assert_eq!(
            &*sub.replay[0],
            r#"{"type":"tunnel_data","payload":{"channel_id":"c-1","data":{"type":"terminal_output","payload":{"stdout":"early\n","stderr":"","exit_code":null}}}}"#
        );
        hub.publish(S, &output("late\n"));
        assert!(sub.live.recv().await.unwrap().contains("late"));
    }

    #[tokio::test]
    async fn the_replay_buffer_is_bounded_in_bytes() {
        let hub = BroadcastStreams::default();
        let big = "x".repeat(256 * 1024);
        for _ in 0..10 {
            hub.publish(S, &output(&big));
        }
        let sub = hub.subscribe(S);
        let bytes: usize = sub.replay.iter().map(|f| f.len()).sum();
        assert!(bytes <= REPLAY_BYTES, "{bytes}");
        assert_eq!(sub.replay.len(), 3);
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_told_it_lagged() {
        let hub = BroadcastStreams::default();
        let mut sub = hub.subscribe(S);
        for _ in 0..(WATCHER_LAG_FRAMES + 5) {
            hub.publish(S, &output("x"));
        }
        assert!(matches!(
            sub.live.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
    }

    #[tokio::test]
    async fn ending_a_session_closes_every_feed() {
        let hub = BroadcastStreams::default();
        let mut sub = hub.subscribe(S);
        hub.end_session(S);
        assert!(matches!(
            sub.live.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
    }
}
