//! The server's decoding of an agent's frames (`AgentMessage::decode` for text; for binary
//! frames `DataFrame::decode` and the output channel parse), and the parses that follow.
/// One input of the target.
pub fn run(data: &[u8]) {
    if let Some(text) = crate::text(data) {
        crate::agent_text(text);
    }
    crate::data_frame(data);
}
