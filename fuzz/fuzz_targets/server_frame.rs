//! The agent's decoding of the server's frames (`ServerMessage::decode` for text,
//! `DataFrame::decode` for binary).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(text) = rmm_fuzz::text(data) {
        rmm_fuzz::server_text(text);
    }
    rmm_fuzz::data_frame(data);
});
