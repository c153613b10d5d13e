//! The targets' bodies, one module each: run by the libFuzzer binaries in `fuzz_targets/`
//! (nightly, coverage-guided) and by `tests/corpus.rs` over the seed corpus (any toolchain).

pub mod agent_frame;
pub mod client_stream;
pub mod file_frame;
pub mod server_frame;
pub mod terminal_frame;
