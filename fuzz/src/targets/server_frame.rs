//! The agent's decoding of the server's frames (`ServerMessage::decode` for text,
//! `DataFrame::decode` for binary).
/// One input of the target.
pub fn run(data: &[u8]) {
    if let Some(text) = crate::text(data) {
        crate::server_text(text);
    }
    crate::data_frame(data);
}
