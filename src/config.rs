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

mod durations;
mod env;
mod providers;
mod ranges;
mod runs;
mod schemas;
mod secrets;
mod security;
mod server;
mod telemetry;
#[cfg(test)]
mod tests;
mod validate;
mod webhooks;

pub use durations::parse_duration;
use durations::{duration, optional_duration};
pub use providers::{CircuitBreakerConfig, KindConfig, LimitsConfig, ProviderConfig, RetryConfig};
pub use ranges::{Bounds, RANGES, Range};
pub use runs::RunsConfig;
pub use schemas::{InputConfig, InputType, SchemasConfig, WorkflowSchemaConfig};
pub use secrets::LoadedSecrets;
use secrets::{SecretProblem, read_secret};
pub use security::MIN_RUN_ID_SECRET_BYTES;
pub use server::ServerConfig;
pub use telemetry::{LogConfig, LogFormat, TelemetryConfig};
pub use webhooks::WebhooksConfig;

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
        let overrides = env::Overrides::collect(env)?;
        overrides.apply(&mut tree)?;
        let config = overrides.deserialize(&mut tree)?;
        config.validate()?;
        Ok(config)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |head| head.matches('\n').count() + 1)
}
