//! Credit accounting of the byte streams on a channel (terminal output and input, command
//! stdin): at most [`STREAM_WINDOW`] bytes and [`STREAM_WINDOW_FRAMES`] frames beyond the
//! receiver's last `channel_ack` are in flight. Pure bookkeeping, no I/O.

use std::collections::VecDeque;

use rmm_protocol::limits::{STREAM_FRAME_DATA, STREAM_WINDOW, STREAM_WINDOW_FRAMES};

/// The sending side: what the server may still send to the agent.
#[derive(Debug, Default)]
pub(crate) struct SendWindow {
    /// Offset of the next byte sent.
    sent: u64,
    /// The agent's last acknowledged offset.
    acked: u64,
    /// End offsets of the frames not wholly acknowledged yet.
    ends: VecDeque<u64>,
}

impl SendWindow {
    /// How many bytes the next frame may carry now (0: wait for an ack).
    pub(crate) fn room(&self) -> usize {
        if self.ends.len() as u64 >= STREAM_WINDOW_FRAMES {
            return 0;
        }
        let free = STREAM_WINDOW.saturating_sub(self.sent - self.acked);
        usize::try_from(free)
            .unwrap_or(usize::MAX)
            .min(STREAM_FRAME_DATA)
    }

    /// Records a frame of `len` bytes as sent; its offset.
    pub(crate) fn send(&mut self, len: usize) -> u64 {
        let offset = self.sent;
        self.sent += len as u64;
        self.ends.push_back(self.sent);
        offset
    }

    /// The agent took every byte before `offset` (never more than was sent; never backwards).
    pub(crate) fn ack(&mut self, offset: u64) {
        let offset = offset.min(self.sent);
        if offset > self.acked {
            self.acked = offset;
        }
        while self.ends.front().is_some_and(|&end| end <= self.acked) {
            self.ends.pop_front();
        }
    }

    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }

    /// Everything sent was acknowledged.
    pub(crate) fn settled(&self) -> bool {
        self.acked == self.sent
    }
}

/// How an agent broke the output rules of a terminal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CreditError {
    #[error("output frame at offset {got}, expected {expected}")]
    Offset { expected: u64, got: u64 },
    #[error("output frame of {0} bytes, over the frame limit")]
    TooLarge(usize),
    #[error("the agent exceeded its credit ({bytes} bytes, {frames} frames unacknowledged)")]
    Exceeded { bytes: u64, frames: usize },
}

/// The receiving side: what the agent sent beyond the last ack the application gave.
#[derive(Debug, Default)]
pub(crate) struct ReceiveCredit {
    /// Offset of the next byte expected.
    next: u64,
    /// The last offset granted to the agent (`channel_ack`).
    acked: u64,
    /// End offsets of the frames received beyond `acked`.
    ends: VecDeque<u64>,
}

impl ReceiveCredit {
    /// Accounts a frame of `len` bytes at `offset`. An agent may overshoot the byte window by
    /// one frame (it may start a frame while under it), never the frame count.
    ///
    /// # Errors
    /// [`CreditError`] when the frame breaks the rules; the stream is then unusable.
    pub(crate) fn receive(&mut self, offset: u64, len: usize) -> Result<(), CreditError> {
        if offset != self.next {
            return Err(CreditError::Offset {
                expected: self.next,
                got: offset,
            });
        }
        if len > STREAM_FRAME_DATA {
            return Err(CreditError::TooLarge(len));
        }
        self.next += len as u64;
        self.ends.push_back(self.next);
        let bytes = self.next - self.acked;
        let frames = self.ends.len();
        if bytes > STREAM_WINDOW + STREAM_FRAME_DATA as u64 || frames as u64 > STREAM_WINDOW_FRAMES
        {
            return Err(CreditError::Exceeded { bytes, frames });
        }
        Ok(())
    }

    /// The agent can hardly send more before the next grant (within a frame of the byte
    /// window, or at the frame window): it waits for the application's ack.
    pub(crate) fn starved(&self) -> bool {
        self.next - self.acked + STREAM_FRAME_DATA as u64 > STREAM_WINDOW
            || self.ends.len() as u64 + 1 >= STREAM_WINDOW_FRAMES
    }

