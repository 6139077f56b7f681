//! Every number a vendor sends, read once, bounded, never trusted.
//!
//! Two rules, for every dialect and for the callback forwarder:
//!
//! - **Ceilings.** A number that becomes a wait or a point in time is
//!   clamped: a `Retry-After` (seconds or HTTP-date) to at most
//!   [`MAX_RETRY_AFTER`], an `X-RateLimit-Reset` to at most
//!   [`MAX_RESET_AHEAD`] from now, a run duration from a body to at most
//!   [`MAX_RUN_DURATION`]. NaN, infinities, negatives and garbage are
//!   ignored (the value stays absent), so no conversion here or downstream
//!   (`Duration::from_secs_f64`, `Instant + Duration`) can overflow.
//! - **Lenient shapes.** Usage and cost fields (`total_charge`,
//!   `total_tokens`, `duration`, Knouds `cost`/`ms`) and ids accept a JSON
//!   number or a numeric string (`"0.0021"`, as Rails-style APIs send
//!   money). The serde helpers in [`lenient`] never fail a body: a field that
//!   still cannot be read is dropped (logged at debug). Only the fields that
//!   carry a run's status and output decide whether an answer is readable.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// The longest `Retry-After` the gateway honours (24 h); longer asks are
/// clamped to it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// The furthest ahead a rate-limit window reset is believed (24 h); a later
/// reset is clamped to it, so a remembered exhausted window never outlives
/// it.
pub const MAX_RESET_AHEAD: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest run duration a body may report (30 days); longer values are
/// clamped to it.
pub const MAX_RUN_DURATION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Below this an `X-RateLimit-Reset` value is a delta, not an epoch
/// (2001-09-09).
const EPOCH_THRESHOLD: f64 = 1_000_000_000.0;

/// A finite, non-negative number from header text (`"12"`, `"12.5"`).
fn header_number(text: &str) -> Option<f64> {
    let text = text.trim();
    if let Ok(whole) = text.parse::<u64>() {
        // Exact for every u64 the f64 can tell apart; beyond that every
        // caller clamps far below anyway.
        return Some(whole as f64);
    }
    text.parse::<f64>()
        .ok()
        .filter(|number| number.is_finite() && *number >= 0.0)
}

/// `seconds` as a duration no longer than `ceiling`; `None` for NaN and
/// negatives, `ceiling` for infinity and anything above it.
pub fn clamped_seconds(seconds: f64, ceiling: Duration) -> Option<Duration> {
    if seconds.is_nan() || seconds < 0.0 {
        return None;
    }
    let bounded = seconds.min(ceiling.as_secs_f64());
    Some(
        Duration::try_from_secs_f64(bounded)
            .unwrap_or(ceiling)
            .min(ceiling),
    )
}

/// A count header (`X-RateLimit-Limit`, `X-RateLimit-Remaining`): a
/// non-negative integer, or a float form (`"100.0"`) rounded down and
/// saturated at `u64::MAX`. Negatives and garbage are ignored.
pub fn header_count(text: &str) -> Option<u64> {
    // `as` saturates for finite floats, and header_number rules out the rest.
    header_number(text).map(|number| number as u64)
}

/// A `Retry-After` at `now`: delay seconds (integer or decimal) or an
/// HTTP-date, clamped to [`MAX_RETRY_AFTER`]. A date in the past is zero.
pub fn retry_after(text: &str, now: SystemTime) -> Option<Duration> {
    if let Some(seconds) = header_number(text) {
        return clamped_seconds(seconds, MAX_RETRY_AFTER);
    }
    let at = httpdate::parse_http_date(text.trim()).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// An `X-RateLimit-Reset` at `now`: unix epoch seconds, or (under 10⁹)
/// seconds from now. Never later than [`MAX_RESET_AHEAD`] from `now`; a
/// reset in the past is kept as is (the window is already open again).
pub fn reset_at(text: &str, now: SystemTime) -> Option<SystemTime> {
    let value = header_number(text)?;
    let latest = now.checked_add(MAX_RESET_AHEAD)?;
    if value < EPOCH_THRESHOLD {
        let ahead = clamped_seconds(value, MAX_RESET_AHEAD)?;
        return now.checked_add(ahead);
    }
    // An epoch beyond the ceiling (or beyond what SystemTime holds) is the
    // ceiling.
    let at = Duration::try_from_secs_f64(value)
        .ok()
        .and_then(|since| UNIX_EPOCH.checked_add(since))
        .unwrap_or(latest);
    Some(at.min(latest))
}

/// A number from a JSON body: a JSON number or a numeric string, finite.
pub fn number(value: &Value) -> Option<f64> {
    let number = match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    }?;
    number.is_finite().then_some(number)
}

