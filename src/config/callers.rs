//! `[callers.<name>]` and `[auth]`: who may call the gateway, and what
//! unauthenticated calls may do. The grammar of identities and
//! capabilities is [`crate::auth`]'s; this file reads and checks them,
//! reporting every problem with its path.

use std::{collections::HashMap, sync::Arc};

use flowgate_core::CallerQuota;

use crate::auth::{
    CallerEntry, CallerRegistry, Capabilities, Capability, Identity, KeyHash, ReflectionAccess,
    UNAUTHENTICATED,
};

use super::*;

/// `[callers.<name>]`: one caller. A missing key is empty.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallerConfig {
    /// `sha256:<hex>` of each valid API key (several during a rotation);
    /// `flowgate hash-key` prints one.
    pub key_hashes: Vec<String>,
    /// mTLS identities: a URI SAN such as `spiffe://…`, or `dns:<name>`
    /// for a DNS SAN.
    pub identities: Vec<String>,
    /// What the caller may do (see [`crate::auth::capability`]).
    pub capabilities: Vec<String>,
    /// `[callers.<name>.quota]`: none means unlimited.
    pub quota: Option<QuotaConfig>,
}

/// `[callers.<name>.quota]`: each limit is off unless set (see
/// [`flowgate_core::caller_quota`] and the README's "Quotas").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// Requests (Invokes) per fixed `window`.
    pub requests_per_window: Option<u32>,
    /// The request window. Default `1m`.
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// Invokes in flight at once.
    pub max_concurrent_runs: Option<u32>,
    /// Credits per UTC day, counted from the usage vendors report.
    pub credits_per_day: Option<f64>,
    /// Credits per UTC calendar month.
    pub credits_per_month: Option<f64>,
    /// What a run whose cost the vendor did not report counts. Default 1.0.
    pub unknown_cost: f64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            requests_per_window: None,
            window: Duration::from_secs(60),
            max_concurrent_runs: None,
            credits_per_day: None,
            credits_per_month: None,
            unknown_cost: CallerQuota::DEFAULT_UNKNOWN_COST,
        }
    }
}

/// The largest credit amount accepted in a quota.
pub const MAX_CREDITS: f64 = 1e12;

impl QuotaConfig {
    /// The engine's quota.
    pub fn to_quota(&self) -> CallerQuota {
        CallerQuota {
            requests: self
                .requests_per_window
                .map(|requests| (requests, self.window)),
            max_concurrent_runs: self.max_concurrent_runs,
            credits_per_day: self.credits_per_day,
            credits_per_month: self.credits_per_month,
            unknown_cost: self.unknown_cost,
        }
    }

    /// Credit amounts that are not finite numbers in range.
    fn credit_issues(&self) -> impl Iterator<Item = (&'static str, &'static str)> {
        let budgets = [
            ("credits_per_day", self.credits_per_day),
            ("credits_per_month", self.credits_per_month),
        ];
        let budgets = budgets.into_iter().filter_map(|(key, value)| {
            value
                .filter(|v| !(v.is_finite() && *v > 0.0 && *v <= MAX_CREDITS))
                .map(|_| (key, "must be a number above 0 and at most 1e12"))
        });
        let unknown = (!(self.unknown_cost.is_finite()
            && (0.0..=MAX_CREDITS).contains(&self.unknown_cost)))
        .then_some(("unknown_cost", "must be a number between 0 and 1e12"));
        budgets.chain(unknown)
    }
}

/// `[auth]`. A missing key takes its value from [`Default`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Let calls without credentials through as the caller
    /// `unauthenticated`, with every capability. Default false. Needed to
    /// listen beyond loopback without callers.
    pub allow_unauthenticated: bool,
    /// `"open"` or `"authenticated"` (the default): who may call server
    /// reflection. Health is always open (probes).
    pub reflection: ReflectionAccess,
}

