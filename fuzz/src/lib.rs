//! What the frame fuzz targets share: the properties every decoded frame must keep, and the
//! record format of the multi-frame targets. Every check panics (a libFuzzer crash) when a
//! property breaks; a decoder refusing a frame is fine.

pub mod targets;

use bytes::Bytes;
use rmm_protocol::{AgentMessage, DataFrame, DecodeError, OutputChannel, ServerMessage, encode};

/// Every message type an agent sends (`AgentMessage`'s variants, by wire name).
pub const AGENT_TYPES: &[&str] = &[
    "tunnel_ready",
    "tunnel_data",
    "tunnel_error",
    "heartbeat",
    "file_info",
    "file_done",
    "file_error",
    "pty_ready",
    "pty_exit",
    "channel_ack",
    "file_listing",
    "file_partial",
    "file_ack",
];

/// Every message type the server sends (`ServerMessage`'s variants, by wire name).
pub const SERVER_TYPES: &[&str] = &[
    "tunnel_open",
    "tunnel_close",
    "tunnel_data",
    "command_cancel",
    "file_upload",
    "file_upload_end",
    "file_download",
    "file_list",
    "file_upload_status",
    "file_ack",
    "file_cancel",
    "pty_open",
    "pty_resize",
    "pty_close",
    "channel_ack",
    "stdin_end",
];

/// A decode error must not call a known type unknown: the receivers log an unknown type as a
/// newer peer's extension (quietly), a malformed one as a broken peer.
fn check_error(error: &DecodeError, known: &[&str]) {
    if let DecodeError::UnknownType(kind) = error {
        assert!(
            !known.contains(&kind.as_str()),
            "a malformed {kind:?} frame was reported as an unknown type"
        );
        assert!(
            kind.chars().count() <= 64,
            "the unknown type is not clipped"
        );
    }
}

/// An agent's text frame, as the gateway decodes it: a decoded message re-encodes to a frame
/// that decodes to the same message.
pub fn agent_text(text: &str) -> Option<AgentMessage> {
    match AgentMessage::decode(text) {
        Ok(message) => {
            let again = AgentMessage::decode(&encode(&message));
            assert_eq!(
                again.ok().as_ref(),
                Some(&message),
                "{text:?} does not round-trip"
            );
            agent_message_next(&message);
            Some(message)
        }
        Err(error) => {
            check_error(&error, AGENT_TYPES);
            None
        }
    }
}

/// What the gateway does next with a message's fields that are parsed again.
fn agent_message_next(message: &AgentMessage) {
    match message {
        AgentMessage::TunnelReady { session_id } => {
            let _ = rmm_domain::SessionId::parse(session_id);
        }
        AgentMessage::TunnelData {
            channel_id,
            data: rmm_protocol::TunnelDataPayload::TerminalOutput(output),
        } => {
            let _ = rmm_domain::ChannelId::parse(channel_id);
            if let Ok((stdout, stderr)) = output.bytes() {
                if output.stdout_b64.is_none() {
                    assert_eq!(stdout, output.stdout.as_bytes());
                }
                if output.stderr_b64.is_none() {
                    assert_eq!(stderr, output.stderr.as_bytes());
                }
                // The agent's encoding of these bytes gives them back exactly.
                let chunk = rmm_protocol::TerminalOutput::chunk(&stdout, &stderr);
                assert_eq!(chunk.bytes().ok(), Some((stdout, stderr)));
            }
        }
        _ => {}
    }
}

/// The server's text frame, as the agent decodes it (same properties).
pub fn server_text(text: &str) -> Option<ServerMessage> {
    match ServerMessage::decode(text) {
        Ok(message) => {
            let again = ServerMessage::decode(&encode(&message));
            assert_eq!(
                again.ok().as_ref(),
                Some(&message),
                "{text:?} does not round-trip"
            );
            Some(message)
        }
        Err(error) => {
            check_error(&error, SERVER_TYPES);
            None
        }
    }
}

/// A binary frame, either way: accepted exactly when its header fits and its channel id is
/// UTF-8; the data is what follows the header; re-encoding gives the same bytes.
pub fn data_frame(bytes: &[u8]) -> Option<DataFrame> {
    let decoded = DataFrame::decode(Bytes::copy_from_slice(bytes));
    let header = bytes.first().map(|len| 1 + usize::from(*len) + 8);
    let fits = header.is_some_and(|header| bytes.len() >= header);
    let Ok(frame) = decoded else {
        let utf8 = header
            .is_some_and(|h| h <= bytes.len() && std::str::from_utf8(&bytes[1..h - 8]).is_ok());
        assert!(!fits || !utf8, "a well-formed frame was refused: {bytes:?}");
        return None;
    };
    let header = header.unwrap_or(usize::MAX);
    assert!(fits, "a frame shorter than its header was accepted");
    assert_eq!(frame.channel_id.len() + 9, header);
    assert_eq!(&frame.data[..], &bytes[header..]);
    assert_eq!(
        frame.encode(),
        bytes,
        "the frame does not re-encode to its bytes"
    );
    if let Some(output) = OutputChannel::parse(&frame.channel_id) {
        assert!(!output.channel.is_empty() && !output.channel.contains('/'));
        assert_eq!(output.id(), frame.channel_id);
    }
    Some(frame)
}

/// The records of a multi-frame input: a kind byte, a big-endian u16 length, that many bytes
/// (fewer at the end of the input).
pub fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&kind, rest) = data.split_first()?;
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
            _ => (rest.len(), &[][..]),
        };
        let (record, rest) = rest.split_at(len.min(rest.len()));
        data = rest;
        Some((kind, record))
    })
}

/// A record as UTF-8 text, when it is.
#[must_use]
pub fn text(record: &[u8]) -> Option<&str> {
    std::str::from_utf8(record).ok()
}
