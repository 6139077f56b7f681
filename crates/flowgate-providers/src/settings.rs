//! What one configured provider needs to run.

use std::time::Duration;

use flowgate_core::{ProviderKind, SecretString};

/// A provider's resolved settings (the key already loaded).
#[derive(Clone, Debug)]
pub struct ProviderSettings {
    /// Unique configured name.
    pub name: String,
    /// Its dialect.
    pub kind: ProviderKind,
    /// Base URL without a trailing slash, e.g. `https://api.fetchhive.com/v1`.
    pub base_url: String,
    /// The provider API key.
    pub api_key: SecretString,
    /// Longest an upstream request may take (the caller's deadline may cut it
    /// shorter).
    pub timeout: Duration,
    /// Fetch Hive: the variant used when the caller names none.
    pub default_variant: Option<String>,
}

impl ProviderSettings {
    /// The documented public base URL of a dialect.
    pub fn default_base_url(kind: ProviderKind) -> &'static str {
        match kind {
            ProviderKind::FetchHive => "https://api.fetchhive.com/v1",
            ProviderKind::AiTutor => "https://aitutor-api.vercel.app",
            ProviderKind::Knouds => "https://knouds.ai",
        }
    }

    /// The default request timeout of a dialect: its documented maximum run
    /// duration plus a margin (Fetch Hive's SDK uses 120 s; AI Tutor documents
    /// 300 s; Knouds sync runs take "up to a few minutes").
    pub fn default_timeout(kind: ProviderKind) -> Duration {
        match kind {
            ProviderKind::FetchHive => Duration::from_secs(120),
            ProviderKind::AiTutor => Duration::from_secs(310),
            ProviderKind::Knouds => Duration::from_secs(300),
        }
    }

    /// Settings with the dialect's defaults.
    pub fn new(name: impl Into<String>, kind: ProviderKind, api_key: SecretString) -> Self {
        Self {
            name: name.into(),
            kind,
            base_url: Self::default_base_url(kind).to_owned(),
            api_key,
            timeout: Self::default_timeout(kind),
            default_variant: None,
        }
    }
}