/// A count from a JSON body (tokens): a non-negative whole JSON number or
/// numeric string (`500`, `"500"`, `500.0`). Fractions, negatives and
/// values beyond `u64::MAX` are unreadable.
pub fn count(value: &Value) -> Option<u64> {
    if let Some(whole) = value.as_u64() {
        return Some(whole);
    }
    if let Value::String(text) = value
        && let Ok(whole) = text.trim().parse::<u64>()
    {
        return Some(whole);
    }
    let number = number(value)?;
    // 2⁶⁴ as f64; anything at or above it does not fit.
    let fits = (0.0..18_446_744_073_709_551_616.0).contains(&number);
    (fits && number.fract() == 0.0).then_some(number as u64)
}

/// Credits charged: a non-negative [`number`].
pub fn credits(value: &Value) -> Option<f64> {
    number(value).filter(|credits| *credits >= 0.0)
}

/// A run duration in `unit`s per second (1 for seconds, 1000 for ms),
/// clamped to [`MAX_RUN_DURATION`]; negatives are unreadable.
pub fn run_duration(value: &Value, units_per_second: f64) -> Option<Duration> {
    let seconds = number(value)? / units_per_second;
    clamped_seconds(seconds, MAX_RUN_DURATION)
}

/// An id that may arrive as a string or a number (`"req_1"`, `77`).
pub fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// Serde helpers for optional body fields: `#[serde(default,
/// deserialize_with = "lenient::…")]`. Each takes the field's raw JSON
/// text (so the body never fails on it, not even on a number literal no
/// `f64` holds, such as `1e400`) and keeps it only if readable. Bodies
/// using them are decoded with `serde_json::from_slice`/`from_str`.
pub mod lenient {
    use std::collections::HashMap;

    use serde_json::value::RawValue;

    use super::*;

    /// The JSON `raw` holds, when it is readable (`serde_json` refuses
    /// number literals beyond `f64`, such as `1e400`); `None` (logged at
    /// debug) when not. Never fails.
    pub fn value_of(raw: &RawValue) -> Option<Value> {
        match serde_json::from_str::<Value>(raw.get()) {
            Ok(value) => Some(value),
            Err(_) => {
                // The kind only: the text is a vendor's bytes.
                tracing::debug!(
                    kind = "unreadable",
                    "an optional body field could not be read; dropped"
                );
                None
            }
        }
    }

    /// A JSON object read field by field: every field that is readable
    /// JSON, and an object field that is not, read the same way down to
    /// `depth` more levels (the rest dropped, logged at debug). `None` when
    /// `text` is not a JSON object. For bodies read by name (vendor error
    /// bodies), where one unreadable field must not hide the others.
    pub fn object(text: &[u8], depth: usize) -> Option<serde_json::Map<String, Value>> {
        let fields: HashMap<String, Box<RawValue>> = serde_json::from_slice(text).ok()?;
        let read = |raw: &RawValue| {
            value_of(raw).or_else(|| {
                let inner = depth.checked_sub(1)?;
                object(raw.get().as_bytes(), inner).map(Value::Object)
            })
        };
        Some(
            fields
                .into_iter()
                .filter_map(|(name, raw)| Some((name, read(&raw)?)))
                .collect(),
        )
    }

