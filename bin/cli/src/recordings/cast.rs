//! Reading an asciicast v2 file line by line, and the pauses of its replay.
//!
//! Line 1 is the header (`{"version":2,"width":..,"height":..,...}`), then one event a line:
//! `[seconds since the start, "o" | "r" | "m" | ..., "data"]`. Only `o` (output) is played;
//! `m` (a marker, e.g. the size cap) is told; others (`r` resize, `i` input) are skipped.
//!
//! The replay waits the time between two events divided by the speed, but never more than
//! [`IDLE_LIMIT`] at once (asciinema's idle time limit): a recording that sat idle for an
//! hour plays its next output after 2 s.

use std::time::Duration;

use serde::Deserialize;

/// The longest single pause of a replay, whatever the recording's.
pub const IDLE_LIMIT: Duration = Duration::from_secs(2);

/// The header line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Header {
    pub version: u32,
    pub width: u32,
    pub height: u32,
}

/// One event line.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the start.
    pub at: f64,
    pub kind: String,
    pub data: String,
}

/// Why a line is not what a cast holds, with its line number (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CastError {
    #[error("the recording does not start with an asciicast v2 header ({0})")]
    BadHeader(String),
    #[error("the recording is asciicast version {0}; only version 2 can be replayed")]
    Version(u32),
    #[error("line {line} of the recording is not an asciicast event: {reason}")]
    BadEvent { line: usize, reason: String },
}

/// Reads the header (line 1).
///
/// # Errors
/// [`CastError::BadHeader`], [`CastError::Version`].
pub fn header(line: &str) -> Result<Header, CastError> {
    let header: Header =
        serde_json::from_str(line).map_err(|e| CastError::BadHeader(e.to_string()))?;
    if header.version != 2 {
        return Err(CastError::Version(header.version));
    }
    Ok(header)
}

/// Reads event line `number`. An empty line is `None` (a trailing newline).
///
/// # Errors
/// [`CastError::BadEvent`] for anything but `[number, string, string]` with a time that is
/// finite and not negative.
pub fn event(line: &str, number: usize) -> Result<Option<Event>, CastError> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let bad = |reason: String| CastError::BadEvent {
        line: number,
        reason,
    };
    let (at, kind, data): (f64, String, String) =
        serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
    if !at.is_finite() || at < 0.0 {
        return Err(bad(format!("its time {at} is not a time since the start")));
    }
    Ok(Some(Event { at, kind, data }))
}

/// The pause before an event at `at` seconds, after one at `previous`, at `speed` times:
/// never negative, never over [`IDLE_LIMIT`].
#[must_use]
pub fn pause(previous: f64, at: f64, speed: f64) -> Duration {
    let secs = (at - previous) / speed;
    if !secs.is_finite() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs).map_or(IDLE_LIMIT, |pause| pause.min(IDLE_LIMIT))
}

/// Splits a byte stream into lines as chunks arrive.
#[derive(Debug, Default)]
pub struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// The complete lines in what has arrived so far (without their `\n`).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        self.partial.extend_from_slice(chunk);
        let mut lines = Vec::new();
        let mut start = 0;
        while let Some(rest) = self.partial.get(start..)
            && let Some(len) = rest.iter().position(|b| *b == b'\n')
        {
            lines.push(rest.get(..len).unwrap_or_default().to_vec());
            start += len + 1;
        }
        self.partial.drain(..start);
        lines
    }

    /// What is left at the end: a last line without its newline.
    pub fn finish(self) -> Option<Vec<u8>> {
        (!self.partial.is_empty()).then_some(self.partial)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn headers_and_events_parse_and_bad_lines_say_which() {
        let h =
            header(r#"{"version":2,"width":80,"height":24,"timestamp":1,"env":{"TERM":"xterm"}}"#)
                .unwrap();
        assert_eq!((h.width, h.height), (80, 24));
        assert_eq!(
            header(r#"{"version":1,"width":80,"height":24}"#),
            Err(CastError::Version(1))
        );
        assert!(matches!(
            header("[0.5, \"o\", \"x\"]"),
            Err(CastError::BadHeader(_))
        ));
        assert!(matches!(header(""), Err(CastError::BadHeader(_))));

        let e = event(r#"[1.25, "o", "hi\r\n"]"#, 2).unwrap().unwrap();
        assert_eq!(
            e,
            Event {
                at: 1.25,
                kind: "o".into(),
                data: "hi\r\n".into()
            }
        );
        assert_eq!(event("", 3).unwrap(), None);
        for (bad, line) in [
            (r#"[1.0, "o"]"#, 4),
            ("not json", 5),
            (r#"[-1, "o", "x"]"#, 6),
            (r#"["1", "o", "x"]"#, 7),
        ] {
            let e = event(bad, line).unwrap_err();
            assert!(
                matches!(e, CastError::BadEvent { line: l, .. } if l == line),
                "{bad}: {e}"
            );
            assert!(
                e.to_string()
                    .starts_with(&format!("line {line} of the recording")),
                "{e}"
            );
        }
    }

    #[test]
    fn pauses_follow_the_recording_divided_by_the_speed_capped_at_the_idle_limit() {
        assert_eq!(pause(1.0, 1.5, 1.0), Duration::from_millis(500));
        assert_eq!(pause(1.0, 2.0, 2.0), Duration::from_millis(500));
        assert_eq!(pause(0.0, 1.0, 0.5), IDLE_LIMIT);
        assert_eq!(pause(0.0, 3600.0, 1.0), IDLE_LIMIT);
        assert_eq!(pause(0.0, 3600.0, 10_000.0), Duration::from_millis(360));
        // Out of order or equal times: no pause.
        assert_eq!(pause(2.0, 1.0, 1.0), Duration::ZERO);
        assert_eq!(pause(1.0, 1.0, 1.0), Duration::ZERO);
    }

    #[test]
    fn lines_are_split_across_chunks() {
        let mut lines = Lines::default();
        assert_eq!(lines.push(b"{\"a\""), Vec::<Vec<u8>>::new());
        assert_eq!(lines.push(b":1}\n[0"), vec![b"{\"a\":1}".to_vec()]);
        assert_eq!(lines.push(b"]\n\n"), vec![b"[0]".to_vec(), Vec::new()]);
        assert_eq!(lines.push(b"tail"), Vec::<Vec<u8>>::new());
        assert_eq!(lines.finish(), Some(b"tail".to_vec()));
    }
}
