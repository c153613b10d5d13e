//! A terminal's frames in sequence, as records (see `rmm_fuzz::records`): the agent's PTY
//! output frames into the gateway's credit bookkeeping (`ReceiveCredit`), the technician's
//! input through the gateway's `SendWindow`, the `pty_*` and `channel_ack` messages both ways.
//! Properties: the bookkeeping accepts exactly the frames the rules allow (docs/protocol.md:
//! in order, at most a frame's data, at most the window beyond the last ack), acks never go
//! backwards nor beyond what was sent, and no offset overflows.
use std::collections::VecDeque;

use rmm_protocol::limits::{STREAM_FRAME_DATA, STREAM_WINDOW, STREAM_WINDOW_FRAMES};
use rmm_protocol::{AgentMessage, ServerMessage};

/// The gateway's bookkeeping, compiled from its source: pure code, and the gateway crate would
/// bring the whole server into this build.
#[allow(dead_code)]
#[path = "../../../adapters/gateway/src/agents/window.rs"]
mod window;

use window::{ReceiveCredit, SendWindow};

/// What the rules say the receiving side holds.
#[derive(Default)]
struct Received {
    next: u64,
    acked: u64,
    ends: VecDeque<u64>,
    broken: bool,
}

impl Received {
    fn frame(&mut self, credit: &mut ReceiveCredit, offset: u64, len: usize) {
        if self.broken {
            return;
        }
        let result = credit.receive(offset, len);
        let end = self.next.checked_add(len as u64);
        let allowed = offset == self.next
            && len <= STREAM_FRAME_DATA
            && end.is_some_and(|end| {
                let frames = self.ends.len() as u64 + 1;
                end - self.acked <= STREAM_WINDOW + STREAM_FRAME_DATA as u64
                    && frames <= STREAM_WINDOW_FRAMES
            });
        assert_eq!(
            result.is_ok(),
            allowed,
            "frame at {offset} of {len}: {result:?}"
        );
        match (result, end) {
            (Ok(()), Some(end)) => {
                self.next = end;
                self.ends.push_back(end);
            }
            // The gateway ends the terminal: the stream is unusable.
            _ => self.broken = true,
        }
    }

    fn ack(&mut self, credit: &mut ReceiveCredit, offset: u64) {
        if self.broken {
            return;
        }
        let granted = credit.ack(offset);
        let expected = self.acked.max(offset.min(self.next));
        assert_eq!(granted, expected, "ack of {offset}");
        self.acked = granted;
        while self.ends.front().is_some_and(|&end| end <= self.acked) {
            self.ends.pop_front();
        }
    }
}

fn send(window: &mut SendWindow, frames: &mut VecDeque<u64>, want: usize) {
    let room = window.room();
    assert!(room <= STREAM_FRAME_DATA);
    let in_flight = window.sent() - window.acked();
    if in_flight >= STREAM_WINDOW || frames.len() as u64 >= STREAM_WINDOW_FRAMES {
        assert_eq!(room, 0, "room beyond the window");
        return;
    }
    if room == 0 || want == 0 {
        return;
    }
    let len = want.min(room);
    let offset = window.send(len);
    assert_eq!(offset + len as u64, window.sent());
    assert!(window.sent() - window.acked() <= STREAM_WINDOW);
    frames.push_back(window.sent());
}

fn acked(window: &mut SendWindow, frames: &mut VecDeque<u64>, offset: u64) {
    let before = window.acked();
    window.ack(offset);
    assert_eq!(window.acked(), before.max(offset.min(window.sent())));
    while frames.front().is_some_and(|&end| end <= window.acked()) {
        frames.pop_front();
    }
    assert_eq!(window.settled(), window.acked() == window.sent());
}

/// One input of the target.
pub fn run(data: &[u8]) {
    let (mut credit, mut received) = (ReceiveCredit::default(), Received::default());
    let (mut window, mut in_flight) = (SendWindow::default(), VecDeque::new());
    for (kind, record) in crate::records(data) {
        match kind % 5 {
            // Agent → server: PTY output.
            0 => {
                if let Some(frame) = crate::data_frame(record) {
                    received.frame(&mut credit, frame.offset, frame.data.len());
                }
            }
            // Agent → server: pty_ready, pty_exit, channel_ack (for the technician's input).
            1 => {
                let message = crate::text(record).and_then(crate::agent_text);
                if let Some(AgentMessage::ChannelAck { offset, .. }) = message {
                    acked(&mut window, &mut in_flight, offset);
                }
            }
            // Server → agent: pty_open, pty_resize, pty_close, channel_ack (the technician
            // took output up to there).
            2 => {
                let message = crate::text(record).and_then(crate::server_text);
                if let Some(ServerMessage::ChannelAck { offset, .. }) = message {
                    received.ack(&mut credit, offset);
                }
            }
            // The technician types: the gateway sends what its window allows.
            3 => {
                let want = record
                    .iter()
                    .fold(0usize, |n, b| (n << 8 | usize::from(*b)) & 0x3_ffff);
                send(&mut window, &mut in_flight, want);
            }
            // Server → agent: input bytes.
            _ => {
                crate::data_frame(record);
            }
        }
    }
}
