//! `[idempotency]`: how long and how many `idempotency_key` answers are kept.

use super::*;

/// `[idempotency]`: the records of Invoke calls that carried an
/// `idempotency_key`. A missing key takes its value from [`Default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// How long a finished call's answer is replayed, counted from when it
    /// was recorded. Default `24h`.
    #[serde(deserialize_with = "duration")]
    pub ttl: Duration,
    /// Most keys the in-memory store holds; past it the oldest answers are
    /// dropped first. Default 100000.
    pub capacity: u64,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 3600),
            capacity: 100_000,
        }
    }
}
