//! The client's session stream decoder (`rmm_client::stream_fuzzing`, what
//! `SessionStream::next_frame` does with a frame): it agrees with the protocol's decoders.
use bytes::Bytes;
use rmm_client::{OutputKind, stream_fuzzing};
use rmm_protocol::{AgentMessage, DecodeError, OutputChannel};

/// One input of the target.
pub fn run(data: &[u8]) {
    if let Some(text) = crate::text(data) {
        let direct = AgentMessage::decode(text);
        match stream_fuzzing::text(text) {
            Ok(Some(message)) => assert_eq!(direct.ok(), Some(message)),
            // Skipped: only a type this client does not know.
            Ok(None) => assert!(matches!(direct, Err(DecodeError::UnknownType(_)))),
            Err(_) => assert!(matches!(
                direct,
                Err(DecodeError::NotJson(_) | DecodeError::Malformed { .. })
            )),
        }
    }
    let frame = crate::data_frame(data);
    match stream_fuzzing::binary(Bytes::copy_from_slice(data)) {
        Ok(Some(output)) => {
            let Some(frame) = frame else {
                panic!("the client took a frame the protocol refuses");
            };
            let suffix = match output.kind {
                OutputKind::Stdout => "/stdout",
                OutputKind::Stderr => "/stderr",
            };
            assert_eq!(frame.channel_id, format!("{}{suffix}", output.channel_id));
            assert_eq!((output.offset, &output.data), (frame.offset, &frame.data));
        }
        Ok(None) => assert!(
            frame.is_some_and(|f| OutputChannel::parse(&f.channel_id).is_none()),
            "the client skipped an output frame"
        ),
        Err(_) => assert!(frame.is_none(), "the client refused a well-formed frame"),
    }
}
