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
//!
//! Workflow schemas: `[schemas]` sizes the schema cache, and
//! `[providers.<name>.workflows."<workflow>"]` declares a workflow's inputs
//! (`inputs = [{ name = "topic", type = "string", required = true }]`) for
//! dialects without a schema endpoint, or to override Knouds discovery.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use flowgate_core::{
    DeclaredSchemas, ProviderKind, SchemaCacheSettings, SchemaField, SecretString, ValueType,
    WorkflowSchema,
};
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
    /// Callback ingress and forwarding.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// Run tracking.
    #[serde(default)]
    pub runs: RunsConfig,
    /// The workflow schema cache.
    #[serde(default)]
    pub schemas: SchemasConfig,
}

/// `[webhooks]`: the callback ingress listener and callback forwarding.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Where the ingress listener (`POST /webhooks/{provider}`) binds; no
    /// listener when absent.
    pub listen: Option<SocketAddr>,
    /// The ingress's public base URL, given to providers as the callback
    /// URL (Fetch Hive async runs then report to flowgate). When absent,
    /// callers' callback URLs are passed through and runs are polled.
    pub public_url: Option<String>,
    /// Environment variable holding flowgate's Standard Webhooks signing
    /// secret(s) (`whsec_…`; several, comma-separated, for rotation: the
    /// first signs, all verify). Forwarding is off without one.
    pub signing_secret_env: Option<String>,
    /// File holding the signing secret(s), instead of the variable.
    pub signing_secret_file: Option<PathBuf>,
    /// Signature timestamp tolerance. Default `300s`.
    #[serde(
        default = "WebhooksConfig::default_tolerance",
        deserialize_with = "duration"
    )]
    pub tolerance: Duration,
    /// Largest accepted callback body. Default 1 MiB.
    #[serde(default = "WebhooksConfig::default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Delivery attempts per forwarded callback. Default 8.
    #[serde(default = "WebhooksConfig::default_forward_attempts")]
    pub forward_max_attempts: u32,
}

impl WebhooksConfig {
    fn default_tolerance() -> Duration {
        Duration::from_secs(300)
    }
    fn default_max_body_bytes() -> usize {
        1024 * 1024
    }
    fn default_forward_attempts() -> u32 {
        8
    }
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            listen: None,
            public_url: None,
            signing_secret_env: None,
            signing_secret_file: None,
            tolerance: Self::default_tolerance(),
            max_body_bytes: Self::default_max_body_bytes(),
            forward_max_attempts: Self::default_forward_attempts(),
        }
    }
}

/// `[runs]`: the run registry and status polling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsConfig {
    /// Most runs kept in memory. Default 100000.
    #[serde(default = "RunsConfig::default_capacity")]
    pub capacity: u64,
    /// How long a run is kept after its last change. Default `24h`.
    #[serde(default = "RunsConfig::default_ttl", deserialize_with = "duration")]
    pub ttl: Duration,
    /// First status-poll interval. Default `500ms`.
    #[serde(
        default = "RunsConfig::default_poll_initial",
        deserialize_with = "duration"
    )]
    pub poll_initial: Duration,
    /// Longest status-poll interval. Default `10s`.
    #[serde(
        default = "RunsConfig::default_poll_max",
        deserialize_with = "duration"
    )]
    pub poll_max: Duration,
    /// Longest a run is polled. Default `1h`.
    #[serde(
        default = "RunsConfig::default_max_watch",
        deserialize_with = "duration"
    )]
    pub max_watch: Duration,
    /// Most gateway-run async runs (AI Tutor) at once. Default 256.
    #[serde(default = "RunsConfig::default_max_background_runs")]
    pub max_background_runs: usize,
}

impl RunsConfig {
    fn default_capacity() -> u64 {
        100_000
    }
    fn default_ttl() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    fn default_poll_initial() -> Duration {
        Duration::from_millis(500)
    }
    fn default_poll_max() -> Duration {
        Duration::from_secs(10)
    }
    fn default_max_watch() -> Duration {
        Duration::from_secs(3600)
    }
    fn default_max_background_runs() -> usize {
        256
    }
}

