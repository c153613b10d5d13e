//! The client's session stream decoder (`rmm_client::stream_fuzzing`, what
//! `SessionStream::next_frame` does with a frame): it agrees with the protocol's decoders.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rmm_fuzz::targets::client_stream::run(data));
