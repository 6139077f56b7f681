//! `[state]`: where run state lives: in this process (`memory`, one
//! replica) or in Redis (`redis`, several replicas share runs and events).

use flowgate_core::SharedLimitsSettings;
use flowgate_redis::{RedisConfig, RedisEndpoint, TrustedCas};

use super::*;

/// Which run store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In this process: one replica (the default).
    Memory,
    /// In Redis: any number of replicas.
    Redis,
}

/// `[state]`. A missing key takes its value from [`Default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// `memory` (default) or `redis`.
    pub store: StoreKind,
    /// A single Redis node (or a proxy): `redis://host:6379[/db]`, or
    /// `rediss://host:6380` for TLS.
    pub url: Option<String>,
    /// Seed nodes of a Redis Cluster, instead of `url`:
    /// `["redis://10.0.0.1:6379", …]`.
    pub cluster_nodes: Vec<String>,
    /// Environment variable holding the Redis password (never written in
    /// the URLs of the file).
    pub password_env: Option<String>,
    /// Or a file holding it (e.g. a mounted Kubernetes Secret), read at
    /// start and trimmed; one of `password_env` and `password_file`.
    pub password_file: Option<PathBuf>,
    /// With `rediss://` URLs: a PEM file of the CA(s) that sign Redis's
    /// certificate, trusted instead of the system roots (a private CA).
    pub tls_ca_file: Option<PathBuf>,
    /// Put in front of every Redis key and channel. Default `flowgate:`.
    pub key_prefix: String,
    /// Bounds every Redis operation. Default `500ms`.
    #[serde(deserialize_with = "duration")]
    pub op_timeout: Duration,
    /// `[state.limits]`: provider limits (vendor windows, request rate,
    /// run slots) with `store = "redis"`: what they do while Redis cannot
    /// answer (`on_unavailable = "local" | "open" | "closed"`, default
    /// `local`) and how long a run slot's lease lasts (`slot_lease`,
    /// default `30s`).
    pub limits: SharedLimitsSettings,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            store: StoreKind::Memory,
            url: None,
            cluster_nodes: Vec::new(),
            password_env: None,
            password_file: None,
            tls_ca_file: None,
            key_prefix: flowgate_redis::DEFAULT_KEY_PREFIX.to_owned(),
            op_timeout: flowgate_redis::DEFAULT_OP_TIMEOUT,
            limits: SharedLimitsSettings::default(),
        }
    }
}

impl StateConfig {
    /// What types alone cannot check.
    pub(super) fn issues(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let mut issue = |path: &str, message: String| {
            issues.push(ConfigIssue {
                path: format!("state.{path}"),
                message,
            });
        };
        let urls = self
            .url
            .iter()
            .map(|url| ("url", url))
            .chain(self.cluster_nodes.iter().map(|url| ("cluster_nodes", url)));
        for (path, url) in urls {
            if let Err(message) = check_redis_url(url) {
                issue(path, message);
            }
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            issue(
                "password_env",
                "set password_env or password_file, not both".into(),
            );
        }
        let tls = self
            .url
            .iter()
            .chain(&self.cluster_nodes)
            .any(|url| url.starts_with("rediss:"));
        if self.tls_ca_file.is_some() && !tls {
            issue("tls_ca_file", "only used with rediss:// URLs (TLS)".into());
        }
        if self.key_prefix.contains(['{', '}']) {
            issue(
                "key_prefix",
                "must not contain { or } (keys use them as Redis Cluster hash tags)".into(),
            );
        }
        match self.store {
            StoreKind::Redis if self.url.is_none() == self.cluster_nodes.is_empty() => issue(
                "store",
                "store = \"redis\" needs url (a node) or cluster_nodes (a cluster), exactly one"
                    .into(),
            ),
            StoreKind::Memory if self.url.is_some() || !self.cluster_nodes.is_empty() => issue(
                "store",
                "url and cluster_nodes are only used with store = \"redis\"".into(),
            ),
            _ => {}
        }
        issues
    }

