//! `[providers.<name>]`: dialect, key, timeouts and resilience.

use super::*;

/// `[providers.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `fetchhive`, `aitutor` or `knouds`.
    pub kind: KindConfig,
    /// Base URL; defaults to the vendor's documented public URL.
    pub base_url: Option<String>,
    /// Name of the environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// Path of a file holding the API key (surrounding whitespace trimmed).
    pub api_key_file: Option<PathBuf>,
    /// Upstream request timeout; defaults per dialect (120 s, 310 s, 300 s).
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
    /// Fetch Hive only: the variant used when a call names none.
    pub default_variant: Option<String>,
    /// Environment variable holding the secret(s) the provider signs its
    /// webhooks with (Knouds: per key; several comma-separated for rotation).
    pub webhook_secret_env: Option<String>,
    /// Declared workflow input schemas, by workflow key (see
    /// [`WorkflowSchemaConfig`]).
    #[serde(default)]
    pub workflows: BTreeMap<String, WorkflowSchemaConfig>,
    /// `[providers.<name>.retry]`.
    #[serde(default)]
    pub retry: RetryConfig,
    /// `[providers.<name>.circuit_breaker]`.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
    /// `[providers.<name>.limits]`.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// `[providers.<name>.retry]`: see [`RetryPolicy`] for the rules.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per call, the first included (default 3; 1 = no retries).
    pub max_attempts: Option<u32>,
    /// First backoff (default 100ms), doubling with jitter.
    #[serde(default, deserialize_with = "optional_duration")]
    pub initial_backoff: Option<Duration>,
    /// Longest backoff (default 2s).
    #[serde(default, deserialize_with = "optional_duration")]
    pub max_backoff: Option<Duration>,
    /// Retries as a percentage of recent calls (default 20).
    pub budget_percent: Option<f32>,
    /// Retries per second always allowed (default 10).
    pub min_retries_per_second: Option<u32>,
    /// Retry 5xx and upstream timeouts of calls with an idempotency key
    /// (default true).
    pub idempotent_retries: Option<bool>,
}

/// `[providers.<name>.circuit_breaker]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the circuit (default 5; 0 = off).
    pub failure_threshold: Option<u32>,
    /// How long the circuit stays open before a probe (default 30s).
    #[serde(default, deserialize_with = "optional_duration")]
    pub open_for: Option<Duration>,
}

/// `[providers.<name>.limits]`: the gateway's own limits for the key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Requests allowed per `window` (default: no local limit).
    pub requests_per_window: Option<u32>,
    /// The window of `requests_per_window` (default 1m).
    #[serde(default, deserialize_with = "optional_duration")]
    pub window: Option<Duration>,
    /// Upstream calls in flight at once (default: no limit), e.g. a Fetch
    /// Hive plan's 1, 3 or 5 concurrent runs.
    pub max_concurrent_runs: Option<u32>,
    /// How long a call waits for a run slot (default 5s).
    #[serde(default, deserialize_with = "optional_duration")]
    pub concurrency_wait: Option<Duration>,
}

impl ProviderConfig {
    /// The resilience policy: configured values over the defaults.
    pub fn resilience(&self) -> Resilience {
        let defaults = Resilience::default();
        let retry = &self.retry;
        let circuit = &self.circuit_breaker;
        let limits = &self.limits;
        Resilience {
            retry: RetryPolicy {
                max_attempts: retry.max_attempts.unwrap_or(defaults.retry.max_attempts),
                initial_backoff: retry
                    .initial_backoff
                    .unwrap_or(defaults.retry.initial_backoff),
                max_backoff: retry.max_backoff.unwrap_or(defaults.retry.max_backoff),
                budget_percent: retry
                    .budget_percent
                    .unwrap_or(defaults.retry.budget_percent),
                min_retries_per_second: retry
                    .min_retries_per_second
                    .unwrap_or(defaults.retry.min_retries_per_second),
                idempotent_retries: retry
                    .idempotent_retries
                    .unwrap_or(defaults.retry.idempotent_retries),
            },
            circuit: CircuitPolicy {
                failure_threshold: circuit
                    .failure_threshold
                    .unwrap_or(defaults.circuit.failure_threshold),
                open_for: circuit.open_for.unwrap_or(defaults.circuit.open_for),
            },
            limits: LocalLimits {
                requests_per_window: limits.requests_per_window,
                window: limits.window.unwrap_or(defaults.limits.window),
                max_concurrent_runs: limits.max_concurrent_runs,
                concurrency_wait: limits
                    .concurrency_wait
                    .unwrap_or(defaults.limits.concurrency_wait),
            },
        }
    }
}

/// The dialect names accepted in `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KindConfig {
    /// Fetch Hive.
    Fetchhive,
    /// AI Tutor.
    Aitutor,
    /// Knouds.
    Knouds,
}

impl From<KindConfig> for ProviderKind {
    fn from(kind: KindConfig) -> Self {
        match kind {
            KindConfig::Fetchhive => ProviderKind::FetchHive,
            KindConfig::Aitutor => ProviderKind::AiTutor,
            KindConfig::Knouds => ProviderKind::Knouds,
        }
    }
}

impl Config {
    /// Loads every provider's key and returns their settings. Fails with the
    /// path of each key that cannot be read; the key itself is never shown.
    pub fn provider_settings(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<ProviderSettings>, ConfigError> {
        let mut settings = Vec::new();
        let mut issues = Vec::new();
        for (name, provider) in &self.providers {
            let kind = ProviderKind::from(provider.kind);
            let key = read_secret(
                provider.api_key_env.as_deref(),
                provider.api_key_file.as_deref(),
                &env,
            )
            .and_then(|key| key.ok_or(SecretProblem::Env("required".to_owned())))
            .map_err(|problem| problem.at("api_key_env", "api_key_file"));
            let key = key.and_then(|key| {
                if key.bytes().all(|b| b.is_ascii_graphic()) {
                    Ok(key)
                } else {
                    Err((
                        "api_key_env",
                        "the key holds characters that cannot be sent in an HTTP header".to_owned(),
                    ))
                }
            });
            match key {
                Ok(key) => {
                    let mut provider_settings =
                        ProviderSettings::new(name.clone(), kind, SecretString::new(key));
                    if let Some(url) = &provider.base_url {
                        provider_settings.base_url = url.trim_end_matches('/').to_owned();
                    }
                    if let Some(timeout) = provider.timeout {
                        provider_settings.timeout = timeout;
                    }
                    provider_settings.default_variant = provider.default_variant.clone();
                    provider_settings.resilience = provider.resilience();
                    settings.push(provider_settings);
                }
                Err((field, message)) => issues.push(ConfigIssue {
                    path: format!("providers.{name}.{field}"),
                    message,
                }),
            }
        }
        if issues.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError { issues })
        }
    }
}
