//! The documented range of every duration and size in the configuration.
//!
//! One table, [`RANGES`], is what `check-config` enforces and what the
//! README lists: a value outside its range is reported with its path,
//! together with every other problem. The ceilings keep absurd values
//! (`runs.ttl = "9000000h"`, a huge `open_for`) away from the caches and
//! timers that would overflow or panic on them.

use std::time::Duration;

use super::{Config, ConfigIssue};

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const TEN_MINUTES: Duration = Duration::from_secs(600);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
const MIB: u64 = 1024 * 1024;

/// The allowed values of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounds {
    /// A duration, both ends included.
    Duration(Duration, Duration),
    /// A count or size, both ends included.
    Count(u64, u64),
}

/// One key's range; `*` stands for a provider name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The dotted key, e.g. `runs.ttl` or `providers.*.timeout`.
    pub key: &'static str,
    /// Its allowed values.
    pub bounds: Bounds,
}

const fn duration(key: &'static str, min: Duration, max: Duration) -> Range {
    Range {
        key,
        bounds: Bounds::Duration(min, max),
    }
}

const fn count(key: &'static str, min: u64, max: u64) -> Range {
    Range {
        key,
        bounds: Bounds::Count(min, max),
    }
}

/// Every duration and size key with its range.
pub const RANGES: &[Range] = &[
    duration("server.default_deadline", MS, DAY),
    duration("server.shutdown_grace", Duration::ZERO, HOUR),
    count("server.max_request_bytes", 1024, 64 * MIB),
    count("server.max_concurrent_requests", 1, 100_000),
    count("server.max_queued_requests", 0, 100_000),
    duration("server.secret_reload_interval", SECOND, DAY),
    duration("server.tls.reload_interval", SECOND, DAY),
    duration(
        "server.tls.handshake_timeout",
        Duration::from_millis(100),
        MINUTE,
    ),
    count("server.tls.max_handshakes", 1, 100_000),
    duration("server.cors.max_age", Duration::ZERO, DAY),
    duration("webhooks.tolerance", SECOND, DAY),
    count("webhooks.max_body_bytes", 1024, 64 * MIB),
    count("webhooks.forward_max_attempts", 1, 50),
    count("runs.capacity", 1, 10_000_000),
    duration("runs.ttl", SECOND, Duration::from_secs(30 * 24 * 3600)),
    duration("runs.poll_initial", MS, HOUR),
    duration("runs.poll_max", MS, HOUR),
    duration("runs.max_watch", SECOND, Duration::from_secs(7 * 24 * 3600)),
    count("runs.max_background_runs", 1, 100_000),
    duration("runs.owner_lease", SECOND, Duration::from_secs(600)),
    duration(
        "idempotency.ttl",
        SECOND,
        Duration::from_secs(30 * 24 * 3600),
    ),
    count("idempotency.capacity", 1, 10_000_000),
    duration("state.op_timeout", Duration::from_millis(10), MINUTE),
    duration(
        "state.limits.slot_lease",
        flowgate_core::SharedLimitsSettings::MIN_SLOT_LEASE,
        flowgate_core::SharedLimitsSettings::MAX_SLOT_LEASE,
    ),
    duration("schemas.ttl", MS, Duration::from_secs(30 * 24 * 3600)),
    count("schemas.capacity", 1, 10_000_000),
    duration(
        "schemas.negative_ttl",
        MS,
        Duration::from_secs(30 * 24 * 3600),
    ),
    duration(
        "schemas.failure_ttl",
        MS,
        Duration::from_secs(30 * 24 * 3600),
    ),
    duration("schemas.fetch_timeout", MS, HOUR),
    duration("providers.*.timeout", MS, HOUR),
    count("providers.*.retry.max_attempts", 1, 10),
    duration("providers.*.retry.initial_backoff", MS, MINUTE),
    duration("providers.*.retry.max_backoff", MS, TEN_MINUTES),
    count("providers.*.retry.min_retries_per_second", 0, 10_000),
    count("providers.*.circuit_breaker.failure_threshold", 0, 1_000),
    duration("providers.*.circuit_breaker.open_for", MS, HOUR),
    count("providers.*.limits.requests_per_window", 1, 1_000_000),
    duration("providers.*.limits.window", MS, DAY),
    count("providers.*.limits.max_concurrent_runs", 1, 10_000),
    duration(
        "providers.*.limits.concurrency_wait",
        Duration::ZERO,
        TEN_MINUTES,
    ),
    count("callers.*.quota.requests_per_window", 1, 1_000_000),
    duration("callers.*.quota.window", SECOND, DAY),
    count("callers.*.quota.max_concurrent_runs", 1, 10_000),
];

