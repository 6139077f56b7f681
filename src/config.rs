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
//!
//! Layout, one file per section: `server.rs` (`tls.rs`: `[server.tls]`, `cors.rs`: `[server.cors]`); `telemetry.rs` (`[log]`,
//! `[telemetry]`); `providers.rs` (whose resilience tables are the engine's
//! policies, deserialized directly); `schemas.rs` (declared workflow
//! schemas; `[schemas]` itself is the engine's [`SchemaCacheSettings`]);
//! `webhooks.rs`; `runs.rs`; `state.rs` (`[state]`, the run store); `idempotency.rs`;
//! `callers.rs` (`[callers.<name>]`, `[auth]`); `secrets.rs` (reading every configured secret);
//! `env.rs` (the overrides). Section structs take missing keys from one
//! `impl Default` each (container-level `#[serde(default)]`); durations are
//! [`flowgate_core::duration`]. `sections.rs` reads the document one section
//! at a time so every section's errors are reported together; `validate.rs`
//! and `ranges.rs` check what types alone cannot.

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
use serde::Deserialize;
use serde_json::Value;

mod callers;
mod cors;
mod env;
mod idempotency;
mod providers;
mod ranges;
mod runs;
mod schemas;
mod secrets;
mod sections;
mod server;
mod state;
mod telemetry;
#[cfg(test)]
mod tests;
mod tls;
mod validate;
mod webhooks;

pub use callers::{AuthConfig, CallerConfig, QuotaConfig};
pub use cors::CorsConfig;
use flowgate_core::duration::{deserialize as duration, optional as optional_duration};
pub use idempotency::IdempotencyConfig;
pub(crate) use providers::read_api_key_file;
pub use providers::{KindConfig, ProviderConfig};
pub use ranges::{Bounds, RANGES, Range};
pub use runs::RunsConfig;
pub use schemas::{InputConfig, InputType, WorkflowSchemaConfig};
pub(crate) use secrets::read_signing_secret_file;
pub use secrets::{LoadedSecrets, MIN_RUN_ID_SECRET_BYTES};
use secrets::{SecretProblem, read_secret};
pub use server::ServerConfig;
pub use state::{StateConfig, StoreKind};
pub use telemetry::{LogConfig, LogFormat, TelemetryConfig};
pub use tls::{ClientAuth, TlsConfig};
pub use webhooks::WebhooksConfig;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "FLOWGATE__";
/// The whole configuration. Read section by section (see `sections.rs`),
/// not as one value, so every section's problems are reported together.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`: the gRPC listener and request handling.
    pub server: ServerConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[telemetry]`: traces and metrics.
    pub telemetry: TelemetryConfig,
    /// `[providers.<name>]`: the providers, by name.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// `[webhooks]`: callback ingress and forwarding.
    pub webhooks: WebhooksConfig,
    /// `[runs]`: run tracking.
    pub runs: RunsConfig,
    /// `[state]`: the run store (memory or Redis).
    pub state: StateConfig,
    /// `[schemas]`: the workflow schema cache.
    pub schemas: SchemaCacheSettings,
    /// `[idempotency]`: records of calls with an `idempotency_key`.
    pub idempotency: IdempotencyConfig,
    /// `[callers.<name>]`: who may call, by name.
    pub callers: BTreeMap<String, CallerConfig>,
    /// `[auth]`: unauthenticated calls and reflection.
    pub auth: AuthConfig,
}

/// One configuration problem, at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted path of the field (`providers.kn.timeout`), or the file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem found, so one run of `check-config` shows them all,
/// sorted by path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, sorted by path (so grouped by section).
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

impl From<ConfigIssue> for ConfigError {
    fn from(issue: ConfigIssue) -> Self {
        Self {
            issues: vec![issue],
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

    /// Parses TOML `text`, applies overrides from `env`, reads each section
    /// and validates, reporting every problem of every section at once. Only
    /// a TOML syntax error stops reading early: it leaves no document.
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
        let issues = overrides.apply(&mut tree);
        let mut sections = sections::Sections::new(tree, &overrides, issues);
        let config = sections.read();
        sections.finish(config)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |head| head.matches('\n').count() + 1)
}