impl Default for RunsConfig {
    fn default() -> Self {
        Self {
            capacity: Self::default_capacity(),
            ttl: Self::default_ttl(),
            poll_initial: Self::default_poll_initial(),
            poll_max: Self::default_poll_max(),
            max_watch: Self::default_max_watch(),
            max_background_runs: Self::default_max_background_runs(),
        }
    }
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

pub use flowgate_telemetry_setup::LogFormat;

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

/// `[schemas]`: the cache of discovered workflow schemas.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemasConfig {
    /// How long a fetched schema is trusted. Default `5m`.
    #[serde(default = "SchemasConfig::default_ttl", deserialize_with = "duration")]
    pub ttl: Duration,
    /// Most cached (provider, workflow) entries. Default 10000.
    #[serde(default = "SchemasConfig::default_capacity")]
    pub capacity: u64,
    /// How long an unknown workflow (404) is remembered. Default `30s`.
    #[serde(
        default = "SchemasConfig::default_negative_ttl",
        deserialize_with = "duration"
    )]
    pub negative_ttl: Duration,
    /// How long a failed schema fetch is remembered (calls go unvalidated
    /// meanwhile). Default `10s`.
    #[serde(
        default = "SchemasConfig::default_failure_ttl",
        deserialize_with = "duration"
    )]
    pub failure_ttl: Duration,
    /// Longest a schema fetch may take. Default `5s`.
    #[serde(
        default = "SchemasConfig::default_fetch_timeout",
        deserialize_with = "duration"
    )]
    pub fetch_timeout: Duration,
}

impl SchemasConfig {
    fn default_ttl() -> Duration {
        SchemaCacheSettings::default().ttl
    }
    fn default_capacity() -> u64 {
        SchemaCacheSettings::default().capacity
    }
    fn default_negative_ttl() -> Duration {
        SchemaCacheSettings::default().negative_ttl
    }
    fn default_failure_ttl() -> Duration {
        SchemaCacheSettings::default().failure_ttl
    }
    fn default_fetch_timeout() -> Duration {
        SchemaCacheSettings::default().fetch_timeout
    }

    /// The engine's cache settings.
    pub fn settings(&self) -> SchemaCacheSettings {
        SchemaCacheSettings {
            ttl: self.ttl,
            capacity: self.capacity,
            negative_ttl: self.negative_ttl,
            failure_ttl: self.failure_ttl,
            fetch_timeout: self.fetch_timeout,
        }
    }
}

impl Default for SchemasConfig {
    fn default() -> Self {
        Self {
            ttl: Self::default_ttl(),
            capacity: Self::default_capacity(),
            negative_ttl: Self::default_negative_ttl(),
            failure_ttl: Self::default_failure_ttl(),
            fetch_timeout: Self::default_fetch_timeout(),
        }
    }
}

/// `[providers.<name>.workflows."<workflow>"]`: a declared input schema.
///
/// The key is the workflow as calls address it: a Knouds slug, an AI Tutor
/// workflow id, or a Fetch Hive `deployment/variant` (one variant) or
/// `deployment` (every variant without its own entry). Declared inputs are
/// enforced exactly like discovered ones; for Knouds they replace discovery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSchemaConfig {
    /// Display name returned by GetWorkflowSchema.
    pub name: Option<String>,
    /// Description returned by GetWorkflowSchema.
    pub description: Option<String>,
    /// The inputs; an empty list means the workflow takes none.
    pub inputs: Vec<InputConfig>,
}

/// One declared input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// The input's name.
    pub name: String,
    /// Its JSON type.
    #[serde(rename = "type")]
    pub value_type: InputType,
    /// True when calls must give it (unless it has a default).
    #[serde(default)]
    pub required: bool,
    /// What it is for.
    pub description: Option<String>,
    /// The value the provider uses when it is omitted.
    pub default: Option<Value>,
}

/// The type names accepted for a declared input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// A JSON string.
    String,
    /// A JSON number.
    Number,
    /// A boolean.
    Boolean,
    /// A JSON array.
    Array,
    /// A JSON object.
    Object,
    /// Any value (not enforced).
    Any,
}

impl From<InputType> for ValueType {
    fn from(kind: InputType) -> Self {
        match kind {
            InputType::String => ValueType::String,
            InputType::Number => ValueType::Number,
            InputType::Boolean => ValueType::Boolean,
            InputType::Array => ValueType::Array,
            InputType::Object => ValueType::Object,
            InputType::Any => ValueType::Any,
        }
    }
}

