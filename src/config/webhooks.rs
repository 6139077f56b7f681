//! `[webhooks]`: the callback ingress and forwarding, and where callbacks
//! may go (`callback_allow`, `callback_allow_http`). Its secrets are read
//! in `secrets.rs`.

use flowgate_core::CallbackPolicy;

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
    /// The callback destination policy of `[webhooks]`.
    pub fn callback_policy(&self) -> Result<CallbackPolicy, ConfigError> {
        CallbackPolicy::new(
            &self.webhooks.callback_allow,
            self.webhooks.callback_allow_http,
        )
        .map_err(|err| ConfigError {
            issues: vec![ConfigIssue {
                path: "webhooks.callback_allow".into(),
                message: err.to_string(),
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!("[providers.kn]\nkind = \"knouds\"\napi_key_env = \"KN\"\n{extra}");
        Config::parse(&text, Vec::new()).unwrap()
    }

    #[test]
    fn callback_allow_entries_are_checked() {
        let config = config(
            "[webhooks]\ncallback_allow = [\"hooks.internal.svc\", \"10.0.0.0/8\"]\ncallback_allow_http = true\n",
        );
        let policy = config.callback_policy().unwrap();
        assert!(policy.check_url("http://10.1.2.3/cb").is_ok());
        assert!(
            self::config("")
                .callback_policy()
                .unwrap()
                .check_url("http://x.example/")
                .is_err()
        );
        let text = "[providers.kn]\nkind = \"knouds\"\napi_key_env = \"KN\"\n[webhooks]\ncallback_allow = [\"10.0.0.0/99\"]\n";
        let err = Config::parse(text, Vec::new()).unwrap_err();
        assert_eq!(err.issues[0].path, "webhooks.callback_allow");
    }
}
