//! A point in time, as plain data. The domain never reads a clock: callers pass `now` in.

use std::time::Duration;

/// Microseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    #[must_use]
    pub const fn from_unix_micros(micros: i64) -> Self {
        Self(micros)
    }

    #[must_use]
    pub const fn as_unix_micros(self) -> i64 {
        self.0
    }

    /// `self + by`, saturating at the end of representable time.
    #[must_use]
    pub fn plus(self, by: Duration) -> Self {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(micros))
    }

    /// `self - by`, saturating at the start of representable time.
    #[must_use]
    pub fn minus(self, by: Duration) -> Self {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(micros))
    }

    /// How long after `earlier` this is; zero when `earlier` is later.
    #[must_use]
    pub fn since(self, earlier: Self) -> Duration {
        u64::try_from(self.0.saturating_sub(earlier.0))
            .map_or(Duration::ZERO, Duration::from_micros)
    }
}

/// RFC 3339 in UTC with second precision, e.g. `2024-02-29T13:05:09Z`: for messages to people.
impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.div_euclid(1_000_000);
        let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60
        )
    }
}

/// The proleptic Gregorian date of a count of days since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_overflowing() {
        let t = Timestamp::from_unix_micros(i64::MAX - 1);
        assert_eq!(t.plus(Duration::from_secs(1)).as_unix_micros(), i64::MAX);
        let t = Timestamp::from_unix_micros(10);
        assert_eq!(t.since(Timestamp::from_unix_micros(30)), Duration::ZERO);
        assert_eq!(
            t.since(Timestamp::from_unix_micros(4)),
            Duration::from_micros(6)
        );
        assert_eq!(t.minus(Duration::from_micros(3)).as_unix_micros(), 7);
    }

    #[test]
    fn displays_as_rfc3339_utc() {
        assert_eq!(
            Timestamp::from_unix_micros(0).to_string(),
            "1970-01-01T00:00:00Z"
        );
        // 2024-02-29T13:05:09.5Z: a leap day, fractions dropped.
        let t = Timestamp::from_unix_micros(1_709_211_909_500_000);
        assert_eq!(t.to_string(), "2024-02-29T13:05:09Z");
        assert_eq!(
            Timestamp::from_unix_micros(-1).to_string(),
            "1969-12-31T23:59:59Z"
        );
    }
}
