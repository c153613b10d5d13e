//! The agent's decoding of the server's frames (`ServerMessage::decode` for text,
//! `DataFrame::decode` for binary).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rmm_fuzz::targets::server_frame::run(data));
