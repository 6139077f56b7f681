//! Emulator configuration: limits, timing and the Knouds webhook target.

use std::fmt;
use std::time::Duration;

/// How the emulated providers behave: limits, timings and webhook targets.
///
/// Every field has a sane default (see [`EmulatorConfig::default`]); tests
/// usually override one or two, e.g. a tiny rate limit or a short async delay.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Fetch Hive daily request cap per key (resets at midnight UTC).
    pub fetchhive_daily_limit: u32,
    /// Fetch Hive concurrent synchronous runs per key; async submissions at
    /// or beyond it are accepted as `queued`.
    pub fetchhive_concurrency_limit: u32,
    /// AI Tutor requests per key in a sliding one-second window.
    pub aitutor_per_second_limit: u32,
    /// Length of the Knouds per-tier rate-limit window (per minute upstream).
    pub knouds_window: Duration,
    /// When async runs and executions finish and their callbacks fire.
    pub async_completion_delay: Duration,
    /// Webhook configured on every Knouds key for `execution.*` events.
    pub knouds_webhook: Option<KnoudsWebhook>,
    /// Extra latency added to every provider response.
    pub latency: Duration,
    /// Send usage numbers as numeric strings, as some implementations of
    /// the vendors' docs do: Fetch Hive's `workflow_run` `total_charge`
    /// (`"0.0021"`), `duration` and `total_tokens`, and Knouds' `cost` and
    /// `ms`.
    pub usage_as_strings: bool,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            fetchhive_daily_limit: 10_000,
            fetchhive_concurrency_limit: 5,
            aitutor_per_second_limit: 50,
            knouds_window: Duration::from_secs(60),
            async_completion_delay: Duration::from_millis(300),
            knouds_webhook: None,
            latency: Duration::ZERO,
            usage_as_strings: false,
        }
    }
}

impl EmulatorConfig {
    /// A usage number as this emulator sends it: as is, or (with
    /// [`usage_as_strings`](Self::usage_as_strings)) its decimal text.
    pub(crate) fn usage(&self, value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Number(number) if self.usage_as_strings => {
                serde_json::Value::String(number.to_string())
            }
            other => other,
        }
    }
}

/// A Knouds webhook endpoint: where `execution.*` events are POSTed and the
/// secret used for `X-Knouds-Signature`. `Debug` redacts the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct KnoudsWebhook {
    /// Absolute URL receiving the events.
    pub url: String,
    /// Signing secret.
    pub secret: String,
}

impl fmt::Debug for KnoudsWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KnoudsWebhook")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_numbers_as_strings_on_request() {
        let plain = EmulatorConfig::default();
        assert_eq!(plain.usage(json!(0.0021)), json!(0.0021));
        let strings = EmulatorConfig {
            usage_as_strings: true,
            ..EmulatorConfig::default()
        };
        assert_eq!(strings.usage(json!(0.0021)), json!("0.0021"));
        assert_eq!(strings.usage(json!(500)), json!("500"));
        assert_eq!(strings.usage(json!(null)), json!(null));
    }
}
