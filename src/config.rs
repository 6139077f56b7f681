//! The configuration file: typed, strict, overridable from the environment.
//!
//! One TOML file. Unknown keys and bad values are rejected with the path of
//! the offending field (`providers.knouds.timeout: …`). Every key can be
//! overridden by an environment variable `FLOWGATE__<PATH>` with `__`
//! between path segments, e.g. `FLOWGATE__SERVER__LISTEN=0.0.0.0:50051` or
//! `FLOWGATE__PROVIDERS__KNOUDS__TIMEOUT=90s`. Provider keys are never
//! written in the file: each provider names an environment variable
//! (`api_key_env`) or a file (`api_key_file`, e.g. a mounted Kubernetes
//! Secret) that holds it.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use flowgate_core::{ProviderKind, SecretString};
use flowgate_providers::{CircuitPolicy, LocalLimits, ProviderSettings, Resilience, RetryPolicy};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "FLOWGATE__";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The gRPC listener and request handling.
    #[serde(default)]
    pub server: ServerConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Traces and metrics.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The providers, by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC listen address. Default `127.0.0.1:50051`.
    #[serde(default = "ServerConfig::default_listen")]
    pub listen: SocketAddr,
    /// Deadline applied to calls whose caller set none. Default `300s`.
    #[serde(
        default = "ServerConfig::default_deadline",
        deserialize_with = "duration"
    )]
    pub default_deadline: Duration,
    /// How long SIGTERM waits for in-flight calls. Default `30s`.
    #[serde(
        default = "ServerConfig::default_shutdown_grace",
        deserialize_with = "duration"
    )]
    pub shutdown_grace: Duration,
    /// Largest accepted gRPC request message in bytes. Default 4 MiB.
    #[serde(default = "ServerConfig::default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Most calls handled at once; more wait in line. Default 1024.
    #[serde(default = "ServerConfig::default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// The admin HTTP listener (`GET /metrics`). Default `127.0.0.1:9464`.
    #[serde(default = "ServerConfig::default_admin_listen")]
    pub admin_listen: SocketAddr,
}

impl ServerConfig {
    fn default_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 50051))
    }
    fn default_deadline() -> Duration {
        Duration::from_secs(300)
    }
    fn default_shutdown_grace() -> Duration {
        Duration::from_secs(30)
    }
    fn default_max_request_bytes() -> usize {
        4 * 1024 * 1024
    }
    fn default_max_concurrent_requests() -> usize {
        1024
    }
    fn default_admin_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9464))
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: Self::default_listen(),
            default_deadline: Self::default_deadline(),
            shutdown_grace: Self::default_shutdown_grace(),
            max_request_bytes: Self::default_max_request_bytes(),
            max_concurrent_requests: Self::default_max_concurrent_requests(),
            admin_listen: Self::default_admin_listen(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `flowgate=debug,info`;
    /// `RUST_LOG` wins when set. Default `info`.
    #[serde(default = "LogConfig::default_level")]
    pub level: String,
}

impl LogConfig {
    fn default_level() -> String {
        "info".to_owned()
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: Self::default_level(),
        }
    }
}

pub use flowgate_telemetry::LogFormat;

/// `[telemetry]`: traces and metrics. Each key wins over its standard
/// `OTEL_*` variable; unset keys defer to them (see `flowgate_telemetry`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector endpoint, e.g. `http://otel-collector:4317`, for
    /// traces and metrics. Unset: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`;
    /// none of them: no export. `""` turns export off.
    pub otlp_endpoint: Option<String>,
    /// `service.name`. Unset: `OTEL_SERVICE_NAME`, else `flowgate`.
    pub service_name: Option<String>,
    /// Share of new traces recorded, 0.0 to 1.0 (a caller's sampling
    /// decision is kept). Unset: `OTEL_TRACES_SAMPLER`, else all.
    pub sample_ratio: Option<f64>,
    /// Serve `GET /metrics` (Prometheus) on `server.admin_listen`.
    /// Default true.
    #[serde(default = "TelemetryConfig::default_prometheus")]
    pub prometheus: bool,
}