impl WorkflowSchemaConfig {
    /// The engine's schema.
    pub fn schema(&self) -> WorkflowSchema {
        WorkflowSchema {
            name: self.name.clone(),
            description: self.description.clone(),
            fields: self
                .inputs
                .iter()
                .map(|input| {
                    let value_type = ValueType::from(input.value_type);
                    SchemaField {
                        name: input.name.clone(),
                        value_type,
                        upstream_type: value_type.as_str().to_owned(),
                        required: input.required,
                        default: input.default.clone(),
                        description: input.description.clone(),
                    }
                })
                .collect(),
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
        if let Some(url) = &self.webhooks.public_url
            && let Err(message) = check_base_url(url)
        {
            issue("webhooks.public_url".into(), message);
        }
        if self.webhooks.signing_secret_env.is_some() && self.webhooks.signing_secret_file.is_some()
        {
            issue(
                "webhooks.signing_secret_env".into(),
                "set signing_secret_env or signing_secret_file, not both".into(),
            );
        }
        if self.webhooks.tolerance.is_zero() {
            issue(
                "webhooks.tolerance".into(),
                "must be greater than zero".into(),
            );
        }
        if self.webhooks.max_body_bytes < 1024 {
            issue(
                "webhooks.max_body_bytes".into(),
                "must be at least 1024".into(),
            );
        }
        if !(1..=50).contains(&self.webhooks.forward_max_attempts) {
            issue(
                "webhooks.forward_max_attempts".into(),
                "must be between 1 and 50".into(),
            );
        }
        if self.runs.capacity == 0 {
            issue("runs.capacity".into(), "must be at least 1".into());
        }
        if self.runs.poll_initial.is_zero() || self.runs.poll_initial > self.runs.poll_max {
            issue(
                "runs.poll_initial".into(),
                "must be greater than zero and at most runs.poll_max".into(),
            );
        }
        if self.runs.max_background_runs == 0 {
            issue(
                "runs.max_background_runs".into(),
                "must be at least 1".into(),
            );
        }
        for (name, provider) in &self.providers {
            let at = |field: &str| format!("providers.{name}.{field}");
            if provider.webhook_secret_env.is_some() && provider.kind != KindConfig::Knouds {
                issue(
                    at("webhook_secret_env"),
                    "only knouds providers sign webhooks with a configured secret (Fetch Hive issues one per run)".into(),
                );
            }
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
            for (workflow, declared) in &provider.workflows {
                let at = |field: &str| {
                    let base = format!("providers.{name}.workflows.{workflow}");
                    if field.is_empty() {
                        base
                    } else {
                        format!("{base}.{field}")
                    }
                };
                if let Err(message) = check_workflow_key(provider.kind, workflow) {
                    issue(at(""), message);
                }
                let mut seen = std::collections::BTreeSet::new();
                for (index, input) in declared.inputs.iter().enumerate() {
                    let at = |field: &str| at(&format!("inputs[{index}].{field}"));
                    if input.name.trim().is_empty() {
                        issue(at("name"), "must not be empty".into());
                    } else if !seen.insert(input.name.as_str()) {
                        issue(
                            at("name"),
                            format!("input {:?} is declared twice", input.name),
                        );
                    }
                    if let Some(default) = &input.default
                        && !ValueType::from(input.value_type).accepts(default)
                    {
                        issue(
                            at("default"),
                            format!(
                                "a {} default for an input of type {}",
                                flowgate_core::json_type_name(default),
                                ValueType::from(input.value_type)
                            ),
                        );
                    }
                }
            }
        }
        let schemas = &self.schemas;
        for (field, value) in [
            ("ttl", schemas.ttl),
            ("negative_ttl", schemas.negative_ttl),
            ("failure_ttl", schemas.failure_ttl),
            ("fetch_timeout", schemas.fetch_timeout),
        ] {
            if value.is_zero() || value > Duration::from_secs(30 * 24 * 3600) {
                issue(
                    format!("schemas.{field}"),
                    "must be between 1ms and 30 days".into(),
                );
            }
        }
        if schemas.capacity == 0 {
            issue("schemas.capacity".into(), "must be at least 1".into());
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { issues })
        }
    }

