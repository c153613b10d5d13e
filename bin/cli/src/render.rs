//! Output for people and for scripts: aligned tables, JSON, times ("12s ago", RFC 3339), and
//! the parsing of `--since` / `--until`. Knows nothing of the API.

use std::io::Write as _;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Serialize;

use super::CliError;

/// A table with a header row; columns are padded to their widest cell.
#[derive(Debug)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    #[must_use]
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, no trailing spaces.
    #[must_use]
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let width = widths.get(c).copied().unwrap_or(0);
                line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table on stdout.
    ///
    /// # Errors
    /// [`CliError::Local`] when stdout cannot be written.
    pub fn print(&self) -> Result<(), CliError> {
        print_stdout(&self.render())
    }
}

/// Prints `value` as pretty JSON on stdout.
///
/// # Errors
/// [`CliError::Local`] when stdout cannot be written.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Local(format!("cannot encode JSON: {e}")))?;
    print_stdout(&format!("{text}\n"))
}

/// Writes `text` to stdout.
///
/// # Errors
/// [`CliError::Local`] when stdout cannot be written (closed pipe, full disk).
pub fn print_stdout(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::Local(format!("cannot write to stdout: {e}")))
}

/// A time for a table: RFC 3339 to the second, UTC.
#[must_use]
pub fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// How long ago `at` was, coarsely: `12s ago`, `5m ago`, `3h ago`, `2d ago`.
#[must_use]
pub fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - at).num_seconds();
    match secs {
        i64::MIN..0 => "just now".to_owned(),
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// A `--since` / `--until` value: an RFC 3339 time (`2026-11-05T10:00:00Z`), or a duration
/// ago (`90s`, `15m`, `2h`, `7d`).
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_time(value: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Ok(at.with_timezone(&Utc));
    }
    let bad = || {
        format!(
            "{value:?} is not a time: use RFC 3339 (2026-11-05T10:00:00Z) or a duration ago (90s, 15m, 2h, 7d)"
        )
    };
    let unit_at = value.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = value.split_at(unit_at);
    let number: i64 = number.parse().map_err(|_| bad())?;
    let delta = match unit {
        "s" => TimeDelta::try_seconds(number),
        "m" => TimeDelta::try_minutes(number),
        "h" => TimeDelta::try_hours(number),
        "d" => TimeDelta::try_days(number),
        _ => None,
    }
    .ok_or_else(bad)?;
    now.checked_sub_signed(delta).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let mut table = Table::new(&["NAME", "ID"]);
        table.row(vec!["web-01".into(), "1".into()]);
        table.row(vec!["a".into(), String::new()]);
        assert_eq!(table.render(), "NAME    ID\nweb-01  1\na\n");
    }

    #[test]
    fn times_parse_as_rfc3339_or_as_a_duration_ago() {
        let now = DateTime::parse_from_rfc3339("2026-11-05T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(time(parse_time("2h", now).unwrap()), "2026-11-05T08:00:00Z");
        assert_eq!(time(parse_time("7d", now).unwrap()), "2026-10-29T10:00:00Z");
        assert_eq!(
            time(parse_time("2026-11-05T11:00:00+01:00", now).unwrap()),
            "2026-11-05T10:00:00Z"
        );
        for bad in ["", "h", "5y", "yesterday", "-5m"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
        assert_eq!(ago(now - TimeDelta::seconds(125), now), "2m ago");
        assert_eq!(ago(now + TimeDelta::seconds(5), now), "just now");
    }
}