    /// The Redis to use (`None` for the memory store), the password read
    /// through `env` or from `password_file`, the CA file read and checked.
    /// Errors name the field and the file, never the password.
    pub fn redis(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<RedisConfig>, ConfigError> {
        if self.store == StoreKind::Memory {
            return Ok(None);
        }
        let password = match (&self.password_env, &self.password_file) {
            (Some(name), _) => {
                Some(env(name).filter(|value| !value.is_empty()).ok_or_else(|| {
                    ConfigError::one(
                        "state.password_env",
                        format!("environment variable {name} is not set"),
                    )
                })?)
            }
            (None, Some(file)) => read_secret(None, Some(file), &env).map_err(|problem| {
                let (field, message) = problem.at("password_env", "password_file");
                ConfigError::one(format!("state.{field}"), message)
            })?,
            (None, None) => None,
        };
        let tls_ca = match &self.tls_ca_file {
            Some(file) => {
                let pem = std::fs::read(file).map_err(|err| {
                    ConfigError::one(
                        "state.tls_ca_file",
                        format!("cannot read {}: {err}", file.display()),
                    )
                })?;
                Some(TrustedCas::from_pem(pem).map_err(|err| {
                    ConfigError::one(
                        "state.tls_ca_file",
                        format!("{}: {}", file.display(), err.detail),
                    )
                })?)
            }
            None => None,
        };
        let with_password = |raw: &String| -> String {
            match (&password, url::Url::parse(raw)) {
                (Some(password), Ok(mut url)) => {
                    let _ = url.set_password(Some(password));
                    url.into()
                }
                _ => raw.clone(),
            }
        };
        let endpoint = match &self.url {
            Some(url) => RedisEndpoint::Node(with_password(url)),
            None => RedisEndpoint::Cluster(self.cluster_nodes.iter().map(with_password).collect()),
        };
        Ok(Some(RedisConfig {
            endpoint,
            key_prefix: self.key_prefix.clone(),
            op_timeout: self.op_timeout,
            tls_ca,
        }))
    }
}

fn check_redis_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|err| format!("not a URL: {err}"))?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err("must be a redis:// (or rediss://, TLS) URL such as redis://redis:6379".into());
    }
    if url.fragment().is_some() {
        return Err(
            "must not have a #fragment: certificate checks cannot be turned off (#insecure); \
             trust a private CA with state.tls_ca_file"
                .into(),
        );
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    if url.password().is_some() {
        return Err(
            "holds a password: name the variable or file that holds it in state.password_env or state.password_file instead"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis_state(url: &str) -> StateConfig {
        StateConfig {
            store: StoreKind::Redis,
            url: Some(url.to_owned()),
            ..StateConfig::default()
        }
    }

    fn scratch(name: &str, text: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("flowgate-state-{name}-{}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn paths(state: &StateConfig) -> Vec<String> {
        state.issues().into_iter().map(|issue| issue.path).collect()
    }

    #[test]
    fn the_password_file_is_read_and_trimmed_into_the_urls() {
        let file = scratch("pw", "p@ss word\n");
        let state = StateConfig {
            password_file: Some(file.clone()),
            ..redis_state("redis://cache:6379/1")
        };
        assert!(paths(&state).is_empty());
        let redis = state.redis(|_| None).unwrap().unwrap();
        let _ = std::fs::remove_file(&file);
        let RedisEndpoint::Node(url) = &redis.endpoint else {
            panic!("{redis:?}")
        };
        assert_eq!(url, "redis://:p%40ss%20word@cache:6379/1");
        // Never shown.
        assert!(!format!("{redis:?}").contains("p%40ss"), "{redis:?}");
    }

    #[test]
    fn password_sources_are_exclusive_and_unreadable_files_are_named() {
        let state = StateConfig {
            password_env: Some("PW".into()),
            password_file: Some("/x".into()),
            ..redis_state("redis://cache:6379")
        };
        assert_eq!(paths(&state), ["state.password_env"]);
        let state = StateConfig {
            password_file: Some("/nonexistent/redis-pw".into()),
            ..redis_state("redis://cache:6379")
        };
        let error = state.redis(|_| None).unwrap_err();
        assert_eq!(error.issues[0].path, "state.password_file");
        assert!(error.issues[0].message.contains("/nonexistent/redis-pw"));
    }

    #[test]
    fn the_ca_file_needs_tls_and_a_certificate() {
        let file = scratch("ca", "no certificate here\n");
        let plain = StateConfig {
            tls_ca_file: Some(file.clone()),
            ..redis_state("redis://cache:6379")
        };
        assert_eq!(paths(&plain), ["state.tls_ca_file"]);
        let tls = StateConfig {
            tls_ca_file: Some(file.clone()),
            ..redis_state("rediss://cache:6380")
        };
        assert!(paths(&tls).is_empty());
        let error = tls.redis(|_| None).unwrap_err();
        let _ = std::fs::remove_file(&file);
        assert_eq!(error.issues[0].path, "state.tls_ca_file");
        assert!(
            error.issues[0].message.contains("no PEM certificate"),
            "{error}"
        );
        let missing = StateConfig {
            tls_ca_file: Some("/nonexistent/ca.pem".into()),
            ..redis_state("rediss://cache:6380")
        };
        let error = missing.redis(|_| None).unwrap_err();
        assert!(error.issues[0].message.contains("/nonexistent/ca.pem"));
        // rediss:// without a CA file: the system roots.
        let redis = redis_state("rediss://cache:6380")
            .redis(|_| None)
            .unwrap()
            .unwrap();
        assert!(redis.tls_ca.is_none());
    }
}