    fn read<'de, D, T>(
        deserializer: D,
        read: fn(&Value) -> Option<T>,
    ) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
    {
        let raw = Option::<Box<RawValue>>::deserialize(deserializer)?;
        let Some(value) = raw.as_deref().and_then(value_of) else {
            return Ok(None);
        };
        if value.is_null() {
            return Ok(None);
        }
        let read = read(&value);
        if read.is_none() {
            // The kind only: the value is a vendor's bytes.
            tracing::debug!(
                kind = value_kind(&value),
                "an optional body field could not be read; dropped"
            );
        }
        Ok(read)
    }

    fn value_kind(value: &Value) -> &'static str {
        match value {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// Credits: [`credits`].
    pub fn credits<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
        read(deserializer, super::credits)
    }

    /// A token count: [`count`].
    pub fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
        read(deserializer, super::count)
    }

    /// A duration in seconds: [`run_duration`].
    pub fn seconds<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        read(deserializer, |value| run_duration(value, 1.0))
    }

    /// A duration in milliseconds: [`run_duration`].
    pub fn millis<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        read(deserializer, |value| run_duration(value, 1000.0))
    }

    /// Any optional field read as it is (ids, citations, a failed run's
    /// error): dropped when unreadable, `null` is absent.
    pub fn value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
        read(deserializer, |value| Some(value.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absurd_delays_are_clamped_not_trusted() {
        let now = SystemTime::now();
        for text in ["1e300", "99999999999999999999", "18446744073709551615"] {
            assert_eq!(retry_after(text, now), Some(MAX_RETRY_AFTER), "{text}");
        }
        for text in ["NaN", "inf", "-1", "-inf", "", "soon"] {
            assert_eq!(retry_after(text, now), None, "{text}");
        }
        assert_eq!(retry_after("1.5", now), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn resets_never_lie_beyond_the_ceiling() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let latest = now + MAX_RESET_AHEAD;
        for text in ["99999999999", "9223372036854775807", "1e300", "999999999"] {
            let at = reset_at(text, now).unwrap();
            assert!(at <= latest, "{text}");
        }
        assert_eq!(reset_at("9223372036854775807", now), Some(latest));
        assert_eq!(reset_at("60", now), Some(now + Duration::from_secs(60)));
        assert_eq!(reset_at("-5", now), None);
    }

    #[test]
    fn usage_numbers_accept_strings_and_numbers() {
        assert_eq!(credits(&json!("0.0021")), Some(0.0021));
        assert_eq!(credits(&json!(0.0021)), Some(0.0021));
        assert_eq!(credits(&json!("-1")), None);
        assert_eq!(count(&json!("500")), Some(500));
        assert_eq!(count(&json!(500.0)), Some(500));
        assert_eq!(count(&json!(1e300)), None);
        assert_eq!(count(&json!("1.5")), None);
        assert_eq!(
            run_duration(&json!("1.5"), 1.0),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(run_duration(&json!(1e300), 1000.0), Some(MAX_RUN_DURATION));
        assert_eq!(run_duration(&json!("NaN"), 1.0), None);
        assert_eq!(id_text(&json!(77)), Some("77".into()));
    }

    #[derive(serde::Deserialize)]
    struct Usage {
        #[serde(default, deserialize_with = "lenient::credits")]
        charge: Option<f64>,
        #[serde(default, deserialize_with = "lenient::millis")]
        ms: Option<Duration>,
        #[serde(default, deserialize_with = "lenient::count")]
        tokens: Option<u64>,
        #[serde(default, deserialize_with = "lenient::value")]
        id: Option<Value>,
        status: String,
    }

    #[test]
    fn literals_beyond_f64_drop_the_field_not_the_body() {
        for literal in ["1e400", "-1e400", "1e999999", "-0.5e400"] {
            let body = format!(
                r#"{{"charge": {literal}, "ms": {literal}, "tokens": {literal}, "id": {literal}, "status": "completed"}}"#
            );
            let usage: Usage = serde_json::from_str(&body).unwrap();
            assert_eq!(usage.status, "completed", "{literal}");
            assert_eq!(
                (usage.charge, usage.ms, usage.tokens, usage.id),
                (None, None, None, None),
                "{literal}"
            );
        }
        let usage: Usage = serde_json::from_slice(
            br#"{"charge": "0.5", "ms": 1500, "tokens": null, "id": 7, "status": "x"}"#,
        )
        .unwrap();
        assert_eq!(usage.charge, Some(0.5));
        assert_eq!(usage.ms, Some(Duration::from_millis(1500)));
        assert_eq!(usage.tokens, None);
        assert_eq!(usage.id, Some(json!(7)));
        // Still strict about the body itself.
        assert!(serde_json::from_str::<Usage>(r#"{"charge": 1e400}"#).is_err());
    }
}
