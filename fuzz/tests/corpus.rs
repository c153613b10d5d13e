//! Every committed seed of every target through the target's body and its properties, on any
//! toolchain: what `scripts/fuzz.sh --smoke` runs when there is no nightly for libFuzzer.

use std::path::Path;

use rmm_fuzz::targets;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a corpus entry").path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        run(&data);
        seeds += 1;
    }
    assert!(seeds > 0, "no seeds in {}", dir.display());
    println!("{target}: {seeds} seeds");
}

#[test]
fn agent_frame() {
    replay("agent_frame", targets::agent_frame::run);
}

#[test]
fn server_frame() {
    replay("server_frame", targets::server_frame::run);
}

#[test]
fn client_stream() {
    replay("client_stream", targets::client_stream::run);
}

#[test]
fn file_frame() {
    replay("file_frame", targets::file_frame::run);
}

#[test]
fn terminal_frame() {
    replay("terminal_frame", targets::terminal_frame::run);
}
