//! The server's decoding of an agent's frames (`AgentMessage::decode` for text; for binary
//! frames `DataFrame::decode` and the output channel parse), and the parses that follow.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rmm_fuzz::targets::agent_frame::run(data));
