//! Live fan-out of a session's frames to the technicians watching it (the client WebSocket).
//!
//! Each session keeps the most recent frames in a ring bounded in bytes that every watcher
//! reads at its own pace, and a replay buffer of the most recent ones, so a watcher who joins
//! late first sees what is buffered of the running and recent commands. Publishing never
//! waits: a watcher that falls behind what the ring keeps is told so (and dropped by the
//! socket task). The agent's connection paces itself to the watchers before it publishes
//! ([`BroadcastStreams::wait_for_room`], bounded in time), so a slow reader is waited for
//! rather than dropped. Memory per session is bounded
//! by [`WATCHER_LAG_BYTES`] + [`REPLAY_BYTES`] (frames are shared) whatever the watchers do.
//!
//! A frame keeps the event's bytes once. Watchers that asked for binary output
//! (`?output=binary`) get them as binary data frames built at send time (no escaping); the
//! reference JSON frame is built once, shared, and only when a watcher without the opt-in
//! exists: at publish time when one watches (and it is counted in the ring's bytes), or when
//! a late joiner replays a frame (at most the replay's worth, uncounted).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use poem::web::websocket::Message;
use rmm_application::{OutputChunk, SessionStreams, StreamEvent};
use rmm_domain::{ChannelId, SessionId};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use rmm_protocol::{
    AgentMessage, DataFrame, OutputChannel, OutputStream, TerminalOutput, TunnelDataPayload, encode,
};

/// Bytes of frames kept per session for its live watchers: a watcher further behind than
/// this is dropped (the newest frame is always kept, whatever its size).
pub const WATCHER_LAG_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of recent frames kept per session for late watchers.
pub const REPLAY_BYTES: usize = 1024 * 1024;
/// Channels whose stream positions a session tracks at most; past it they restart (a
/// command's positions are dropped at its end, so only a flood of unfinished ones gets here).
const MAX_TRACKED_CHANNELS: usize = 4096;
/// A watcher's position once the publisher stopped waiting for it (see
/// [`BroadcastStreams::wait_for_room`]); its next read puts its real position back.
const GIVEN_UP: u64 = u64::MAX;

/// One published event, as each kind of watcher gets it.
#[derive(Debug)]
pub struct Frame {
    event: StreamEvent,
    /// Where the event's stdout and stderr bytes start in their streams.
    offsets: [u64; 2],
    /// The reference JSON frame, built once for the watchers without the opt-in.
    json: OnceLock<String>,
    /// The bytes this frame is counted for in the ring and the replay.
    charged: usize,
}

impl Frame {
    fn new(event: StreamEvent, offsets: [u64; 2], with_json: bool) -> Self {
        let json = OnceLock::new();
        let mut charged = match &event {
            StreamEvent::Output { chunk, .. } => chunk.stdout.len() + chunk.stderr.len() + 64,
            StreamEvent::Error { error, .. } => error.len() + 64,
        };
        if with_json {
            let text = BroadcastStreams::encode_event(&event);
            charged += text.len();
            let _ = json.set(text);
        }
        Self {
            event,
            offsets,
            json,
            charged,
        }
    }

    /// The reference frame (`tunnel_data` / `tunnel_error`), as watchers without the opt-in
    /// get it.
    pub fn json(&self) -> &str {
        self.json
            .get_or_init(|| BroadcastStreams::encode_event(&self.event))
    }

    /// The bytes this frame is counted for.
    #[must_use]
    pub const fn charged(&self) -> usize {
        self.charged
    }

    /// What a watcher gets: the reference frame; or, with `binary`, output bytes as binary
    /// data frames (one per non-empty stream) and then, for an end or an error, the JSON
    /// frame without the bytes.
    #[must_use]
    pub fn messages(&self, binary: bool) -> Vec<Message> {
        let StreamEvent::Output { channel, chunk } = &self.event else {
            return vec![Message::Text(self.json().to_owned())];
        };
        if !binary || (chunk.stdout.is_empty() && chunk.stderr.is_empty()) {
            return vec![Message::Text(self.json().to_owned())];
        }
        let mut out = Vec::with_capacity(2);
        let streams = [
            (OutputStream::Stdout, &chunk.stdout, self.offsets[0]),
            (OutputStream::Stderr, &chunk.stderr, self.offsets[1]),
        ];
        for (stream, data, offset) in streams {
            if data.is_empty() {
                continue;
            }
            let id = OutputChannel {
                channel: channel.as_str(),
                stream,
            }
            .id();
            out.push(Message::Binary(DataFrame::encode_parts(&id, offset, data)));
        }
        if chunk.exit_code.is_some() {
            let end = StreamEvent::Output {
                channel: channel.clone(),
                chunk: OutputChunk {
                    stdout: Vec::new(),
                    stderr: Vec::new(),
                    ..chunk.clone()
                },
            };
            out.push(Message::Text(BroadcastStreams::encode_event(&end)));
        }
        out
    }
}

