//! Live fan-out of a session's frames to the technicians watching it (the client WebSocket).
//!
//! Each session keeps the most recent frames in a ring bounded in bytes that every watcher
//! reads at its own pace, and a replay buffer of the most recent ones, so a watcher who joins
//! late first sees what is buffered of the running and recent commands. Publishing never
//! waits: a watcher that falls behind what the ring keeps is told so (and dropped by the
//! socket task), and never slows the agent or other watchers. Memory per session is bounded
//! by [`WATCHER_LAG_BYTES`] + [`REPLAY_BYTES`] (frames are shared) whatever the watchers do.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use rmm_application::{SessionStreams, StreamEvent};
use rmm_domain::SessionId;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use rmm_protocol::{AgentMessage, TerminalOutput, TunnelDataPayload, encode};

/// Bytes of frames kept per session for its live watchers: a watcher further behind than
/// this is dropped (the newest frame is always kept, whatever its size).
pub const WATCHER_LAG_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of recent frames kept per session for late watchers.
pub const REPLAY_BYTES: usize = 1024 * 1024;

/// The frames live watchers may still read, numbered from `first`.
#[derive(Debug, Default)]
struct Ring {
    first: u64,
    frames: VecDeque<Arc<str>>,
    bytes: usize,
}

impl Ring {
    /// The number of the next frame published.
    fn end(&self) -> u64 {
        self.first + self.frames.len() as u64
    }

    /// Appends `frame`, then drops the oldest frames past `limit` bytes (keeping the newest).
    fn push(&mut self, frame: Arc<str>, limit: usize) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
        while self.bytes > limit && self.frames.len() > 1 {
            if let Some(old) = self.frames.pop_front() {
                self.bytes -= old.len();
                self.first += 1;
            }
        }
    }
}

#[derive(Debug)]
struct SessionStream {
    live: watch::Sender<Ring>,
    replay: VecDeque<Arc<str>>,
    replay_bytes: usize,
}

/// One watcher's place in a session's live frames.
#[derive(Debug)]
pub struct LiveFeed {
    ring: watch::Receiver<Ring>,
    next: u64,
}

impl LiveFeed {
    /// The next frame. [`RecvError::Lagged`] (with the number of frames missed) when the
    /// frames it had not read yet were dropped, [`RecvError::Closed`] once the session ended
    /// and every frame was read.
    ///
    /// # Errors
    /// As above.
    pub async fn recv(&mut self) -> Result<Arc<str>, RecvError> {
        loop {
            {
                let ring = self.ring.borrow_and_update();
                if self.next < ring.first {
                    let missed = ring.first - self.next;
                    self.next = ring.first;
                    return Err(RecvError::Lagged(missed));
                }
                let index = usize::try_from(self.next - ring.first).unwrap_or(usize::MAX);
                if let Some(frame) = ring.frames.get(index) {
                    self.next += 1;
                    return Ok(Arc::clone(frame));
                }
            }
            if self.ring.changed().await.is_err() {
                return Err(RecvError::Closed);
            }
        }
    }
}

/// What a new watcher gets: the buffered frames, then the live feed.
#[derive(Debug)]
pub struct Subscription {
    pub replay: Vec<Arc<str>>,
    pub live: LiveFeed,
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
        let ring = stream.live.subscribe();
        let next = ring.borrow().end();
        Subscription {
            replay: stream.replay.iter().cloned().collect(),
            live: LiveFeed { ring, next },
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
    SessionStream {
        live: watch::Sender::new(Ring::default()),
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
        // With nobody watching, nothing is kept for live watchers (the replay serves joiners).
        let limit = if stream.live.receiver_count() == 0 {
            0
        } else {
            WATCHER_LAG_BYTES
        };
        stream.live.send_modify(|ring| ring.push(frame, limit));
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

    fn ring_bytes(hub: &BroadcastStreams) -> usize {
        hub.lock().get(&S).map_or(0, |s| s.live.borrow().bytes)
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_the_byte_bound_is_told_it_lagged() {
        let hub = BroadcastStreams::default();
        let mut slow = hub.subscribe(S);
        let mut reading = hub.subscribe(S);
        let big = "x".repeat(64 * 1024);
        let frames = 2 * WATCHER_LAG_BYTES / big.len();
        for _ in 0..frames {
            hub.publish(S, &output(&big));
            // The reading watcher keeps up and misses nothing.
            assert!(reading.live.recv().await.unwrap().contains("xxx"));
            assert!(
                ring_bytes(&hub) <= WATCHER_LAG_BYTES,
                "{}",
                ring_bytes(&hub)
            );
        }
        let Err(RecvError::Lagged(missed)) = slow.live.recv().await else {
            panic!("the slow watcher was not told it lagged");
        };
        assert!(missed > 0 && missed < frames as u64, "{missed}");
        // After the lag it reads on from the oldest frame kept.
        assert!(slow.live.recv().await.unwrap().contains("xxx"));
    }

    #[tokio::test]
    async fn nothing_is_kept_for_live_watchers_when_nobody_watches() {
        let hub = BroadcastStreams::default();
        let big = "x".repeat(64 * 1024);
        for _ in 0..100 {
            hub.publish(S, &output(&big));
        }
        assert!(ring_bytes(&hub) < 2 * big.len(), "{}", ring_bytes(&hub));
    }

    #[tokio::test]
    async fn a_frame_over_the_bound_still_reaches_a_reading_watcher() {
        let hub = BroadcastStreams::default();
        let mut sub = hub.subscribe(S);
        let huge = "y".repeat(WATCHER_LAG_BYTES + 1);
        hub.publish(S, &output(&huge));
        assert!(sub.live.recv().await.unwrap().len() > WATCHER_LAG_BYTES);
    }

    #[tokio::test]
    async fn a_feed_delivers_what_is_kept_before_it_reports_the_end() {
        let hub = BroadcastStreams::default();
        let mut sub = hub.subscribe(S);
        hub.publish(S, &output("last\n"));
        hub.end_session(S);
        assert!(sub.live.recv().await.unwrap().contains("last"));
        assert!(matches!(sub.live.recv().await, Err(RecvError::Closed)));
    }

    #[tokio::test]
    async fn ending_a_session_closes_every_feed() {
        let hub = BroadcastStreams::default();
        let mut sub = hub.subscribe(S);
        hub.end_session(S);
        assert!(matches!(sub.live.recv().await, Err(RecvError::Closed)));
    }
}
