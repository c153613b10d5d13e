//! A terminal's frames in sequence, as records (see `rmm_fuzz::records`): the agent's PTY
//! output frames into the gateway's credit bookkeeping (`ReceiveCredit`), the technician's
//! input through the gateway's `SendWindow`, the `pty_*` and `channel_ack` messages both ways.
//! Properties: the bookkeeping accepts exactly the frames the rules allow (docs/protocol.md:
//! in order, at most a frame's data, at most the window beyond the last ack), acks never go
//! backwards nor beyond what was sent, and no offset overflows.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rmm_fuzz::targets::terminal_frame::run(data));
