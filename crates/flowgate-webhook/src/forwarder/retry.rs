//! The forwarder's retry policy: what the answer to one attempt means, and
//! how long to wait before the next one.

use std::time::{Duration, SystemTime};

use flowgate_core::numbers;

use http::header::RETRY_AFTER;
use http::{HeaderMap, StatusCode};
use rand::Rng;

use super::ForwarderConfig;

/// What one HTTP attempt came to.
pub(super) enum Attempt {
    Delivered(u16),
    Rejected(Option<u16>),
    Retry {
        status: Option<u16>,
        retry_after: Option<Duration>,
    },
}

/// Equal-jitter exponential backoff after `failures` failed attempts,
/// raised to `retry_after`, capped at `max_backoff`.
pub(super) fn backoff(
    config: &ForwarderConfig,
    failures: u32,
    retry_after: Option<Duration>,
) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    let base = config
        .initial_backoff
        .saturating_mul(1u32 << doublings)
        .min(config.max_backoff);
    let half = base / 2;
    let jittered = half + half.mul_f64(rand::rng().random::<f64>());
    retry_after
        .map_or(jittered, |wait| jittered.max(wait))
        .min(config.max_backoff)
}

/// What an answer to one attempt means: delivered (2xx), final (other
/// statuses) or worth retrying (408, 429, 5xx; with `Retry-After`, read and clamped by the shared parser).
pub(super) fn classify(status: StatusCode, headers: &HeaderMap) -> Attempt {
    if status.is_success() {
        return Attempt::Delivered(status.as_u16());
    }
    let retryable = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT;
    if !retryable {
        return Attempt::Rejected(Some(status.as_u16()));
    }
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| numbers::retry_after(v, SystemTime::now()));
    Attempt::Retry {
        status: Some(status.as_u16()),
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn statuses_are_classified() {
        let none = HeaderMap::new();
        for (code, expect) in [
            (200, "delivered"),
            (204, "delivered"),
            (400, "rejected"),
            (404, "rejected"),
            (410, "rejected"),
            (408, "retry"),
            (429, "retry"),
            (500, "retry"),
            (503, "retry"),
        ] {
            let got = match classify(StatusCode::from_u16(code).unwrap(), &none) {
                Attempt::Delivered(_) => "delivered",
                Attempt::Rejected(_) => "rejected",
                Attempt::Retry { .. } => "retry",
            };
            assert_eq!(got, expect, "{code}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        match classify(StatusCode::TOO_MANY_REQUESTS, &headers) {
            Attempt::Retry { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)));
            }
            _ => panic!("429 is retryable"),
        }
        // The shared parser: decimals and absurd values are read and clamped.
        for (value, expect) in [
            ("1.5", Some(Duration::from_millis(1500))),
            ("1e300", Some(numbers::MAX_RETRY_AFTER)),
            ("soon", None),
        ] {
            headers.insert(RETRY_AFTER, HeaderValue::from_static(value));
            match classify(StatusCode::SERVICE_UNAVAILABLE, &headers) {
                Attempt::Retry { retry_after, .. } => assert_eq!(retry_after, expect, "{value}"),
                _ => panic!("503 is retryable"),
            }
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let config = ForwarderConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..ForwarderConfig::default()
        };
        for _ in 0..50 {
            for (failures, base) in [
                (1, 100),
                (2, 200),
                (3, 400),
                (4, 800),
                (5, 1000),
                (40, 1000),
            ] {
                let wait = backoff(&config, failures, None);
                let base = Duration::from_millis(base);
                assert!(wait >= base / 2 && wait <= base, "{failures}: {wait:?}");
            }
        }
        assert_eq!(
            backoff(&config, 1, Some(Duration::from_millis(700))),
            Duration::from_millis(700)
        );
        assert_eq!(
            backoff(&config, 1, Some(Duration::from_secs(30))),
            Duration::from_secs(1)
        );
    }
}
