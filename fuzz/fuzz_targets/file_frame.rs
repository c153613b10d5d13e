//! File transfers' frames in sequence, as records (see `rmm_fuzz::records`): binary data
//! frames both ways (uploads' and downloads' data), the server's `file_*` messages as the
//! agent decodes them and the path check it applies first, the agent's `file_*` messages as
//! the gateway decodes them. Properties: as for every frame (round trips, the exact binary
//! layout, no known type called unknown), and a path the check accepts keeps the limits it
//! claims.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rmm_fuzz::targets::file_frame::run(data));
