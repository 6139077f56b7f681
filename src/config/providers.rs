//! `[providers.<name>]`: dialect, key, timeouts and resilience.

use super::*;

/// `[providers.<name>]`.
///
/// The resilience tables deserialize straight into the engine's policies
/// ([`RetryPolicy`], [`CircuitPolicy`], [`LocalLimits`]), whose defaults are
/// the same for every dialect. Only `base_url` and `timeout` stay optional
/// here: their defaults depend on `kind`, so they are filled in by
/// [`ProviderSettings::new`] once the dialect is known.
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
    pub retry: RetryPolicy,
    /// `[providers.<name>.circuit_breaker]`.
    #[serde(default)]
    pub circuit_breaker: CircuitPolicy,
    /// `[providers.<name>.limits]`: the gateway's own limits for the key.
    #[serde(default)]
    pub limits: LocalLimits,
}

impl ProviderConfig {
    /// The resilience policy, as configured (defaults where a key is missing).
    pub fn resilience(&self) -> Resilience {
        Resilience {
            retry: self.retry.clone(),
            circuit: self.circuit_breaker.clone(),
            limits: self.limits.clone(),
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
            let key =
                key.and_then(|key| header_safe(key).map_err(|message| ("api_key_env", message)));
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

/// `key` when an HTTP header can carry it (printable ASCII, no spaces).
fn header_safe(key: String) -> Result<String, String> {
    if key.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(key)
    } else {
        Err("the key holds characters that cannot be sent in an HTTP header".to_owned())
    }
}

/// Reads a provider key from `file` with the checks of start-up (trimmed,
/// not empty, fit for an HTTP header): for re-reading a rotated
/// `api_key_file`. The message names the file, never the key.
pub(crate) fn read_api_key_file(file: &Path) -> Result<SecretString, String> {
    let key = read_secret(None, Some(file), |_| None)
        .map_err(|problem| problem.at("", "").1)?
        .ok_or_else(|| format!("{} is empty", file.display()))?;
    header_safe(key)
        .map(SecretString::new)
        .map_err(|message| format!("{}: {message}", file.display()))
}
