//! What one configured provider needs to run.

use std::time::Duration;

use flowgate_core::{ProviderKind, SecretString, duration};
use serde::Deserialize;

use crate::{ApiKey, dialect::Dialect};

/// A provider's resolved settings (the key already loaded).
#[derive(Clone, Debug)]
pub struct ProviderSettings {
    /// Unique configured name.
    pub name: String,
    /// Its dialect.
    pub kind: ProviderKind,
    /// Base URL without a trailing slash, e.g. `https://api.fetchhive.com/v1`.
    pub base_url: String,
    /// The provider API key (replaced while serving when its file is
    /// rotated; every clone shares it).
    pub api_key: ApiKey,
    /// Longest an upstream request may take (the caller's deadline may cut it
    /// shorter).
    pub timeout: Duration,
    /// Fetch Hive: the variant used when the caller names none.
    pub default_variant: Option<String>,
    /// Retries, circuit breaking and local limits.
    pub resilience: Resilience,
}

/// How a provider is protected and how failures are retried.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resilience {
    /// When a failed call is tried again.
    pub retry: RetryPolicy,
    /// When the provider is considered down.
    pub circuit: CircuitPolicy,
    /// The gateway's own limits for this provider's key.
    pub limits: LocalLimits,
}

/// Retries: only where no paid run can have started twice.
///
/// A request that never reached the upstream (connect failure) is retried
/// with jittered exponential backoff; a 429 is retried after its
/// Retry-After when that fits in the caller's deadline. Timeouts after
/// sending and 5xx answers are retried only when the caller sent an
/// idempotency key and `idempotent_retries` is on. Retries draw from a
/// budget (a percentage of recent calls plus a small floor), so a storm of
/// failures cannot multiply upstream traffic.
///
/// `[providers.<name>.retry]` deserializes into this directly; a missing
/// key keeps its default.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts per call, the first included; 1 turns retries off.
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles per attempt, with jitter.
    #[serde(deserialize_with = "duration::deserialize")]
    pub initial_backoff: Duration,
    /// Longest backoff.
    #[serde(deserialize_with = "duration::deserialize")]
    pub max_backoff: Duration,
    /// Retries allowed as a percentage of calls over the last 10 s.
    pub budget_percent: f32,
    /// Retries per second always allowed, whatever the percentage says.
    pub min_retries_per_second: u32,
    /// Retry 5xx answers and timeouts of calls that carry an idempotency key.
    pub idempotent_retries: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            budget_percent: 20.0,
            min_retries_per_second: 10,
            idempotent_retries: true,
        }
    }
}

/// Circuit breaking: after `failure_threshold` consecutive failures
/// (unreachable, 5xx, upstream timeouts, undecodable answers) calls fail
/// fast with UNAVAILABLE for `open_for`; then one probe call is let
/// through, and its success closes the circuit.
///
/// `[providers.<name>.circuit_breaker]` deserializes into this directly; a
/// missing key keeps its default.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitPolicy {
    /// Consecutive failures that open the circuit; 0 turns it off.
    pub failure_threshold: u32,
    /// How long an open circuit fails fast before probing.
    #[serde(deserialize_with = "duration::deserialize")]
    pub open_for: Duration,
}

impl Default for CircuitPolicy {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

/// The gateway's own limits for one provider key (e.g. a Fetch Hive plan's
/// 1/3/5 concurrent runs), applied before any upstream call.
///
/// `[providers.<name>.limits]` deserializes into this directly; a missing
/// key keeps its default.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalLimits {
    /// Requests allowed per `window`; `None` for no local rate limit.
    pub requests_per_window: Option<u32>,
    /// The rate window.
    #[serde(deserialize_with = "duration::deserialize")]
    pub window: Duration,
    /// Upstream calls in flight at once; `None` for no limit.
    pub max_concurrent_runs: Option<u32>,
    /// How long a call waits for a free run slot before failing.
    #[serde(deserialize_with = "duration::deserialize")]
    pub concurrency_wait: Duration,
}

impl Default for LocalLimits {
    fn default() -> Self {
        Self {
            requests_per_window: None,
            window: Duration::from_secs(60),
            max_concurrent_runs: None,
            concurrency_wait: Duration::from_secs(5),
        }
    }
}

impl ProviderSettings {
    /// Settings with a built-in dialect's defaults (see
    /// [`crate::registry::BUILTIN`]); a kind registered only in code gets
    /// an empty base URL and a 120 s timeout (use
    /// [`ProviderSettings::of`] for it).
    pub fn new(name: impl Into<String>, kind: ProviderKind, api_key: SecretString) -> Self {
        let (base_url, timeout) = crate::registry::builtin(kind)
            .map_or(("", Duration::from_secs(120)), |registration| {
                (registration.default_base_url, registration.default_timeout)
            });
        Self {
            name: name.into(),
            kind,
            base_url: base_url.to_owned(),
            api_key: ApiKey::new(api_key),
            timeout,
            default_variant: None,
            resilience: Resilience::default(),
        }
    }

    /// Settings with dialect `D`'s defaults.
    pub fn of<D: Dialect>(name: impl Into<String>, api_key: SecretString) -> Self {
        Self {
            base_url: D::DEFAULT_BASE_URL.to_owned(),
            timeout: D::DEFAULT_TIMEOUT,
            ..Self::new(name, D::KIND, api_key)
        }
    }
}
