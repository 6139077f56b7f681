//! Rate-limit headers, every dialect's spelling, into one [`RateLimitInfo`].
//!
//! - `x-ratelimit-limit`, `x-ratelimit-remaining` (AI Tutor, Knouds; any case)
//! - `x-ratelimit-reset`: unix epoch seconds (Knouds). A value too small to be
//!   an epoch (under 10⁹) is read as seconds from now, the other common style.
//! - `retry-after`: delay seconds or an HTTP-date.
//!
//! Absent or unparsable headers stay `None`; nothing defaults to zero. Every
//! value is read by [`crate::numbers`]: waits and resets are clamped to
//! their ceilings (24 h), never trusted.

use std::time::SystemTime;

use flowgate_core::RateLimitInfo;
use http::HeaderMap;

use crate::numbers;

/// Parses the rate-limit headers of one response received at `now`.
pub fn parse(headers: &HeaderMap, now: SystemTime) -> RateLimitInfo {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    RateLimitInfo {
        limit: text("x-ratelimit-limit").and_then(numbers::header_count),
        remaining: text("x-ratelimit-remaining").and_then(numbers::header_count),
        reset_at: text("x-ratelimit-reset").and_then(|value| numbers::reset_at(value, now)),
        retry_after: text("retry-after").and_then(|value| numbers::retry_after(value, now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn knouds_headers() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let info = parse(
            &headers(&[
                ("X-RateLimit-Limit", "100"),
                ("X-RateLimit-Remaining", "0"),
                ("X-RateLimit-Reset", "1800000030"),
                ("Retry-After", "30"),
            ]),
            now,
        );
        assert_eq!(info.limit, Some(100));
        assert_eq!(info.remaining, Some(0));
        assert_eq!(info.reset_at, Some(now + Duration::from_secs(30)));
        assert_eq!(info.retry_after, Some(Duration::from_secs(30)));
    }

    #[test]
    fn absent_headers_are_absent_not_zero() {
        let info = parse(&HeaderMap::new(), SystemTime::now());
        assert!(info.is_empty());
        let info = parse(
            &headers(&[("x-ratelimit-remaining", "5")]),
            SystemTime::now(),
        );
        assert_eq!((info.limit, info.remaining), (None, Some(5)));
    }

    #[test]
    fn retry_after_as_http_date() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let info = parse(
            &headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:10 GMT")]),
            now,
        );
        assert_eq!(info.retry_after, Some(Duration::from_secs(10)));
    }

    #[test]
    fn small_reset_is_a_delta() {
        let now = SystemTime::now();
        let info = parse(&headers(&[("x-ratelimit-reset", "60")]), now);
        assert_eq!(info.reset_at, Some(now + Duration::from_secs(60)));
    }

    #[test]
    fn garbage_is_ignored() {
        let info = parse(
            &headers(&[("x-ratelimit-limit", "lots"), ("retry-after", "soon")]),
            SystemTime::now(),
        );
        assert!(info.is_empty());
    }

    proptest! {
        #[test]
        fn never_panics(limit in ".{0,24}", reset in ".{0,24}", retry in ".{0,40}") {
            let mut map = HeaderMap::new();
            for (name, value) in [("x-ratelimit-limit", limit), ("x-ratelimit-reset", reset), ("retry-after", retry)] {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    map.insert(name, value);
                }
            }
            let _ = parse(&map, SystemTime::now());
        }
    }
}