impl TelemetryConfig {
    fn default_prometheus() -> bool {
        true
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: None,
            sample_ratio: None,
            prometheus: Self::default_prometheus(),
        }
    }
}

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

/// One configuration problem, at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted path of the field (`providers.kn.timeout`), or the file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem found, so one run of `check-config` shows them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in file order.
    pub issues: Vec<ConfigIssue>,
}

impl ConfigError {
    fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            issues: vec![ConfigIssue {
                path: path.into(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, issue) in self.issues.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {}", issue.path, issue.message)?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads `path`, applies `FLOWGATE__…` overrides from the process
    /// environment, and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigError::one(path.display().to_string(), format!("cannot read: {err}"))
        })?;
        Self::parse(&text, std::env::vars())
    }

    /// Parses TOML `text`, applies overrides from `env`, validates.
    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut tree: Value = toml::from_str(text).map_err(|err| {
            let message = err.message().to_owned();
            let path = err
                .span()
                .map(|span| format!("line {}", line_of(text, span.start)))
                .unwrap_or_else(|| "config".to_owned());
            ConfigError::one(path, message)
        })?;
        apply_env_overrides(&mut tree, env)?;
        let config: Config = serde_path_to_error::deserialize(tree).map_err(|err| {
            let path = err.path().to_string();
            ConfigError::one(
                if path == "." { "config".into() } else { path },
                err.into_inner().to_string(),
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut issues = Vec::new();
        let mut issue = |path: String, message: String| issues.push(ConfigIssue { path, message });
        if self.providers.is_empty() {
            issue(
                "providers".into(),
                "at least one provider must be configured".into(),
            );
        }
        let telemetry = &self.telemetry;
        if let Some(endpoint) = telemetry.otlp_endpoint.as_deref().map(str::trim)
            && !endpoint.is_empty()
        {
            match url::Url::parse(endpoint) {
                Ok(url) if url.scheme() == "http" => {}
                Ok(url) if url.scheme() == "https" => issue(
                    "telemetry.otlp_endpoint".into(),
                    "https is not supported (flowgate speaks plaintext OTLP/gRPC): point it at a collector on the node or in the pod".into(),
                ),
                Ok(_) => issue(
                    "telemetry.otlp_endpoint".into(),
                    "must be an http:// URL such as http://otel-collector:4317".into(),
                ),
                Err(err) => issue(
                    "telemetry.otlp_endpoint".into(),
                    format!("not a URL: {err}"),
                ),
            }
        }
        if let Some(ratio) = telemetry.sample_ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            issue(
                "telemetry.sample_ratio".into(),
                "must be between 0.0 and 1.0".into(),
            );
        }
        if telemetry
            .service_name
            .as_deref()
            .is_some_and(|name| name.trim().is_empty())
        {
            issue("telemetry.service_name".into(), "must not be empty".into());
        }
        if self.server.default_deadline.is_zero() {
            issue(
                "server.default_deadline".into(),
                "must be greater than zero".into(),
            );
        }
        if self.server.max_request_bytes < 1024 {
            issue(
                "server.max_request_bytes".into(),
                "must be at least 1024".into(),
            );
        }
        if self.server.max_concurrent_requests == 0 {
            issue(
                "server.max_concurrent_requests".into(),
                "must be at least 1".into(),
            );
        }
        for (name, provider) in &self.providers {
            let at = |field: &str| format!("providers.{name}.{field}");
            if !is_valid_name(name) {
                issue(
                    format!("providers.{name}"),
                    "provider names are 1 to 63 lowercase letters, digits, '_' or '-', starting with a letter".into(),
                );
            }
            match (&provider.api_key_env, &provider.api_key_file) {
                (Some(_), Some(_)) => issue(
                    at("api_key_env"),
                    "set api_key_env or api_key_file, not both".into(),
                ),
                (None, None) => issue(
                    at("api_key_env"),
                    "required: the environment variable (api_key_env) or file (api_key_file) holding the provider key".into(),
                ),
                (Some(var), None) if var.trim().is_empty() => {
                    issue(at("api_key_env"), "must name a variable".into())
                }
                _ => {}
            }
            if let Some(url) = &provider.base_url
                && let Err(message) = check_base_url(url)
            {
                issue(at("base_url"), message);
            }
            if let Some(timeout) = provider.timeout
                && (timeout.is_zero() || timeout > Duration::from_secs(3600))
            {
                issue(at("timeout"), "must be between 1ms and 1h".into());
            }
            let resilience = provider.resilience();
            if resilience.retry.max_attempts == 0 || resilience.retry.max_attempts > 10 {
                issue(at("retry.max_attempts"), "must be between 1 and 10".into());
            }
            if !(0.0..=1000.0).contains(&resilience.retry.budget_percent) {
                issue(
                    at("retry.budget_percent"),
                    "must be between 0 and 1000".into(),
                );
            }
            if resilience.retry.min_retries_per_second > 10_000 {
                issue(
                    at("retry.min_retries_per_second"),
                    "must be at most 10000".into(),
                );
            }
            if resilience.retry.initial_backoff > resilience.retry.max_backoff {
                issue(
                    at("retry.initial_backoff"),
                    "must not exceed retry.max_backoff".into(),
                );
            }
            if resilience.circuit.open_for.is_zero() {
                issue(
                    at("circuit_breaker.open_for"),
                    "must be greater than zero".into(),
                );
            }
            if resilience.limits.requests_per_window == Some(0) {
                issue(
                    at("limits.requests_per_window"),
                    "must be at least 1".into(),
                );
            }
            if resilience.limits.window.is_zero() {
                issue(at("limits.window"), "must be greater than zero".into());
            }
            if resilience.limits.max_concurrent_runs == Some(0) {
                issue(
                    at("limits.max_concurrent_runs"),
                    "must be at least 1".into(),
                );
            }
            if provider.default_variant.is_some() && provider.kind != KindConfig::Fetchhive {
                issue(
                    at("default_variant"),
                    "only fetchhive providers have variants".into(),
                );
            }
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { issues })
        }
    }

    /// What telemetry should do: `[log]` and `[telemetry]` combined.
    pub fn telemetry_settings(&self) -> flowgate_telemetry::TelemetrySettings {
        flowgate_telemetry::TelemetrySettings {
            log_format: self.log.format,
            log_level: self.log.level.clone(),
            otlp_endpoint: self.telemetry.otlp_endpoint.clone(),
            service_name: self.telemetry.service_name.clone(),
            sample_ratio: self.telemetry.sample_ratio,
            prometheus: self.telemetry.prometheus,
        }
    }

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
            let key = match (&provider.api_key_env, &provider.api_key_file) {
                (Some(var), _) => env(var)
                    .map(|key| key.trim().to_owned())
                    .filter(|key| !key.is_empty())
                    .ok_or_else(|| {
                        (
                            "api_key_env",
                            format!("environment variable {var} is not set or empty"),
                        )
                    }),
                (None, Some(file)) => std::fs::read_to_string(file)
                    .map(|key| key.trim().to_owned())
                    .map_err(|err| {
                        (
                            "api_key_file",
                            format!("cannot read {}: {err}", file.display()),
                        )
                    })
                    .and_then(|key| {
                        if key.is_empty() {
                            Err(("api_key_file", format!("{} is empty", file.display())))
                        } else {
                            Ok(key)
                        }
                    }),
                (None, None) => Err(("api_key_env", "required".to_owned())),
            };
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

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |head| head.matches('\n').count() + 1)
}

fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 63
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn check_base_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|err| format!("not a URL: {err}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not hold credentials: use api_key_env or api_key_file".into());
    }
    Ok(())
}

/// Applies `FLOWGATE__A__B=value` as `a.b = value`. Values that read as a
/// TOML integer, float or boolean take that type; anything else is a string.
fn apply_env_overrides(
    tree: &mut Value,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    overrides.sort();
    for (name, raw) in overrides {
        let segments: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if segments.iter().any(String::is_empty) {
            return Err(ConfigError::one(
                name,
                "empty path segment in environment override",
            ));
        }
        let value = scalar(&raw);
        let mut node = &mut *tree;
        for (index, segment) in segments.iter().enumerate() {
            let Value::Object(map) = node else {
                return Err(ConfigError::one(
                    segments[..index].join("."),
                    format!("{name} overrides a value that is not a table"),
                ));
            };
            if index + 1 == segments.len() {
                map.insert(segment.clone(), value);
                break;
            }
            node = map
                .entry(segment.clone())
                .or_insert_with(|| Value::Object(Default::default()));
        }
    }
    Ok(())
}

fn scalar(raw: &str) -> Value {
    match raw {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(integer) = raw.parse::<i64>() {
        return Value::from(integer);
    }
    if raw.contains('.')
        && let Ok(float) = raw.parse::<f64>()
        && float.is_finite()
        && raw.parse::<std::net::IpAddr>().is_err()
    {
        return Value::from(float);
    }
    Value::String(raw.to_owned())
}

/// Parses `250ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 250ms, 30s, 5m or 1h"))?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|err| format!("{text:?}: {err}"))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationText {
    Seconds(f64),
    Text(String),
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    match DurationText::deserialize(deserializer)? {
        DurationText::Seconds(seconds) => {
            Duration::try_from_secs_f64(seconds).map_err(serde::de::Error::custom)
        }
        DurationText::Text(text) => parse_duration(&text).map_err(serde::de::Error::custom),
    }
}

fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        [server]
        listen = "0.0.0.0:50051"
        default_deadline = "60s"

        [providers.fh]
        kind = "fetchhive"
        api_key_env = "FH_KEY"
        default_variant = "default"

        [providers.kn]
        kind = "knouds"
        base_url = "http://127.0.0.1:8700/knouds/"
        api_key_env = "KN_KEY"
        timeout = "90s"
    "#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn example_parses_with_defaults() {
        let config = Config::parse(EXAMPLE, env(&[])).unwrap();
        assert_eq!(config.server.listen.port(), 50051);
        assert_eq!(config.server.default_deadline, Duration::from_secs(60));
        assert_eq!(config.server.shutdown_grace, Duration::from_secs(30));
        assert_eq!(
            config.providers["kn"].timeout,
            Some(Duration::from_secs(90))
        );
        let keys = |var: &str| Some(format!("key-for-{var}"));
        let settings = config.provider_settings(keys).unwrap();
        assert_eq!(settings[0].base_url, "https://api.fetchhive.com/v1");
        assert_eq!(settings[1].base_url, "http://127.0.0.1:8700/knouds");
        assert_eq!(settings[1].api_key.expose(), "key-for-KN_KEY");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let text = EXAMPLE.replace("timeout = \"90s\"", "timeout = \"90s\"\ntimout = 3");
        let err = Config::parse(&text, env(&[])).unwrap_err();
        assert_eq!(err.issues[0].path, "providers.kn.timout");
        assert!(
            err.issues[0].message.contains("unknown field `timout`"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        let text = EXAMPLE.replace("\"90s\"", "\"soon\"");
        let err = Config::parse(&text, env(&[])).unwrap_err();
        assert_eq!(err.issues[0].path, "providers.kn.timeout");
        let text = EXAMPLE.replace("kind = \"knouds\"", "kind = \"openai\"");
        let err = Config::parse(&text, env(&[])).unwrap_err();
        assert_eq!(err.issues[0].path, "providers.kn.kind");
    }

    #[test]
    fn env_overrides_win() {
        let config = Config::parse(
            EXAMPLE,
            env(&[
                ("FLOWGATE__SERVER__LISTEN", "127.0.0.1:6000"),
                ("FLOWGATE__PROVIDERS__KN__TIMEOUT", "5"),
                ("FLOWGATE__SERVER__MAX_CONCURRENT_REQUESTS", "8"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.listen.port(), 6000);
        assert_eq!(config.server.max_concurrent_requests, 8);
        assert_eq!(config.providers["kn"].timeout, Some(Duration::from_secs(5)));
    }

    #[test]
    fn env_override_of_an_unknown_key_is_rejected() {
        let err = Config::parse(EXAMPLE, env(&[("FLOWGATE__SERVER__LISTN", "x")])).unwrap_err();
        assert_eq!(err.issues[0].path, "server.listn");
        assert!(err.issues[0].message.contains("listn"));
    }

    #[test]
    fn validation_lists_every_problem() {
        let text = r#"
            [providers.Bad]
            kind = "aitutor"
            api_key_env = "A"
            api_key_file = "/x"
            default_variant = "v"
            base_url = "ftp://x"
        "#;
        let err = Config::parse(text, env(&[])).unwrap_err();
        let paths: Vec<_> = err.issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "providers.Bad",
                "providers.Bad.api_key_env",
                "providers.Bad.base_url",
                "providers.Bad.default_variant"
            ]
        );
    }

    #[test]
    fn missing_key_names_the_variable_not_a_value() {
        let config = Config::parse(EXAMPLE, env(&[])).unwrap();
        let err = config.provider_settings(|_| None).unwrap_err();
        assert_eq!(err.issues[0].path, "providers.fh.api_key_env");
        assert!(err.issues[0].message.contains("FH_KEY"));
    }

    #[test]
    fn resilience_settings_override_defaults_and_are_checked() {
        let text = EXAMPLE.replace(
            "timeout = \"90s\"",
            "timeout = \"90s\"\n[providers.kn.retry]\nmax_attempts = 5\n[providers.kn.limits]\nmax_concurrent_runs = 3\n[providers.kn.circuit_breaker]\nopen_for = \"5s\"",
        );
        let config = Config::parse(&text, env(&[])).unwrap();
        let resilience = config.providers["kn"].resilience();
        assert_eq!(resilience.retry.max_attempts, 5);
        assert_eq!(resilience.retry.initial_backoff, Duration::from_millis(100));
        assert_eq!(resilience.limits.max_concurrent_runs, Some(3));
        assert_eq!(resilience.circuit.open_for, Duration::from_secs(5));
        assert_eq!(config.providers["fh"].resilience(), Resilience::default());

        let text = EXAMPLE.replace(
            "timeout = \"90s\"",
            "[providers.kn.retry]\nmax_attempts = 0\nbudget_percent = -1.0",
        );
        let err = Config::parse(&text, env(&[])).unwrap_err();
        let paths: Vec<_> = err.issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "providers.kn.retry.max_attempts",
                "providers.kn.retry.budget_percent"
            ]
        );
    }

    #[test]
    fn telemetry_section_is_strict_and_checked() {
        let config = Config::parse(EXAMPLE, env(&[])).unwrap();
        assert!(config.telemetry.prometheus);
        assert_eq!(config.server.admin_listen.port(), 9464);
        let settings = config.telemetry_settings();
        assert_eq!(settings.otlp_endpoint, None);

        let text = format!(
            "{EXAMPLE}\n[telemetry]\notlp_endpoint = \"http://collector:4317\"\nservice_name = \"gw\"\nsample_ratio = 0.25\nprometheus = false\n"
        );
        let config = Config::parse(
            &text,
            env(&[("FLOWGATE__SERVER__ADMIN_LISTEN", "0.0.0.0:9100")]),
        )
        .unwrap();
        let settings = config.telemetry_settings();
        assert_eq!(
            settings.otlp_endpoint.as_deref(),
            Some("http://collector:4317")
        );
        assert_eq!(settings.sample_ratio, Some(0.25));
        assert!(!settings.prometheus);
        assert_eq!(config.server.admin_listen.port(), 9100);

        let text = format!(
            "{EXAMPLE}\n[telemetry]\notlp_endpoint = \"https://c:4317\"\nsample_ratio = 2.0\nservice_name = \" \"\nexporter = \"x\"\n"
        );
        let err = Config::parse(&text, env(&[])).unwrap_err();
        assert_eq!(err.issues[0].path, "telemetry.exporter");
        let text = text.replace("exporter = \"x\"", "");
        let err = Config::parse(&text, env(&[])).unwrap_err();
        let paths: Vec<_> = err.issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "telemetry.otlp_endpoint",
                "telemetry.sample_ratio",
                "telemetry.service_name"
            ]
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("3 fortnights").is_err());
    }
}