/// The frames live watchers may still read, numbered from `first`.
#[derive(Debug, Default)]
struct Ring {
    first: u64,
    frames: VecDeque<Arc<Frame>>,
    bytes: usize,
}

impl Ring {
    /// The number of the next frame published.
    fn end(&self) -> u64 {
        self.first + self.frames.len() as u64
    }

    /// Appends `frame`, then drops the oldest frames past `limit` bytes (keeping the newest).
    fn push(&mut self, frame: Arc<Frame>, limit: usize) {
        self.bytes += frame.charged;
        self.frames.push_back(frame);
        while self.bytes > limit && self.frames.len() > 1 {
            if let Some(old) = self.frames.pop_front() {
                self.bytes -= old.charged;
                self.first += 1;
            }
        }
    }
}

#[derive(Debug)]
struct SessionStream {
    live: watch::Sender<Ring>,
    replay: VecDeque<Arc<Frame>>,
    replay_bytes: usize,
    /// Live watchers without the binary opt-in: while there are any, frames carry their JSON.
    json_watchers: Arc<AtomicUsize>,
    /// Bytes published so far of each channel's stdout and stderr (the binary frames' offsets).
    positions: HashMap<ChannelId, [u64; 2]>,
    /// Each live watcher's next frame, for [`BroadcastStreams::backlog`].
    readers: Vec<Weak<AtomicU64>>,
}

impl SessionStream {
    /// The offsets of `event`'s bytes, and the positions moved past them.
    fn advance(&mut self, event: &StreamEvent) -> [u64; 2] {
        match event {
            StreamEvent::Output { channel, chunk } => {
                if self.positions.len() >= MAX_TRACKED_CHANNELS
                    && !self.positions.contains_key(channel)
                {
                    self.positions.clear();
                }
                let at = self.positions.get(channel).copied().unwrap_or_default();
                if chunk.exit_code.is_some() {
                    self.positions.remove(channel);
                } else {
                    let next = [
                        at[0] + chunk.stdout.len() as u64,
                        at[1] + chunk.stderr.len() as u64,
                    ];
                    self.positions.insert(channel.clone(), next);
                }
                at
            }
            StreamEvent::Error { channel, .. } => {
                self.positions.remove(channel);
                [0, 0]
            }
        }
    }
}

/// One watcher's place in a session's live frames.
#[derive(Debug)]
pub struct LiveFeed {
    ring: watch::Receiver<Ring>,
    next: u64,
    /// The session's count of JSON watchers, this one included (`None` for a binary one).
    json_watchers: Option<Arc<AtomicUsize>>,
    /// `next`, for the publisher to see how far behind this watcher is.
    read: Arc<AtomicU64>,
}

