//! The asciicast v2 format a terminal recording is written in: a header line, then one JSON
//! array per event (`[seconds, "o", "output"]`, `[seconds, "r", "COLSxROWS"]`,
//! `[seconds, "m", "label"]`), each line ending in `\n`.
//!
//! Output arrives as bytes cut anywhere, also inside a UTF-8 character; [`CastWriter`] keeps
//! an incomplete trailing sequence (at most 3 bytes) for the next chunk, so a character split
//! across chunks comes out whole, and turns bytes that can never be UTF-8 into U+FFFD, as
//! players expect text. The JSON is written by hand (this crate has no serializer).

use std::fmt::Write as _;
use std::time::Duration;

/// The label of the marker event that ends a recording cut at its size cap.
pub const TRUNCATED_MARKER: &str = "recording truncated: size cap reached";

/// The longest incomplete UTF-8 sequence: a 4-byte character less its last byte.
const MAX_CARRY: usize = 3;

/// Encodes one terminal's recording as asciicast v2 lines. Holds only the bytes of an output
/// character not yet complete; times are the caller's (elapsed since the recording began).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CastWriter {
    /// The start of a UTF-8 sequence that the last chunk ended inside (0 to 3 bytes).
    carry: Vec<u8>,
}

impl CastWriter {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The header line: `{"version":2,"width":..,"height":..,"timestamp":..,"env":{"TERM":..}}`
    /// and `\n`. `timestamp` is when the recording began, in unix seconds.
    #[must_use]
    pub fn header(cols: u16, rows: u16, timestamp: i64, term: &str) -> String {
        let mut line = format!(
            "{{\"version\":2,\"width\":{cols},\"height\":{rows},\"timestamp\":{timestamp},\
             \"env\":{{\"TERM\":"
        );
        push_json_string(&mut line, term);
        line.push_str("}}\n");
        line
    }

    /// The output event for `bytes` received `elapsed` after the start, or `None` when they
    /// only begin a character that the next chunk completes (nothing to write yet).
    #[must_use]
    pub fn output(&mut self, elapsed: Duration, bytes: &[u8]) -> Option<String> {
        let mut joined;
        let input = if self.carry.is_empty() {
            bytes
        } else {
            joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(bytes);
            joined.as_slice()
        };
        let (text, rest) = decode_lossy(input);
        self.carry = rest.to_vec();
        (!text.is_empty()).then(|| event(elapsed, "o", &text))
    }

    /// The output event for a character left incomplete by the last chunk (as U+FFFD: the
    /// stream ended inside it), or `None` when there is none. Call it when output ends.
    #[must_use]
    pub fn finish(&mut self, elapsed: Duration) -> Option<String> {
        if self.carry.is_empty() {
            return None;
        }
        self.carry.clear();
        Some(event(elapsed, "o", "\u{fffd}"))
    }

    /// Whether bytes of an incomplete character are held for the next chunk.
    #[must_use]
    pub fn has_carry(&self) -> bool {
        !self.carry.is_empty()
    }

    /// The resize event: `[t, "r", "COLSxROWS"]`.
    #[must_use]
    pub fn resize(elapsed: Duration, cols: u16, rows: u16) -> String {
        event(elapsed, "r", &format!("{cols}x{rows}"))
    }

    /// A marker event: `[t, "m", "label"]`.
    #[must_use]
    pub fn marker(elapsed: Duration, label: &str) -> String {
        event(elapsed, "m", label)
    }
}

/// `bytes` decoded as UTF-8 with each invalid sequence as U+FFFD (one per maximal invalid
/// subpart, as `String::from_utf8_lossy` does), and the incomplete sequence the bytes end
/// in, if any (at most [`MAX_CARRY`] bytes), left undecoded.
fn decode_lossy(mut bytes: &[u8]) -> (String, &[u8]) {
    let mut text = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(valid) => {
                text.push_str(valid);
                return (text, &[]);
            }
            Err(e) => {
                let (valid, after) = bytes.split_at(e.valid_up_to());
                // from_utf8 checked these bytes; lossy keeps this free of a panic path.
                text.push_str(&String::from_utf8_lossy(valid));
                match e.error_len() {
                    Some(bad) => {
                        text.push('\u{fffd}');
                        bytes = after.get(bad..).unwrap_or_default();
                    }
                    // The input ends inside a character: keep its start for the next chunk.
                    None if after.len() <= MAX_CARRY => return (text, after),
                    None => {
                        // Not reachable for UTF-8, but never hold more than a character.
                        text.push('\u{fffd}');
                        return (text, &[]);
                    }
                }
            }
        }
    }
}

/// One event line: `[seconds with 6 decimals, "code", "data"]` and `\n`.
fn event(elapsed: Duration, code: &str, data: &str) -> String {
    let mut line = String::with_capacity(data.len() + 24);
    let _ = write!(
        line,
        "[{}.{:06}, \"{code}\", ",
        elapsed.as_secs(),
        elapsed.subsec_micros()
    );
    push_json_string(&mut line, data);
    line.push_str("]\n");
    line
}

/// Appends `s` as a JSON string literal: `"` and `\` escaped, `\n` `\r` `\t` in their short
/// forms, other control characters (and DEL) as `\u00XX`, everything else as it is.
fn push_json_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests;
