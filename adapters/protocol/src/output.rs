//! Extension `command-binary-output`: a command's stdout and stderr as binary data frames.
//!
//! The frame is the [`DataFrame`](crate::DataFrame) of files and terminals; its channel id is
//! the command's channel with `/stdout` or `/stderr` appended (channel ids never contain `/`,
//! so the two cannot be mistaken for another channel), and its offset is the position of its
//! first byte in that stream, so a gap or a duplicate shows. The same frames go from the agent
//! to the server and from the server to the watchers that ask for them (`?output=binary`).

/// Output bytes an agent reads and sends per frame, at most.
pub const OUTPUT_CHUNK: usize = 64 * 1024;

/// Which stream of a command a binary output frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    /// The suffix after the channel id, `/` included.
    #[must_use]
    pub const fn suffix(self) -> &'static str {
        match self {
            Self::Stdout => "/stdout",
            Self::Stderr => "/stderr",
        }
    }
}

/// The channel id of a binary output frame: the command's channel and the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputChannel<'a> {
    pub channel: &'a str,
    pub stream: OutputStream,
}

impl<'a> OutputChannel<'a> {
    /// Splits a binary frame's channel id; `None` when it is not a command output channel.
    #[must_use]
    pub fn parse(frame_channel: &'a str) -> Option<Self> {
        [OutputStream::Stdout, OutputStream::Stderr]
            .into_iter()
            .find_map(|stream| {
                let channel = frame_channel.strip_suffix(stream.suffix())?;
                (!channel.is_empty() && !channel.contains('/')).then_some(Self { channel, stream })
            })
    }

    /// The frame's channel id.
    #[must_use]
    pub fn id(self) -> String {
        format!("{}{}", self.channel, self.stream.suffix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DataFrame;

    #[test]
    fn output_channels_round_trip_and_other_channels_are_not_output() {
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            let id = OutputChannel {
                channel: "cmd-7",
                stream,
            }
            .id();
            let parsed = OutputChannel::parse(&id).unwrap();
            assert_eq!((parsed.channel, parsed.stream), ("cmd-7", stream));
        }
        assert_eq!(OutputChannel::parse("cmd-7"), None);
        assert_eq!(OutputChannel::parse("pty-1"), None);
        assert_eq!(OutputChannel::parse("/stdout"), None);
        assert_eq!(OutputChannel::parse("a/b/stdout"), None);
        assert_eq!(OutputChannel::parse("cmd/stdin"), None);
    }

    #[test]
    fn an_output_frame_carries_every_byte_value_and_its_offset_exactly() {
        let data: Vec<u8> = (0..=255u8).chain([0xe2, 0x82]).collect();
        let frame = DataFrame {
            channel_id: OutputChannel {
                channel: "c-1",
                stream: OutputStream::Stderr,
            }
            .id(),
            offset: (1 << 40) + 3,
            data: bytes::Bytes::from(data.clone()),
        };
        let encoded = frame.encode();
        assert_eq!(encoded[0] as usize, "c-1/stderr".len());
        assert_eq!(&encoded[1..11], b"c-1/stderr");
        assert_eq!(&encoded[11..19], &((1u64 << 40) + 3).to_be_bytes());
        let decoded = DataFrame::decode(bytes::Bytes::from(encoded)).unwrap();
        assert_eq!(decoded, frame);
        assert_eq!(&decoded.data[..], &data[..]);
        let channel = OutputChannel::parse(&decoded.channel_id).unwrap();
        assert_eq!(channel.stream, OutputStream::Stderr);
        // A truncated header is refused, not misread.
        assert!(DataFrame::decode(bytes::Bytes::from_static(&[10, b'c', b'-'])).is_err());
    }
}
