//! The casts [`CastWriter`] writes are read by the real player: `asciinema cat` (Debian's
//! `asciinema` package) prints a cast's output, and must print exactly the bytes that went in
//! (or, where they were not UTF-8, their lossy decoding).
//!
//! `asciinema cat` reads `/dev/tty`, so it runs under `script` (util-linux), which gives it
//! one; its stdout goes to a file, unchanged by the terminal. Skipped, saying so, when either
//! program is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rmm_domain::{CastWriter, TRUNCATED_MARKER};

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A folder of this test's own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rmm-cast-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The cast of `chunks` (one output event each, 10 ms apart) with a resize and a marker in
/// between, as the server writes it.
fn cast(chunks: &[&[u8]]) -> String {
    let mut w = CastWriter::new();
    let mut cast = CastWriter::header(80, 24, 1_700_000_000, "xterm-256color");
    let mut t = Duration::ZERO;
    for (i, chunk) in chunks.iter().enumerate() {
        t += Duration::from_millis(10);
        if let Some(line) = w.output(t, chunk) {
            cast.push_str(&line);
        }
        if i == 1 {
            cast.push_str(&CastWriter::resize(t, 100, 30));
        }
    }
    if let Some(line) = w.finish(t) {
        cast.push_str(&line);
    }
    cast.push_str(&CastWriter::marker(t, TRUNCATED_MARKER));
    cast
}

/// What `asciinema cat` prints for `cast`, or `None` when it cannot be run here.
fn asciinema_cat(dir: &Path, cast: &str) -> Option<Vec<u8>> {
    if !installed("asciinema") || !installed("script") {
        // CI installs both (scripts/test.sh): there, a missing player is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "asciinema and script must be installed in CI (scripts/test.sh installs them)"
        );
        eprintln!(
            "SKIPPED: `asciinema` or `script` is not installed (apt-get install asciinema); \
             the cast format is not checked against the player"
        );
        return None;
    }
    let file = dir.join("t.cast");
    let out = dir.join("out.bin");
    std::fs::write(&file, cast).unwrap();
    let inner = format!("asciinema cat '{}' > '{}'", file.display(), out.display());
    let status = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .env("HOME", dir)
        .env("LC_ALL", "C.UTF-8")
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "asciinema cat failed ({status}) on:\n{cast}"
    );
    Some(std::fs::read(out).unwrap())
}

#[test]
fn asciinema_prints_exactly_the_recorded_bytes() {
    let scratch = Scratch::new("exact");
    // Characters split across chunks, escapes, quotes, backslashes, NUL, CR LF, DEL.
    let chunks: [&[u8]; 6] = [
        b"$ echo \"hi\" \\ \x1b[1mbold\x1b[0m\r\n\xc3",
        b"\xa9t\xc3\xa9 \xe2\x82",
        b"\xac \xf0\x9f",
        b"\x98\x80\0\x07\x7f\t|",
        b"",
        b"end\r\n",
    ];
    let Some(printed) = asciinema_cat(&scratch.0, &cast(&chunks)) else {
        return;
    };
    assert_eq!(
        String::from_utf8_lossy(&printed),
        String::from_utf8_lossy(&chunks.concat())
    );
    assert_eq!(printed, chunks.concat());
}

#[test]
fn asciinema_prints_invalid_bytes_as_replacement_characters() {
    let scratch = Scratch::new("lossy");
    let chunks: [&[u8]; 4] = [b"a\xffb", b"\xe2\x82", b"z\xc3", b"\xa9\xf0\x9f"];
    let Some(printed) = asciinema_cat(&scratch.0, &cast(&chunks)) else {
        return;
    };
    assert_eq!(
        String::from_utf8(printed).unwrap(),
        "a\u{fffd}b\u{fffd}z\u{e9}\u{fffd}"
    );
}