    /// What telemetry should do: `[log]` and `[telemetry]` combined.
    pub fn telemetry_settings(&self) -> flowgate_telemetry_setup::TelemetrySettings {
        flowgate_telemetry_setup::TelemetrySettings {
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

/// Why a secret could not be read, by where it was to come from.
enum SecretProblem {
    /// From the environment variable.
    Env(String),
    /// From the file.
    File(String),
}

impl SecretProblem {
    /// The config field to blame (`env_field` or `file_field`) and the message.
    fn at(self, env_field: &'static str, file_field: &'static str) -> (&'static str, String) {
        match self {
            Self::Env(message) => (env_field, message),
            Self::File(message) => (file_field, message),
        }
    }
}

/// Reads a secret from the environment variable `var` (preferred) or
/// `file`, trimmed. `Ok(None)` when neither is configured; a configured
/// source that is unset, unreadable or empty is an error naming it, never
/// the value.
fn read_secret(
    var: Option<&str>,
    file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, SecretProblem> {
    let text = match (var, file) {
        (Some(var), _) => env(var)
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty())
            .ok_or_else(|| {
                SecretProblem::Env(format!("environment variable {var} is not set or empty"))
            })?,
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file).map_err(|err| {
                SecretProblem::File(format!("cannot read {}: {err}", file.display()))
            })?;
            let text = text.trim().to_owned();
            if text.is_empty() {
                return Err(SecretProblem::File(format!("{} is empty", file.display())));
            }
            text
        }
        (None, None) => return Ok(None),
    };
    Ok(Some(text))
}

/// Secrets read from the environment or files, by name or path.
#[derive(Debug, Clone, Default)]
pub struct LoadedSecrets {
    /// flowgate's Standard Webhooks secrets (`whsec_…`), signing one first.
    pub signing: Vec<SecretString>,
    /// Each provider's webhook secrets.
    pub providers: BTreeMap<String, Vec<SecretString>>,
}

impl Config {
    /// Reads the webhook secrets; fails with the path of each one that
    /// cannot be read, never showing a value.
    pub fn webhook_secrets(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<LoadedSecrets, ConfigError> {
        let mut issues = Vec::new();
        let mut loaded = LoadedSecrets::default();
        let split = |text: String| -> Vec<SecretString> {
            text.split(',')
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .map(SecretString::new)
                .collect()
        };
        let webhooks = &self.webhooks;
        let signing = read_secret(
            webhooks.signing_secret_env.as_deref(),
            webhooks.signing_secret_file.as_deref(),
            &env,
        )
        .map(|text| text.map(split).unwrap_or_default())
        .map_err(|problem| problem.at("signing_secret_env", "signing_secret_file"));
        match signing {
            Ok(secrets) => {
                for secret in &secrets {
                    if flowgate_webhook::StandardSecret::parse(secret.expose()).is_err() {
                        issues.push(ConfigIssue {
                            path: "webhooks.signing_secret_env".into(),
                            message: "signing secrets must be whsec_ followed by base64".into(),
                        });
                    }
                }
                loaded.signing = secrets;
            }
            Err((field, message)) => issues.push(ConfigIssue {
                path: format!("webhooks.{field}"),
                message,
            }),
        }
        for (name, provider) in &self.providers {
            match read_secret(provider.webhook_secret_env.as_deref(), None, &env) {
                Ok(Some(text)) => {
                    loaded.providers.insert(name.clone(), split(text));
                }
                Ok(None) => {}
                Err(problem) => {
                    let (field, message) = problem.at("webhook_secret_env", "webhook_secret_env");
                    issues.push(ConfigIssue {
                        path: format!("providers.{name}.{field}"),
                        message,
                    });
                }
            }
        }
        if issues.is_empty() {
            Ok(loaded)
        } else {
            Err(ConfigError { issues })
        }
    }
}

impl Config {
    /// The declared workflow schemas of every provider.
    pub fn declared_schemas(&self) -> DeclaredSchemas {
        let mut declared = DeclaredSchemas::new();
        for (name, provider) in &self.providers {
            for (workflow, schema) in &provider.workflows {
                declared.insert(name.clone(), workflow.clone(), schema.schema());
            }
        }
        declared
    }
}

/// A declared workflow key must be one a call can address.
fn check_workflow_key(kind: KindConfig, key: &str) -> Result<(), String> {
    let plain = |part: &str| {
        !part.is_empty()
            && part.len() <= 256
            && part
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && c != '/')
    };
    let ok = match kind {
        KindConfig::Fetchhive => key.split('/').count() <= 2 && key.split('/').all(plain),
        KindConfig::Aitutor => plain(key),
        KindConfig::Knouds => flowgate_providers::knouds::is_valid_slug(key),
    };
    if ok {
        Ok(())
    } else {
        Err(match kind {
            KindConfig::Fetchhive => {
                "a Fetch Hive workflow key is \"deployment\" or \"deployment/variant\"".into()
            }
            KindConfig::Aitutor => "an AI Tutor workflow key is the workflow id (wf_…)".into(),
            KindConfig::Knouds => {
                "a Knouds workflow key is the slug (lowercase letters, digits, single hyphens)"
                    .into()
            }
        })
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

    const DECLARED: &str = r#"
        [schemas]
        ttl = "2m"
        negative_ttl = "5s"

        [providers.fh]
        kind = "fetchhive"
        api_key_env = "FH_KEY"

        [providers.fh.workflows."summarize/default"]
        description = "Summarizes a topic"
        inputs = [
          { name = "topic", type = "string", required = true },
          { name = "depth", type = "number", default = 2, description = "How deep" },
          { name = "tags", type = "array" },
        ]

        [providers.kn]
        kind = "knouds"
        api_key_env = "KN_KEY"
        workflows.summarize-text.inputs = [{ name = "text", type = "string", required = true }]
    "#;

    #[test]
    fn declared_schemas_and_cache_settings_parse() {
        let config = Config::parse(DECLARED, env(&[])).unwrap();
        let settings = config.schemas.settings();
        assert_eq!(settings.ttl, Duration::from_secs(120));
        assert_eq!(settings.negative_ttl, Duration::from_secs(5));
        assert_eq!(settings.capacity, 10_000);
        let schema = config.providers["fh"].workflows["summarize/default"].schema();
        assert_eq!(schema.description.as_deref(), Some("Summarizes a topic"));
        assert_eq!(schema.fields.len(), 3);
        let depth = schema.field("depth").unwrap();
        assert_eq!(depth.value_type, ValueType::Number);
        assert_eq!(depth.default, Some(serde_json::json!(2)));
        assert!(schema.field("topic").unwrap().required);
        assert!(!config.declared_schemas().is_empty());
    }

    #[test]
    fn declared_schema_problems_name_their_path() {
        let text = DECLARED.replace("type = \"array\"", "type = \"list\"");
        let err = Config::parse(&text, env(&[])).unwrap_err();
        assert_eq!(
            err.issues[0].path,
            "providers.fh.workflows.summarize/default.inputs[2].type"
        );
        assert!(
            err.issues[0].message.contains("unknown variant `list`"),
            "{err}"
        );

        let text = DECLARED
            .replace("default = 2", "default = \"two\"")
            .replace("name = \"tags\"", "name = \"topic\"")
            .replace("workflows.summarize-text", "workflows.Summarize_Text")
            .replace("ttl = \"2m\"", "ttl = \"2m\"\ncapacity = 0");
        let err = Config::parse(&text, env(&[])).unwrap_err();
        let paths: Vec<_> = err.issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "providers.fh.workflows.summarize/default.inputs[1].default",
                "providers.fh.workflows.summarize/default.inputs[2].name",
                "providers.kn.workflows.Summarize_Text",
                "schemas.capacity",
            ]
        );

        let text = DECLARED.replace("required = true }", "required = true, requird = 1 }");
        let err = Config::parse(&text, env(&[])).unwrap_err();
        assert!(
            err.issues[0].message.contains("unknown field `requird`"),
            "{err}"
        );
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
    fn unreadable_secrets_name_their_source() {
        let text = format!(
            "{EXAMPLE}\n[webhooks]\nsigning_secret_file = \"/nonexistent/flowgate-signing\"\n"
        );
        let config = Config::parse(&text, env(&[])).unwrap();
        let err = config.webhook_secrets(|_| None).unwrap_err();
        assert_eq!(err.issues[0].path, "webhooks.signing_secret_file");
        assert!(
            err.issues[0]
                .message
                .contains("/nonexistent/flowgate-signing")
        );

        let text = format!("{EXAMPLE}\n[webhooks]\nsigning_secret_env = \"SIGNING\"\n");
        let config = Config::parse(&text, env(&[])).unwrap();
        let err = config.webhook_secrets(|_| Some("  ".into())).unwrap_err();
        assert_eq!(err.issues[0].path, "webhooks.signing_secret_env");
        assert!(err.issues[0].message.contains("SIGNING"));
        assert!(config.webhook_secrets(|_| None).is_err(), "set but missing");
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
