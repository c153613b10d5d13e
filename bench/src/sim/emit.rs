//! Known output at a steady rate, for the watcher storm: a simulated agent given the command
//! `rmm-sim-emit BYTES RATE TAG` answers it with `BYTES` bytes of stdout in reference
//! `terminal_output` chunks, `RATE` bytes a second (0: as fast as the server reads), then the
//! final frame with exit code 0.
//!
//! The bytes are lines of 16 that name their own position: `TAG` as 4 hex digits, the line's
//! index as 11, then `\n`. Printable ASCII (no JSON escaping), and any byte lost, repeated or
//! moved is seen by a watcher comparing what it got with [`expected`] at that offset.

use std::time::Duration;

use rmm_protocol::{AgentMessage, ServerMessage, TerminalOutput, TunnelDataPayload, encode};
use tokio::time::Instant;

/// The command's first word.
pub const EMIT_COMMAND: &str = "rmm-sim-emit";

/// Bytes per `terminal_output` chunk (the real agent's JSON chunks are at most 32 KiB).
const CHUNK: u64 = 16 * 1024;

const LINE: u64 = 16;

/// The command line that asks a simulated agent for `bytes` at `rate` bytes a second.
#[must_use]
pub fn command(bytes: u64, rate: u64, tag: u16) -> String {
    format!("{EMIT_COMMAND} {bytes} {rate} {tag}")
}

/// The `len` bytes of the output tagged `tag` from `offset` on.
#[must_use]
pub fn expected(tag: u16, offset: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + LINE as usize);
    let mut line = offset / LINE;
    let skip = usize::try_from(offset % LINE).unwrap_or(0);
    while out.len() < len + skip {
        out.extend_from_slice(format!("{tag:04x}{line:011x}\n").as_bytes());
        line += 1;
    }
    out.drain(..skip);
    out.truncate(len);
    out
}

/// One command being answered with output.
#[derive(Debug)]
pub struct Emission {
    channel: String,
    tag: u16,
    total: u64,
    sent: u64,
    /// Bytes a second; 0: no pacing.
    rate: u64,
    started: Instant,
}

impl Emission {
    /// The emission a server frame asks for: a `terminal` command that is an [`EMIT_COMMAND`].
    #[must_use]
    pub fn asked(frame: &str) -> Option<Self> {
        match ServerMessage::decode(frame) {
            Ok(ServerMessage::TunnelData {
                channel_id,
                data: TunnelDataPayload::Terminal { command, .. },
            }) => Self::parse(&channel_id, &command),
            _ => None,
        }
    }

    /// The emission a `terminal` command asks for, when it is an [`EMIT_COMMAND`].
    #[must_use]
    pub fn parse(channel: &str, command: &str) -> Option<Self> {
        let mut words = command.split_whitespace();
        if words.next()? != EMIT_COMMAND {
            return None;
        }
        let total = words.next()?.parse().ok()?;
        let rate = words.next()?.parse().ok()?;
        let tag = words.next()?.parse().ok()?;
        Some(Self {
            channel: channel.to_owned(),
            tag,
            total,
            sent: 0,
            rate,
            started: Instant::now(),
        })
    }

    /// When the next frame is due.
    #[must_use]
    pub fn due(&self) -> Instant {
        if self.rate == 0 {
            return self.started;
        }
        self.started + Duration::from_secs_f64(self.sent as f64 / self.rate as f64)
    }

    /// The next frame: a chunk of output, or the final frame (then `true`: the emission is
    /// over).
    pub fn next_frame(&mut self) -> (String, bool) {
        let len = CHUNK.min(self.total - self.sent);
        let output = if len == 0 {
            TerminalOutput {
                exit_code: Some(0),
                ..TerminalOutput::default()
            }
        } else {
            let bytes = expected(self.tag, self.sent, usize::try_from(len).unwrap_or(0));
            self.sent += len;
            TerminalOutput::chunk(&bytes, b"")
        };
        let frame = encode(&AgentMessage::TunnelData {
            channel_id: self.channel.clone(),
            data: TunnelDataPayload::TerminalOutput(output),
        });
        (frame, len == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_names_its_own_positions() {
        assert_eq!(expected(7, 0, 16), b"000700000000000\n");
        assert_eq!(expected(7, 16, 16), b"000700000000001\n");
        let all = expected(0xab, 0, 1000);
        assert_eq!(expected(0xab, 37, 100), all[37..137]);
        assert!(all.iter().all(|b| b.is_ascii_graphic() || *b == b'\n'));
    }

    #[test]
    fn an_emission_sends_its_bytes_in_chunks_then_ends() {
        let mut e = Emission::parse("c-1", &command(40_000, 0, 3)).unwrap();
        let mut got = Vec::new();
        loop {
            let (frame, last) = e.next_frame();
            let Ok(AgentMessage::TunnelData {
                data: TunnelDataPayload::TerminalOutput(out),
                ..
            }) = AgentMessage::decode(&frame)
            else {
                panic!("not output: {frame}");
            };
            if last {
                assert_eq!(out.exit_code, Some(0));
                break;
            }
            assert_eq!(out.exit_code, None);
            got.extend_from_slice(out.stdout.as_bytes());
        }
        assert_eq!(got, expected(3, 0, 40_000));
        assert!(Emission::parse("c", "true").is_none());
        assert!(Emission::parse("c", "rmm-sim-emit 1 x 2").is_none());
    }
}