    /// Grants credit up to `offset` (clamped to what was received; never backwards); the
    /// offset to tell the agent.
    pub(crate) fn ack(&mut self, offset: u64) -> u64 {
        let offset = offset.min(self.next);
        if offset > self.acked {
            self.acked = offset;
        }
        while self.ends.front().is_some_and(|&end| end <= self.acked) {
            self.ends.pop_front();
        }
        self.acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: usize = STREAM_FRAME_DATA;

    #[test]
    fn the_send_window_stops_at_the_byte_window_and_reopens_on_ack() {
        let mut window = SendWindow::default();
        let mut offsets = Vec::new();
        while window.room() > 0 {
            let room = window.room();
            assert_eq!(room, FRAME);
            offsets.push(window.send(room));
        }
        assert_eq!(window.sent(), STREAM_WINDOW);
        assert_eq!(offsets[1..3], [FRAME as u64, 2 * FRAME as u64]);
        window.ack(100);
        assert_eq!(window.room(), 100, "room is what the ack freed");
        window.ack(50);
        assert_eq!(window.acked(), 100, "acks never go backwards");
        window.ack(u64::MAX);
        assert_eq!(
            window.acked(),
            STREAM_WINDOW,
            "acks never pass what was sent"
        );
        assert!(window.settled());
        assert_eq!(window.room(), FRAME);
    }

    #[test]
    fn the_send_window_stops_at_the_frame_window() {
        let mut window = SendWindow::default();
        for _ in 0..STREAM_WINDOW_FRAMES {
            assert!(window.room() > 0);
            window.send(1);
        }
        assert_eq!(window.room(), 0, "256 tiny frames fill the window");
        // Only an ack at a frame's end releases it.
        window.ack(0);
        assert_eq!(window.room(), 0);
        window.ack(1);
        assert_eq!(window.room(), FRAME);
        let mut window = SendWindow::default();
        window.send(10);
        window.ack(5);
        assert_eq!(
            window.room(),
            FRAME,
            "half a frame acknowledged frees its bytes"
        );
        assert!(!window.settled());
    }

    #[test]
    fn received_frames_must_follow_each_other() {
        let mut credit = ReceiveCredit::default();
        assert_eq!(credit.receive(0, 10), Ok(()));
        assert_eq!(
            credit.receive(20, 10),
            Err(CreditError::Offset {
                expected: 10,
                got: 20
            })
        );
        let mut credit = ReceiveCredit::default();
        assert_eq!(
            credit.receive(0, FRAME + 1),
            Err(CreditError::TooLarge(FRAME + 1))
        );
    }

    #[test]
    fn an_agent_may_fill_its_byte_window_plus_one_frame_and_no_more() {
        let mut credit = ReceiveCredit::default();
        let mut offset = 0;
        for _ in 0..=(STREAM_WINDOW / FRAME as u64) {
            assert_eq!(credit.receive(offset, FRAME), Ok(()));
            offset += FRAME as u64;
        }
        assert_eq!(
            credit.receive(offset, 1),
            Err(CreditError::Exceeded {
                bytes: STREAM_WINDOW + FRAME as u64 + 1,
                frames: 18
            })
        );
        // With an ack, the same frame is within credit.
        let mut credit = ReceiveCredit::default();
        let mut offset = 0;
        for _ in 0..=(STREAM_WINDOW / FRAME as u64) {
            credit.receive(offset, FRAME).unwrap();
            offset += FRAME as u64;
        }
        assert_eq!(credit.ack(FRAME as u64), FRAME as u64);
        assert_eq!(credit.receive(offset, 1), Ok(()));
    }

    #[test]
    fn an_agent_may_not_send_more_frames_than_the_frame_window() {
        let mut credit = ReceiveCredit::default();
        for offset in 0..STREAM_WINDOW_FRAMES {
            assert_eq!(credit.receive(offset, 1), Ok(()));
        }
        assert_eq!(
            credit.receive(STREAM_WINDOW_FRAMES, 1),
            Err(CreditError::Exceeded {
                bytes: STREAM_WINDOW_FRAMES + 1,
                frames: 257
            })
        );
        let mut credit = ReceiveCredit::default();
        for offset in 0..STREAM_WINDOW_FRAMES {
            credit.receive(offset, 1).unwrap();
        }
        credit.ack(1);
        assert_eq!(credit.receive(STREAM_WINDOW_FRAMES, 1), Ok(()));
    }

    #[test]
    fn an_agent_is_starved_within_a_frame_of_either_window() {
        let mut credit = ReceiveCredit::default();
        credit
            .receive(0, STREAM_WINDOW as usize - FRAME)
            .unwrap_err();
        let mut credit = ReceiveCredit::default();
        let frames = STREAM_WINDOW / FRAME as u64;
        for i in 0..frames - 1 {
            credit.receive(i * FRAME as u64, FRAME).unwrap();
            assert!(!credit.starved());
        }
        credit.receive((frames - 1) * FRAME as u64, 1).unwrap();
        assert!(credit.starved(), "no room for a whole frame");
        credit.ack(1);
        assert!(!credit.starved());
        let mut credit = ReceiveCredit::default();
        for offset in 0..STREAM_WINDOW_FRAMES - 1 {
            credit.receive(offset, 1).unwrap();
        }
        assert!(credit.starved(), "one frame left");
    }

    #[test]
    fn grants_are_clamped_to_what_arrived_and_never_go_back() {
        let mut credit = ReceiveCredit::default();
        credit.receive(0, 100).unwrap();
        assert_eq!(credit.ack(1_000), 100);
        assert_eq!(credit.ack(10), 100);
    }
}
