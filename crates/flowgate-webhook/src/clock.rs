//! Unix seconds and RFC 3339 text for `SystemTime`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Whole seconds since the Unix epoch (negative before it), floored.
pub(crate) fn unix_secs(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let before = before.duration();
            let secs = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            if before.subsec_nanos() > 0 {
                secs.saturating_neg().saturating_sub(1)
            } else {
                secs.saturating_neg()
            }
        }
    }
}

/// The instant `secs` seconds after the Unix epoch, when representable.
pub(crate) fn from_unix_secs(secs: i64) -> Option<SystemTime> {
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }
}

/// True when `at` (unix seconds) is more than `tolerance` away from `now`.
pub(crate) fn outside_tolerance(at: i64, now: SystemTime, tolerance: Duration) -> bool {
    unix_secs(now).abs_diff(at) > tolerance.as_secs()
}

/// Parses a non-empty run of ASCII digits (at most 18) into seconds.
pub(crate) fn parse_unix_digits(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// RFC 3339 in UTC with millisecond precision (`2024-05-01T12:00:00.123Z`).
/// Instants `time` cannot represent (beyond year 9999) format as the epoch.
pub(crate) fn format_rfc3339(at: SystemTime) -> String {
    let utc = OffsetDateTime::from(at);
    let millis = utc.millisecond();
    utc.replace_millisecond(millis)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// Parses RFC 3339 text (any offset) into an instant.
pub(crate) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_round_trip() {
        for secs in [0, 1, 1_700_000_000, -1, -86_400] {
            let at = from_unix_secs(secs).unwrap();
            assert_eq!(unix_secs(at), secs);
        }
        let before = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(unix_secs(before), -2);
    }

    #[test]
    fn rfc3339_round_trip_at_millisecond_precision() {
        let at = UNIX_EPOCH + Duration::from_millis(1_714_564_800_123);
        let text = format_rfc3339(at);
        assert_eq!(text, "2024-05-01T12:00:00.123Z");
        assert_eq!(parse_rfc3339(&text), Some(at));
        assert_eq!(
            parse_rfc3339("2024-05-01T14:00:00+02:00"),
            Some(UNIX_EPOCH + Duration::from_secs(1_714_564_800))
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn digits_only() {
        assert_eq!(parse_unix_digits("1700000000"), Some(1_700_000_000));
        for bad in ["", "+1", "-1", "1.5", " 1", "1e9", "9999999999999999999"] {
            assert_eq!(parse_unix_digits(bad), None, "{bad}");
        }
    }
}
