//! `[webhooks]`: the callback ingress and forwarding, and its secrets.

use super::*;

/// `[webhooks]`: the callback ingress listener and callback forwarding.
/// A missing key takes its value from [`Default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
    #[serde(deserialize_with = "duration")]
    pub tolerance: Duration,
    /// Largest accepted callback body. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Delivery attempts per forwarded callback. Default 8.
    pub forward_max_attempts: u32,
    /// Callback destinations allowed although they are loopback,
    /// link-local, private or otherwise forbidden: exact host names (their
    /// resolved addresses are then trusted), IP addresses or CIDRs, e.g.
    /// `["hooks.internal.svc", "10.0.0.0/8"]`. Default none.
    pub callback_allow: Vec<String>,
    /// Accept plain `http://` callback URLs. Default false (https only).
    pub callback_allow_http: bool,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            listen: None,
            public_url: None,
            signing_secret_env: None,
            signing_secret_file: None,
            tolerance: Duration::from_secs(300),
            max_body_bytes: 1024 * 1024,
            forward_max_attempts: 8,
            callback_allow: Vec::new(),
            callback_allow_http: false,
        }
    }
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
