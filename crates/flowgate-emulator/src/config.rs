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
