//! `[state]`: where run state lives: in this process (`memory`, one
//! replica) or in Redis (`redis`, several replicas share runs and events).

use flowgate_core::SharedLimitsSettings;
use flowgate_redis::{RedisConfig, RedisEndpoint};

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
    /// A single Redis node (or a proxy): `redis://host:6379[/db]`.
    pub url: Option<String>,
    /// Seed nodes of a Redis Cluster, instead of `url`:
    /// `["redis://10.0.0.1:6379", …]`.
    pub cluster_nodes: Vec<String>,
    /// Environment variable holding the Redis password (never written in
    /// the URLs of the file).
    pub password_env: Option<String>,
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
    /// through `env`.
    pub fn redis(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<RedisConfig>, ConfigError> {
        if self.store == StoreKind::Memory {
            return Ok(None);
        }
        let password = match &self.password_env {
            Some(name) => Some(env(name).filter(|value| !value.is_empty()).ok_or_else(|| {
                ConfigError::one(
                    "state.password_env",
                    format!("environment variable {name} is not set"),
                )
            })?),
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
        }))
    }
}

fn check_redis_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|err| format!("not a URL: {err}"))?;
    match url.scheme() {
        "redis" => {}
        "rediss" => {
            return Err(
                "rediss:// (TLS) is not supported yet: reach Redis over a private network or a TLS sidecar".into(),
            );
        }
        _ => return Err("must be a redis:// URL such as redis://redis:6379".into()),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    if url.password().is_some() {
        return Err(
            "holds a password: name the variable that holds it in state.password_env instead"
                .into(),
        );
    }
    Ok(())
}