/// A duration as the config writes it: `250ms`, `30s`, `5m`, `24h`.
pub fn format_duration(value: Duration) -> String {
    let ms = value.as_millis();
    if !ms.is_multiple_of(1000) || ms == 0 {
        return format!("{ms}ms");
    }
    let secs = value.as_secs();
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

impl Bounds {
    /// What the range allows, for messages and the README.
    pub fn describe(&self) -> String {
        match self {
            Self::Duration(min, max) => format!(
                "between {} and {}",
                format_duration(*min),
                format_duration(*max)
            ),
            Self::Count(min, max) => format!("between {min} and {max}"),
        }
    }
}

/// A configured value to check.
enum Value {
    Duration(Duration),
    Count(u64),
}

fn to_u64(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

impl Config {
    /// Every configured duration and size with its table key and path.
    fn ranged_values(&self) -> Vec<(&'static str, String, Value)> {
        use Value::{Count as C, Duration as D};
        let server = &self.server;
        let webhooks = &self.webhooks;
        let runs = &self.runs;
        let schemas = &self.schemas;
        let mut values: Vec<(&'static str, Value)> = vec![
            ("server.default_deadline", D(server.default_deadline)),
            ("server.shutdown_grace", D(server.shutdown_grace)),
            (
                "server.max_request_bytes",
                C(to_u64(server.max_request_bytes)),
            ),
            (
                "server.max_concurrent_requests",
                C(to_u64(server.max_concurrent_requests)),
            ),
            (
                "server.max_queued_requests",
                C(to_u64(server.max_queued_requests)),
            ),
            (
                "server.secret_reload_interval",
                D(server.secret_reload_interval),
            ),
            ("server.cors.max_age", D(server.cors.max_age)),
            ("webhooks.tolerance", D(webhooks.tolerance)),
            (
                "webhooks.max_body_bytes",
                C(to_u64(webhooks.max_body_bytes)),
            ),
            (
                "webhooks.forward_max_attempts",
                C(u64::from(webhooks.forward_max_attempts)),
            ),
            ("runs.capacity", C(runs.capacity)),
            ("runs.ttl", D(runs.ttl)),
            ("runs.poll_initial", D(runs.poll_initial)),
            ("runs.poll_max", D(runs.poll_max)),
            ("runs.max_watch", D(runs.max_watch)),
            (
                "runs.max_background_runs",
                C(to_u64(runs.max_background_runs)),
            ),
            ("runs.owner_lease", D(runs.owner_lease)),
            ("idempotency.ttl", D(self.idempotency.ttl)),
            ("idempotency.capacity", C(self.idempotency.capacity)),
            ("state.op_timeout", D(self.state.op_timeout)),
            ("state.limits.slot_lease", D(self.state.limits.slot_lease)),
            ("schemas.ttl", D(schemas.ttl)),
            ("schemas.capacity", C(schemas.capacity)),
            ("schemas.negative_ttl", D(schemas.negative_ttl)),
            ("schemas.failure_ttl", D(schemas.failure_ttl)),
            ("schemas.fetch_timeout", D(schemas.fetch_timeout)),
        ];
        if let Some(tls) = &server.tls {
            values.extend([
                ("server.tls.reload_interval", D(tls.reload_interval)),
                ("server.tls.handshake_timeout", D(tls.handshake_timeout)),
                ("server.tls.max_handshakes", C(to_u64(tls.max_handshakes))),
            ]);
        }
        let mut out: Vec<(&'static str, String, Value)> = values
            .drain(..)
            .map(|(key, value)| (key, key.to_owned(), value))
            .collect();
        for (name, provider) in &self.providers {
            let retry = &provider.retry;
            let circuit = &provider.circuit_breaker;
            let limits = &provider.limits;
            let mut per_provider: Vec<(&'static str, Value)> = vec![
                (
                    "providers.*.retry.max_attempts",
                    C(u64::from(retry.max_attempts)),
                ),
                (
                    "providers.*.retry.initial_backoff",
                    D(retry.initial_backoff),
                ),
                ("providers.*.retry.max_backoff", D(retry.max_backoff)),
                (
                    "providers.*.retry.min_retries_per_second",
                    C(u64::from(retry.min_retries_per_second)),
                ),
                (
                    "providers.*.circuit_breaker.failure_threshold",
                    C(u64::from(circuit.failure_threshold)),
                ),
                ("providers.*.circuit_breaker.open_for", D(circuit.open_for)),
                ("providers.*.limits.window", D(limits.window)),
                (
                    "providers.*.limits.concurrency_wait",
                    D(limits.concurrency_wait),
                ),
            ];
            if let Some(timeout) = provider.timeout {
                per_provider.push(("providers.*.timeout", D(timeout)));
            }
            if let Some(requests) = limits.requests_per_window {
                per_provider.push((
                    "providers.*.limits.requests_per_window",
                    C(u64::from(requests)),
                ));
            }
            if let Some(runs) = limits.max_concurrent_runs {
                per_provider.push(("providers.*.limits.max_concurrent_runs", C(u64::from(runs))));
            }
            out.extend(per_provider.into_iter().map(|(key, value)| {
                let path = key.replacen('*', name, 1);
                (key, path, value)
            }));
        }
        for (name, quota) in self
            .callers
            .iter()
            .filter_map(|(name, caller)| Some((name, caller.quota.as_ref()?)))
        {
            let mut per_caller = vec![("callers.*.quota.window", D(quota.window))];
            if let Some(requests) = quota.requests_per_window {
                per_caller.push(("callers.*.quota.requests_per_window", C(requests.into())));
            }
            if let Some(runs) = quota.max_concurrent_runs {
                per_caller.push(("callers.*.quota.max_concurrent_runs", C(runs.into())));
            }
            out.extend(per_caller.into_iter().map(|(key, value)| {
                let path = key.replacen('*', name, 1);
                (key, path, value)
            }));
        }
        out
    }

    /// One issue per value outside its range.
    pub(super) fn range_issues(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        for (key, path, value) in self.ranged_values() {
            let Some(range) = RANGES.iter().find(|range| range.key == key) else {
                continue;
            };
            let inside = match (range.bounds, value) {
                (Bounds::Duration(min, max), Value::Duration(value)) => {
                    (min..=max).contains(&value)
                }
                (Bounds::Count(min, max), Value::Count(value)) => (min..=max).contains(&value),
                _ => true,
            };
            if !inside {
                issues.push(ConfigIssue {
                    path,
                    message: format!("must be {}", range.bounds.describe()),
                });
            }
        }
        issues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[providers.kn]\nkind = \"knouds\"\napi_key_env = \"K\"\n";

    fn paths(text: &str) -> Vec<String> {
        match Config::parse(text, Vec::new()) {
            Ok(_) => Vec::new(),
            Err(err) => err.issues.into_iter().map(|issue| issue.path).collect(),
        }
    }

    #[test]
    fn every_ranged_value_has_a_table_entry() {
        let config = Config::parse(BASE, Vec::new()).unwrap();
        for (key, _, _) in config.ranged_values() {
            assert!(RANGES.iter().any(|range| range.key == key), "{key}");
        }
        assert!(
            config.range_issues().is_empty(),
            "the defaults are in range"
        );
    }

    #[test]
    fn absurd_values_are_reported_with_their_paths_all_at_once() {
        let text = format!(
            "{BASE}[providers.kn.circuit_breaker]\nopen_for = \"9000000h\"\n\
             [runs]\nttl = \"9000000h\"\nmax_watch = \"0s\"\n\
             [server]\nmax_queued_requests = 1000000000\nmax_request_bytes = 99999999999\n"
        );
        let mut found = paths(&text);
        found.sort();
        assert_eq!(
            found,
            vec![
                "providers.kn.circuit_breaker.open_for",
                "runs.max_watch",
                "runs.ttl",
                "server.max_queued_requests",
                "server.max_request_bytes",
            ]
        );
        let err = Config::parse(&text, Vec::new()).unwrap_err();
        assert!(
            err.to_string()
                .contains("runs.ttl: must be between 1s and 720h"),
            "{err}"
        );
    }

    #[test]
    fn durations_format_as_the_config_writes_them() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::ZERO), "0ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(DAY), "24h");
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        const KEYS: &[&str] = &[
            "server.default_deadline",
            "server.shutdown_grace",
            "server.max_request_bytes",
            "server.max_concurrent_requests",
            "server.max_queued_requests",
            "server.listen",
            "webhooks.tolerance",
            "webhooks.max_body_bytes",
            "webhooks.forward_max_attempts",
            "runs.capacity",
            "runs.ttl",
            "runs.poll_initial",
            "runs.poll_max",
            "runs.max_watch",
            "runs.max_background_runs",
            "runs.owner_lease",
            "idempotency.ttl",
            "idempotency.capacity",
            "schemas.ttl",
            "schemas.capacity",
            "schemas.fetch_timeout",
            "providers.kn.timeout",
            "providers.kn.default_variant",
            "providers.kn.retry.max_attempts",
            "providers.kn.retry.budget_percent",
            "providers.kn.retry.initial_backoff",
            "providers.kn.circuit_breaker.open_for",
            "providers.kn.limits.window",
            "providers.kn.limits.requests_per_window",
            "telemetry.sample_ratio",
            "log.level",
        ];

        fn hostile_value() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("9000000h".to_owned()),
                Just("1e300".to_owned()),
                Just("-1".to_owned()),
                Just("NaN".to_owned()),
                Just("inf".to_owned()),
                Just("18446744073709551615".to_owned()),
                Just("9223372036854775807".to_owned()),
                Just("0".to_owned()),
                Just(String::new()),
                Just("true".to_owned()),
                Just("0.0000001ms".to_owned()),
                Just("99999999999999999999s".to_owned()),
                any::<u64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|n| n.to_string()),
                (
                    any::<u32>(),
                    prop::sample::select(vec!["ms", "s", "m", "h", "d", ""])
                )
                    .prop_map(|(n, unit)| format!("{n}{unit}")),
                "[ -~]{0,12}",
            ]
        }

        fn toml_literal(value: &str) -> String {
            if value.parse::<f64>().is_ok() || value == "true" {
                value.to_owned()
            } else {
                format!("{value:?}")
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn parsing_never_panics_and_what_parses_is_in_range(
                file in prop::collection::vec((prop::sample::select(KEYS), hostile_value()), 0..6),
                env in prop::collection::vec((prop::sample::select(KEYS), hostile_value()), 0..4),
                garbage in "[ -~\n]{0,40}",
            ) {
                let mut text = String::from(BASE);
                for (key, value) in &file {
                    let (table, field) = key.rsplit_once('.').unwrap_or(("", key));
                    text.push_str(&format!("[{table}]\n{field} = {}\n", toml_literal(value)));
                }
                let env: Vec<(String, String)> = env
                    .iter()
                    .map(|(key, value)| {
                        (
                            format!("FLOWGATE__{}", key.replace('.', "__").to_uppercase()),
                            value.clone(),
                        )
                    })
                    .collect();
                let _ = Config::parse(&format!("{text}{garbage}"), env.clone());
                if let Ok(config) = Config::parse(&text, env) {
                    prop_assert!(config.range_issues().is_empty());
                    prop_assert!(config.runs.ttl <= Duration::from_secs(30 * 24 * 3600));
                }
            }
        }
    }
}