impl Config {
    /// Problems of `[callers]`, each with its path.
    pub(super) fn caller_issues(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let mut issue = |path: String, message: String| issues.push(ConfigIssue { path, message });
        let mut keys: HashMap<KeyHash, &str> = HashMap::new();
        let mut identities: HashMap<Identity, &str> = HashMap::new();
        for (name, caller) in &self.callers {
            let at = |field: &str| format!("callers.{name}.{field}");
            if !validate::is_valid_name(name) {
                issue(
                    format!("callers.{name}"),
                    "caller names are 1 to 63 lowercase letters, digits, '_' or '-', starting with a letter".into(),
                );
            } else if name == UNAUTHENTICATED {
                issue(
                    format!("callers.{name}"),
                    "`unauthenticated` is reserved for calls without credentials".into(),
                );
            }
            if caller.key_hashes.is_empty() && caller.identities.is_empty() {
                issue(
                    format!("callers.{name}"),
                    "set key_hashes or identities: this caller could never authenticate".into(),
                );
            }
            for (index, text) in caller.key_hashes.iter().enumerate() {
                let path = at(&format!("key_hashes[{index}]"));
                match KeyHash::parse(text) {
                    Err(message) => issue(path, message.into()),
                    Ok(hash) => {
                        // The other caller is named, never the hash.
                        if let Some(other) = keys.insert(hash, name) {
                            issue(
                                path,
                                format!("the same key hash is also listed for `{other}`"),
                            );
                        }
                    }
                }
            }
            for (index, text) in caller.identities.iter().enumerate() {
                let path = at(&format!("identities[{index}]"));
                match Identity::parse(text) {
                    Err(message) => issue(path, message.into()),
                    Ok(identity) => {
                        if let Some(other) = identities.insert(identity, name) {
                            issue(path, format!("{text:?} is also an identity of `{other}`"));
                        }
                    }
                }
            }
            for (index, text) in caller.capabilities.iter().enumerate() {
                if let Err(message) = Capability::parse(text) {
                    issue(at(&format!("capabilities[{index}]")), message);
                }
            }
            for (key, message) in caller.quota.iter().flat_map(QuotaConfig::credit_issues) {
                issue(at(&format!("quota.{key}")), message.into());
            }
        }
        issues
    }

    /// Why `serve` must not listen as configured: no callers, no
    /// `auth.allow_unauthenticated`, and a listen address beyond loopback.
    pub fn exposure_issue(&self) -> Option<ConfigIssue> {
        let exposed = !self.server.listen.ip().is_loopback();
        (exposed && self.callers.is_empty() && !self.auth.allow_unauthenticated).then(|| {
            ConfigIssue {
                path: "server.listen".into(),
                message: format!(
                    "refusing to listen on {} with no callers configured: anyone who can reach \
                     it could spend the providers' credits. Declare [callers.<name>] (see \
                     `flowgate hash-key`), listen on loopback, or set \
                     auth.allow_unauthenticated = true to accept unauthenticated calls",
                    self.server.listen
                ),
            }
        })
    }

