//! Durations as the configuration writes them: `250ms`, `30s`, `5m`, `1h`,
//! `1h 30m`, `1.5s`, or a number of seconds.
//!
//! The unit grammar is [`humantime`]'s (a maintained crate); this module adds
//! what it lacks for a configuration file: a plain number is seconds,
//! whether TOML gives it as a number (`timeout = 90`), as text
//! (`timeout = "90"`) or an environment override types it as one
//! (`FLOWGATE__PROVIDERS__KN__TIMEOUT=90`). Ranges are not checked here: the
//! configuration checks every duration against its documented range, with
//! its path.
//!
//! Settings structs use [`deserialize`] (or [`optional`]) as their
//! `deserialize_with`, so the engine's policies deserialize directly.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses `250ms`, `30s`, `5m`, `1h`, `1h 30m`, `1.5s`, or a bare number of
/// seconds (`90`, `0.5`). Negative, non-finite and overflowing values are
/// errors.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        let seconds: f64 = text
            .parse()
            .map_err(|_| format!("{text:?} is not a number of seconds"))?;
        return seconds_to_duration(seconds);
    }
    humantime::parse_duration(text)
        .map_err(|err| format!("{text:?} is not a duration like 250ms, 30s, 5m or 1h ({err})"))
}

fn seconds_to_duration(seconds: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(seconds).map_err(|err| format!("{seconds} seconds: {err}"))
}

/// What a duration may be written as: seconds, or text for [`parse`].
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a duration like \"250ms\", \"30s\", \"5m\" or a number of seconds"
)]
enum DurationText {
    Seconds(f64),
    Text(String),
}

/// `deserialize_with` for a [`Duration`] field.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    match DurationText::deserialize(deserializer)? {
        DurationText::Seconds(seconds) => {
            seconds_to_duration(seconds).map_err(serde::de::Error::custom)
        }
        DurationText::Text(text) => parse(&text).map_err(serde::de::Error::custom),
    }
}

/// `deserialize_with` for an `Option<Duration>` field (with
/// `#[serde(default)]`, so a missing key is `None`).
pub fn optional<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_fractions_and_bare_seconds() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("24h"), Ok(Duration::from_secs(24 * 3600)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse(" 90 "), Ok(Duration::from_secs(90)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn nonsense_is_an_error_that_quotes_the_text() {
        for text in [
            "-1s",
            "3 fortnights",
            "soon",
            "",
            "1.2.3",
            "NaN",
            "inf",
            "1e3s",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
        assert!(parse("99999999999999999999s").is_err(), "overflow");
        let err = parse("soon").unwrap_err();
        assert!(err.starts_with("\"soon\" is not a duration"), "{err}");
    }

    #[test]
    fn numbers_are_seconds() {
        let from = |value: serde_json::Value| deserialize(&value).map_err(|err| err.to_string());
        assert_eq!(from(serde_json::json!(90)), Ok(Duration::from_secs(90)));
        assert_eq!(
            from(serde_json::json!(0.25)),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(from(serde_json::json!("5m")), Ok(Duration::from_secs(300)));
        assert!(from(serde_json::json!(-1)).is_err());
        assert!(from(serde_json::json!(true)).is_err());
    }
}
