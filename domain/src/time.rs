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
}