    /// The callers, indexed for the auth layer. Entries that failed
    /// validation are left out (a validated config has none).
    pub fn caller_registry(&self) -> Arc<CallerRegistry> {
        let callers = self
            .callers
            .iter()
            .map(|(name, caller)| CallerEntry {
                name: name.clone(),
                keys: caller
                    .key_hashes
                    .iter()
                    .filter_map(|text| KeyHash::parse(text).ok())
                    .collect(),
                identities: caller
                    .identities
                    .iter()
                    .filter_map(|text| Identity::parse(text).ok())
                    .collect(),
                capabilities: Capabilities::new(
                    caller
                        .capabilities
                        .iter()
                        .filter_map(|text| Capability::parse(text).ok())
                        .collect(),
                ),
                quota: caller
                    .quota
                    .as_ref()
                    .map(QuotaConfig::to_quota)
                    .filter(|quota| !quota.is_unlimited()),
            })
            .collect();
        Arc::new(CallerRegistry::new(
            callers,
            self.auth.allow_unauthenticated,
            self.auth.reflection,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROVIDER: &str = "[providers.kn]\nkind = \"knouds\"\napi_key_env = \"KN\"\n";

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("{PROVIDER}{extra}"), Vec::new())
    }

    fn hash(key: &str) -> String {
        KeyHash::of(key.as_bytes()).to_config()
    }

    #[test]
    fn callers_are_read_and_indexed() {
        let config = parse(&format!(
            "[auth]\nreflection = \"open\"\n[callers.ci]\nkey_hashes = [\"{}\", \"{}\"]\n\
             identities = [\"spiffe://c.local/ns/ci/sa/runner\", \"dns:ci.internal\"]\n\
             capabilities = [\"invoke:kn/render-*\", \"runs:stream\"]\n",
            hash("a"),
            hash("b")
        ))
        .unwrap();
        assert_eq!(config.auth.reflection, ReflectionAccess::Open);
        let registry = config.caller_registry();
        let caller = registry.authenticate(Some(b"Bearer b"), None).unwrap();
        assert_eq!(caller.name(), "ci");
        assert!(caller.capabilities().may_invoke("kn", "render-x"));
        assert!(!registry.allows_unauthenticated());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let err = parse(&format!(
            "[callers.ci]\nkey_hashes = [\"sha256:00\", \"{h}\"]\nidentities = [\"api.internal\"]\n\
             capabilities = [\"invoke:kn\", \"runs:stream\", \"admin\"]\n\
             [callers.other]\nkey_hashes = [\"{h}\"]\n[callers.unauthenticated]\nkey_hashes = [\"{a}\"]\n\
             [callers.Bad]\nidentities = [\"dns:x\"]\n[callers.empty]\n",
            h = hash("k"),
            a = hash("a"),
        ))
        .unwrap_err();
        let paths: Vec<&str> = err.issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "callers.Bad",
                "callers.ci.capabilities[0]",
                "callers.ci.capabilities[2]",
                "callers.ci.identities[0]",
                "callers.ci.key_hashes[0]",
                "callers.empty",
                "callers.other.key_hashes[0]",
                "callers.unauthenticated",
            ],
            "{err}"
        );
        // A duplicate names the other caller, never the hash.
        assert!(!err.to_string().contains(&hash("k")[7..]), "{err}");
        let unknown = parse("[callers.ci]\nkeys = []\n").unwrap_err();
        assert_eq!(unknown.issues[0].path, "callers.ci.keys", "{unknown}");
        let bad_auth = parse("[auth]\nreflection = \"sometimes\"\n").unwrap_err();
        assert_eq!(bad_auth.issues[0].path, "auth.reflection", "{bad_auth}");
    }

    #[test]
    fn quotas_are_read_and_range_checked() {
        let config = parse(&format!(
            "[callers.ci]\nkey_hashes = [\"{}\"]\n[callers.ci.quota]\nrequests_per_window = 100\n\
             window = \"1m\"\nmax_concurrent_runs = 2\ncredits_per_day = 50.0\nunknown_cost = 0.25\n\
             [callers.ops]\nkey_hashes = [\"{}\"]\n[callers.ops.quota]\n",
            hash("a"),
            hash("b")
        ))
        .unwrap();
        let registry = config.caller_registry();
        let ci = registry.authenticate(Some(b"Bearer a"), None).unwrap();
        let quota = ci.quota().unwrap();
        assert_eq!(quota.requests, Some((100, Duration::from_secs(60))));
        assert_eq!(quota.max_concurrent_runs, Some(2));
        assert_eq!(quota.credits_per_day, Some(50.0));
        assert_eq!(quota.credits_per_month, None);
        assert_eq!(quota.unknown_cost, 0.25);
        // An empty quota table limits nothing: no store is asked.
        let ops = registry.authenticate(Some(b"Bearer b"), None).unwrap();
        assert!(ops.quota().is_none());

        let err = parse(&format!(
            "[callers.ci]\nkey_hashes = [\"{}\"]\n[callers.ci.quota]\nrequests_per_window = 0\n\
             window = \"0s\"\nmax_concurrent_runs = 100000\ncredits_per_day = -1.0\n\
             credits_per_month = 2e12\nunknown_cost = -0.5\n",
            hash("a")
        ))
        .unwrap_err();
        let mut paths: Vec<&str> = err.issues.iter().map(|i| i.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "callers.ci.quota.credits_per_day",
                "callers.ci.quota.credits_per_month",
                "callers.ci.quota.max_concurrent_runs",
                "callers.ci.quota.requests_per_window",
                "callers.ci.quota.unknown_cost",
                "callers.ci.quota.window",
            ],
            "{err}"
        );
        let unknown = parse(&format!(
            "[callers.ci]\nkey_hashes = [\"{}\"]\n[callers.ci.quota]\nrequests = 1\n",
            hash("a")
        ))
        .unwrap_err();
        assert_eq!(
            unknown.issues[0].path, "callers.ci.quota.requests",
            "{unknown}"
        );
    }

    #[test]
    fn exposure_needs_callers_or_an_explicit_opt_in() {
        let listen = |addr: &str| format!("[server]\nlisten = \"{addr}\"\n");
        assert!(
            parse(&listen("127.0.0.1:1"))
                .unwrap()
                .exposure_issue()
                .is_none()
        );
        assert!(
            parse(&listen("[::1]:1"))
                .unwrap()
                .exposure_issue()
                .is_none()
        );
        let exposed = parse(&listen("0.0.0.0:1"))
            .unwrap()
            .exposure_issue()
            .unwrap();
        assert_eq!(exposed.path, "server.listen");
        assert!(exposed.message.contains("allow_unauthenticated"));
        let opted_in = parse(&format!(
            "{}[auth]\nallow_unauthenticated = true\n",
            listen("0.0.0.0:1")
        ))
        .unwrap();
        assert!(opted_in.exposure_issue().is_none());
        assert!(opted_in.caller_registry().allows_unauthenticated());
        let with_callers = parse(&format!(
            "{}[callers.ci]\nkey_hashes = [\"{}\"]\n",
            listen("0.0.0.0:1"),
            hash("k")
        ))
        .unwrap();
        assert!(with_callers.exposure_issue().is_none());
    }
}