impl Drop for LiveFeed {
    fn drop(&mut self) {
        if let Some(count) = &self.json_watchers {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl LiveFeed {
    /// The next frame. [`RecvError::Lagged`] (with the number of frames missed) when the
    /// frames it had not read yet were dropped, [`RecvError::Closed`] once the session ended
    /// and every frame was read.
    ///
    /// # Errors
    /// As above.
    pub async fn recv(&mut self) -> Result<Arc<Frame>, RecvError> {
        loop {
            {
                let ring = self.ring.borrow_and_update();
                if self.next < ring.first {
                    let missed = ring.first - self.next;
                    crate::telemetry::dropped(crate::telemetry::Queue::SessionStream, missed);
                    self.next = ring.first;
                    self.read.store(self.next, Ordering::Relaxed);
                    return Err(RecvError::Lagged(missed));
                }
                let index = usize::try_from(self.next - ring.first).unwrap_or(usize::MAX);
                if let Some(frame) = ring.frames.get(index) {
                    self.next += 1;
                    self.read.store(self.next, Ordering::Relaxed);
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
    pub replay: Vec<Arc<Frame>>,
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

    /// Joins a session's stream; `binary`: the watcher asked for binary output frames.
    /// Replay and subscription are taken under one lock, so no frame falls between them.
    pub fn subscribe(&self, session: SessionId, binary: bool) -> Subscription {
        let mut sessions = self.lock();
        let stream = sessions.entry(session).or_insert_with(new_stream);
        let ring = stream.live.subscribe();
        let next = ring.borrow().end();
        let json_watchers = (!binary).then(|| {
            stream.json_watchers.fetch_add(1, Ordering::Relaxed);
            Arc::clone(&stream.json_watchers)
        });
        let read = Arc::new(AtomicU64::new(next));
        stream.readers.retain(|r| r.strong_count() > 0);
        stream.readers.push(Arc::downgrade(&read));
        Subscription {
            replay: stream.replay.iter().cloned().collect(),
            live: LiveFeed {
                ring,
                next,
                json_watchers,
                read,
            },
        }
    }

    /// Bytes of the session's live frames that its slowest watcher has not read yet, and
    /// that watcher's position (watchers told they lagged, or given up on, do not count).
    fn backlog(&self, session: SessionId) -> (usize, Option<(Arc<AtomicU64>, u64)>) {
        let sessions = self.lock();
        let Some(stream) = sessions.get(&session) else {
            return (0, None);
        };
        let ring = stream.live.borrow();
        let slowest = stream
            .readers
            .iter()
            .filter_map(Weak::upgrade)
            .map(|r| {
                let next = r.load(Ordering::Relaxed);
                (r, next)
            })
            .filter(|(_, next)| *next >= ring.first && *next != GIVEN_UP)
            .min_by_key(|(_, next)| *next);
        let Some((reader, next)) = slowest else {
            return (0, None);
        };
        let skip = usize::try_from(next - ring.first).unwrap_or(usize::MAX);
        let bytes = ring.frames.iter().skip(skip).map(|f| f.charged).sum();
        (bytes, Some((reader, next)))
    }

    /// Backpressure on the publisher of a session's output (its agent's connection): waits
    /// while a watcher has more than half of [`WATCHER_LAG_BYTES`] unread. A watcher that
    /// reads nothing for `patience` is given up on (no longer waited for, dropped as too slow
    /// once the ring passes it); one reading at its own pace paces the command, as an `ssh`
    /// client would, instead of being dropped.
    pub async fn wait_for_room(&self, session: SessionId, patience: Duration) {
        let mut waiting_on: Option<u64> = None;
        let mut since = tokio::time::Instant::now();
        loop {
            let (bytes, slowest) = self.backlog(session);
            let Some((reader, next)) = slowest.filter(|_| bytes > WATCHER_LAG_BYTES / 2) else {
                return;
            };
            if waiting_on != Some(next) {
                waiting_on = Some(next);
                since = tokio::time::Instant::now();
            } else if since.elapsed() >= patience {
                // Unless it read meanwhile: then it is waited for again.
                let _ =
                    reader.compare_exchange(next, GIVEN_UP, Ordering::Relaxed, Ordering::Relaxed);
                continue;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
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
        json_watchers: Arc::new(AtomicUsize::new(0)),
        positions: HashMap::new(),
        readers: Vec::new(),
    }
}

impl SessionStreams for BroadcastStreams {
    fn publish(&self, session: SessionId, event: &StreamEvent) {
        // A session's events are published by its agent's connection task, one at a time, so
        // the positions taken here stay in the order the frames are pushed below.
        let (offsets, with_json) = {
            let mut sessions = self.lock();
            let stream = sessions.entry(session).or_insert_with(new_stream);
            let with_json = stream.json_watchers.load(Ordering::Relaxed) > 0;
            (stream.advance(event), with_json)
        };
        // Copied and encoded outside the lock every session shares.
        let frame = Arc::new(Frame::new(event.clone(), offsets, with_json));
        let mut sessions = self.lock();
        let stream = sessions.entry(session).or_insert_with(new_stream);
        stream.replay_bytes += frame.charged;
        stream.replay.push_back(Arc::clone(&frame));
        while stream.replay_bytes > REPLAY_BYTES {
            match stream.replay.pop_front() {
                Some(old) => stream.replay_bytes -= old.charged,
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
#[path = "streams_tests.rs"]
mod tests;
