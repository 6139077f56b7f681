//! Quota periods on a millisecond clock (Unix epoch, UTC): fixed request
//! windows, UTC days and UTC calendar months. The Redis store's Lua does
//! the same arithmetic (`caller_quota_periods.lua`) on Redis's clock.

const DAY_MS: u64 = 24 * 3600 * 1000;

/// A period: its index (equal for every instant inside it) and when it
/// ends (ms since the epoch, exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    /// Identifies the period.
    pub index: u64,
    /// Its end, ms since the epoch.
    pub end_ms: u64,
}

impl Period {
    /// Milliseconds from `now_ms` to the end.
    pub fn left_ms(&self, now_ms: u64) -> u64 {
        self.end_ms.saturating_sub(now_ms)
    }
}

/// The fixed window of `window_ms` (at least 1) holding `now_ms`.
pub fn window(now_ms: u64, window_ms: u64) -> Period {
    let window_ms = window_ms.max(1);
    let index = now_ms / window_ms;
    Period {
        index,
        end_ms: index.saturating_add(1).saturating_mul(window_ms),
    }
}

/// The UTC day holding `now_ms`.
pub fn day(now_ms: u64) -> Period {
    window(now_ms, DAY_MS)
}

/// The UTC calendar month holding `now_ms`: index `year * 12 + month - 1`.
pub fn month(now_ms: u64) -> Period {
    let (year, month) = year_month(now_ms / DAY_MS);
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    Period {
        index: year * 12 + month - 1,
        end_ms: days_from_civil(next_year, next_month).saturating_mul(DAY_MS),
    }
}

/// The (year, month) of a day since the epoch (Howard Hinnant's
/// `civil_from_days`, for days on or after 1970-01-01).
fn year_month(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month)
}

/// Days since the epoch of the first of `month` in `year` (year ≥ 1970).
fn days_from_civil(year: u64, month: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let yoe = year - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ms of a UTC date (tests only; via the same routine).
    fn date(year: u64, month: u64, day: u64) -> u64 {
        (days_from_civil(year, month) + day - 1) * DAY_MS
    }

    #[test]
    fn days_and_months_in_utc() {
        assert_eq!(date(1970, 1, 1), 0);
        // 2024-03-01T00:00:00Z = 1709251200.
        assert_eq!(date(2024, 3, 1), 1_709_251_200_000);
        // 2026-12-01T00:00:00Z = 1796083200.
        assert_eq!(date(2026, 12, 1), 1_796_083_200_000);
        let now = date(2024, 2, 29) + 3_600_000;
        assert_eq!(day(now).end_ms, date(2024, 3, 1));
        assert_eq!(month(now).end_ms, date(2024, 3, 1));
        assert_eq!(month(now).index, 2024 * 12 + 1);
        let december = date(2026, 12, 31) + 1;
        assert_eq!(month(december).end_ms, date(2027, 1, 1));
        assert_eq!(month(december).index, 2026 * 12 + 11);
        assert_eq!(month(date(2027, 1, 1)).index, 2027 * 12);
        assert_eq!(month(date(2027, 1, 1) - 1).index, 2026 * 12 + 11);
        assert_eq!(day(date(2027, 1, 1) - 1).left_ms(date(2027, 1, 1) - 1), 1);
    }

    #[test]
    fn every_month_ends_where_the_next_begins() {
        for year in [1970, 1999, 2000, 2024, 2100] {
            for m in 1..=12 {
                let start = date(year, m, 1);
                assert_eq!(month(start).index, year * 12 + m - 1);
                assert_eq!(month(month(start).end_ms - 1).index, year * 12 + m - 1);
                assert_eq!(month(month(start).end_ms).index, year * 12 + m);
            }
        }
    }

    #[test]
    fn windows_are_aligned_to_the_epoch() {
        assert_eq!(
            window(61_000, 60_000),
            Period {
                index: 1,
                end_ms: 120_000
            }
        );
        assert_eq!(window(5, 0).end_ms, 6);
    }
}
