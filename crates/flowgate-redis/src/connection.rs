//! One handle on Redis for every shared-state component: a single node
//! through redis-rs's reconnecting `ConnectionManager`, or a Redis Cluster
//! through its async cluster client; every operation bounded by one timeout
//! and every failure one typed error.

use std::{fmt, sync::Arc, time::Duration};

use redis::{
    Cmd, FromRedisValue, Pipeline, ProtocolVersion, RedisError, RedisFuture, ScriptInvocation,
    Value,
    aio::{AsyncPushSender, ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
};
use tokio::sync::OnceCell;

use crate::{
    TrustedCas,
    health::{self, Prober},
    tls,
};

/// Where Redis is.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisEndpoint {
    /// One node (or a proxy in front of several):
    /// `redis[s]://[user:password@]host:port[/db]` (`rediss`: TLS).
    Node(String),
    /// Seed nodes of a Redis Cluster, each `redis://[user:password@]host:port`;
    /// the client discovers the rest of the cluster from any one of them.
    Cluster(Vec<String>),
}

impl fmt::Debug for RedisEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Node(url) => f.debug_tuple("Node").field(&redact(url)).finish(),
            Self::Cluster(urls) => f
                .debug_tuple("Cluster")
                .field(&urls.iter().map(|url| redact(url)).collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// How to reach Redis and how to lay keys out in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// A node or a cluster seed list.
    pub endpoint: RedisEndpoint,
    /// Put in front of every key and channel (several gateways can share a
    /// Redis under different prefixes).
    pub key_prefix: String,
    /// Bounds every operation, including (re)connecting for it.
    pub op_timeout: Duration,
    /// With `rediss://` URLs: the CAs to trust instead of the system's
    /// roots (a private CA).
    pub tls_ca: Option<TrustedCas>,
}

impl RedisConfig {
    /// A single node at `url` with the default prefix and timeout.
    pub fn node(url: impl Into<String>) -> Self {
        Self {
            endpoint: RedisEndpoint::Node(url.into()),
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            op_timeout: DEFAULT_OP_TIMEOUT,
            tls_ca: None,
        }
    }

    /// A cluster reached through `seeds` with the default prefix and timeout.
    pub fn cluster(seeds: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoint: RedisEndpoint::Cluster(seeds.into_iter().map(Into::into).collect()),
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            op_timeout: DEFAULT_OP_TIMEOUT,
            tls_ca: None,
        }
    }
}

/// The key prefix unless configured.
pub const DEFAULT_KEY_PREFIX: &str = "flowgate:";
/// The per-operation timeout unless configured.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(500);

/// Reconnect backoff of a single-node connection: from this...
pub(crate) const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
/// ...doubling up to this...
pub(crate) const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);
/// ...for this many attempts (days at the longest delay): a reconnect runs
/// in the background until Redis is back, so a pub/sub connection, which
/// sends no requests that would start a new one, comes back by itself.
const RECONNECT_ATTEMPTS: usize = 1_000_000;

/// Why Redis could not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnavailableKind {
    /// No answer within the operation timeout.
    Timeout,
    /// Not connected, connection refused or dropped, TLS handshake failed.
    Connection,
    /// Redis refused the credentials (a wrong or missing password).
    Auth,
    /// Redis answered with an error (out of memory, cluster down, a script
    /// error).
    Server,
    /// The configuration cannot work (an unparsable URL, an unusable CA file).
    Config,
}

/// Redis did not do what was asked. The message never holds a password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("state store unavailable ({kind:?}) during {operation}: {detail}")]
pub struct StoreUnavailable {
    /// What kind of failure.
    pub kind: UnavailableKind,
    /// What was being done.
    pub operation: &'static str,
    /// What went wrong, secrets scrubbed.
    pub detail: String,
}

impl StoreUnavailable {
    pub(crate) fn config(detail: impl Into<String>) -> Self {
        Self {
            kind: UnavailableKind::Config,
            operation: "configuration",
            detail: detail.into(),
        }
    }
}

/// A cheap-to-clone handle on Redis (single node or cluster). Connects
/// lazily: creating it never waits for Redis, and an operation while Redis
/// is down fails with [`StoreUnavailable`] within the timeout while the
/// connection keeps retrying with backoff in the background.
#[derive(Clone)]
pub struct RedisConnection {
    link: Link,
    pub(crate) shared: Arc<Shared>,
}

#[derive(Clone)]
enum Link {
    Node(ConnectionManager),
    Cluster(Arc<ClusterLink>),
}

struct ClusterLink {
    client: ClusterClient,
    connection: OnceCell<ClusterConnection>,
}

pub(crate) struct Shared {
    prefix: String,
    pub(crate) op_timeout: Duration,
    /// Passwords from the URLs, scrubbed from every error message.
    secrets: Vec<String>,
    endpoint: String,
    pub(crate) health: health::Health,
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("endpoint", &self.shared.endpoint)
            .field("cluster", &self.is_cluster())
            .field("prefix", &self.shared.prefix)
            .field("op_timeout", &self.shared.op_timeout)
            .finish()
    }
}

impl RedisConnection {
    /// A handle for commands, scripts and publishing. Must be called inside
    /// a tokio runtime; returns at once (the first operation connects).
    pub fn open(config: &RedisConfig) -> Result<Self, StoreUnavailable> {
        Self::build(config, None)
    }

    /// A handle that also receives pub/sub messages: every message (and
    /// library event such as a disconnection) on channels subscribed with
    /// [`Self::subscribe`] goes to `pushes`. Subscriptions are renewed by
    /// the client after a reconnect; a confirmation push is sent again then.
    /// Single node: plain `SUBSCRIBE`; cluster: sharded `SSUBSCRIBE`.
    pub fn open_subscriber(
        config: &RedisConfig,
        pushes: impl AsyncPushSender,
    ) -> Result<Self, StoreUnavailable> {
        Self::build(config, Some(Arc::new(pushes)))
    }

    fn build(
        config: &RedisConfig,
        pushes: Option<Arc<dyn AsyncPushSender>>,
    ) -> Result<Self, StoreUnavailable> {
        let urls = match &config.endpoint {
            RedisEndpoint::Node(url) => vec![url.clone()],
            RedisEndpoint::Cluster(seeds) if seeds.is_empty() => {
                return Err(StoreUnavailable::config("the cluster seed list is empty"));
            }
            RedisEndpoint::Cluster(seeds) => seeds.clone(),
        };
        let tls = tls::uses_tls(&urls, config.tls_ca.as_ref())?;
        let mut secrets = Vec::new();
        let mut checked = Vec::with_capacity(urls.len());
        for url in &urls {
            let (url, password) = check_url(url, pushes.is_some())?;
            secrets.extend(password);
            checked.push(url);
        }
        let shared = Arc::new(Shared {
            prefix: config.key_prefix.clone(),
            op_timeout: config.op_timeout,
            endpoint: urls
                .iter()
                .map(|url| redact(url))
                .collect::<Vec<_>>()
                .join(","),
            secrets,
            health: health::Health::default(),
        });
        let scrub = |error: RedisError| shared.failure("connecting", error);
        let link = match &config.endpoint {
            RedisEndpoint::Node(_) => {
                let client =
                    tls::node_client(checked.concat(), config.tls_ca.as_ref()).map_err(scrub)?;
                let mut manager = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.op_timeout))
                    .set_response_timeout(Some(config.op_timeout))
                    .set_min_delay(RECONNECT_MIN_DELAY)
                    .set_max_delay(RECONNECT_MAX_DELAY)
                    .set_number_of_retries(RECONNECT_ATTEMPTS);
                if let Some(pushes) = pushes {
                    manager = manager
                        .set_push_sender(ArcPushSender(pushes, Arc::clone(&shared)))
                        .set_automatic_resubscription();
                }
                shared
                    .health
                    .set_prober(Prober::Node(Box::new(client.clone())));
                Link::Node(ConnectionManager::new_lazy_with_config(client, manager).map_err(scrub)?)
            }
            RedisEndpoint::Cluster(_) => {
                let builder = || {
                    let builder = ClusterClientBuilder::new(checked.clone())
                        .connection_timeout(config.op_timeout)
                        .response_timeout(config.op_timeout)
                        .min_retry_wait(duration_ms(RECONNECT_MIN_DELAY))
                        .max_retry_wait(duration_ms(RECONNECT_MAX_DELAY));
                    if tls {
                        tls::cluster_trusting(builder, config.tls_ca.as_ref())
                    } else {
                        builder
                    }
                };
                // The probe's own client: no pushes.
                shared
                    .health
                    .set_prober(Prober::Cluster(Box::new(builder().build().map_err(scrub)?)));
                let mut builder = builder();
                if let Some(pushes) = pushes {
                    builder = builder
                        .use_protocol(ProtocolVersion::RESP3)
                        .push_sender(ArcPushSender(pushes, Arc::clone(&shared)));
                }
                Link::Cluster(Arc::new(ClusterLink {
                    client: builder.build().map_err(scrub)?,
                    connection: OnceCell::new(),
                }))
            }
        };
        Ok(Self { link, shared })
    }

    /// True on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.link, Link::Cluster(_))
    }

    /// The configured key prefix.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// The per-operation timeout.
    pub fn op_timeout(&self) -> Duration {
        self.shared.op_timeout
    }

    /// `<prefix><kind>:{<id>}`: the id is the hash tag, so every key and
    /// channel of one id (`run`, `lease`, `events`, …) lives in one cluster
    /// slot and one script may touch them all. A `{` or `}` in `id` (which
    /// would end or split the tag) becomes `_`.
    pub fn key(&self, kind: &str, id: &str) -> String {
        let prefix = &self.shared.prefix;
        if id.contains(['{', '}']) {
            let id = id.replace(['{', '}'], "_");
            format!("{prefix}{kind}:{{{id}}}")
        } else {
            format!("{prefix}{kind}:{{{id}}}")
        }
    }

    /// The publish command matching [`Self::subscribe`]: `PUBLISH` on a
    /// single node, sharded `SPUBLISH` on a cluster (for a script to call).
    pub fn publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Runs one command.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreUnavailable> {
        self.bounded("command", async |mut connection| {
            cmd.query_async(&mut connection).await
        })
        .await
    }

    /// Runs a pipeline (on a cluster, all its keys must share one slot).
    pub async fn pipeline<T: FromRedisValue>(
        &self,
        pipeline: &Pipeline,
    ) -> Result<T, StoreUnavailable> {
        self.bounded("pipeline", async |mut connection| {
            pipeline.query_async(&mut connection).await
        })
        .await
    }

    /// Runs a script (`EVALSHA`, loading it on a `NOSCRIPT` answer); on a
    /// cluster it runs on the node owning its first key.
    pub async fn script<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, StoreUnavailable> {
        self.bounded("script", async |mut connection| {
            invocation.invoke_async(&mut connection).await
        })
        .await
    }

    /// Subscribes to `channel` (handles from [`Self::open_subscriber`]
    /// only; messages go to its push sender).
    pub async fn subscribe(&self, channel: &str) -> Result<(), StoreUnavailable> {
        self.bounded("subscribe", async |connection| match connection {
            AnyConnection::Node(mut node) => node.subscribe(channel).await,
            AnyConnection::Cluster(mut cluster) => cluster.ssubscribe(channel).await,
        })
        .await
    }

    /// Ends a subscription made with [`Self::subscribe`].
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), StoreUnavailable> {
        self.bounded("unsubscribe", async |connection| match connection {
            AnyConnection::Node(mut node) => node.unsubscribe(channel).await,
            AnyConnection::Cluster(mut cluster) => cluster.sunsubscribe(channel).await,
        })
        .await
    }

    /// Round trip to Redis (on a cluster, to one node).
    pub async fn ping(&self) -> Result<(), StoreUnavailable> {
        self.query::<String>(&redis::cmd("PING")).await.map(drop)
    }

    async fn bounded<T>(
        &self,
        operation: &'static str,
        run: impl AsyncFnOnce(AnyConnection) -> Result<T, RedisError>,
    ) -> Result<T, StoreUnavailable> {
        let work = async {
            let connection = match &self.link {
                Link::Node(node) => AnyConnection::Node(node.clone()),
                Link::Cluster(cluster) => AnyConnection::Cluster(
                    cluster
                        .connection
                        .get_or_try_init(|| cluster.client.get_async_connection())
                        .await?
                        .clone(),
                ),
            };
            run(connection).await
        };
        let outcome = match tokio::time::timeout(self.shared.op_timeout, work).await {
            Err(_) => Err(StoreUnavailable {
                kind: UnavailableKind::Timeout,
                operation,
                detail: format!("no answer within {:?}", self.shared.op_timeout),
            }),
            Ok(result) => result.map_err(|error| self.shared.failure(operation, error)),
        };
        health::observe(&self.shared, operation, &outcome);
        outcome
    }
}

impl Shared {
    pub(crate) fn failure(&self, operation: &'static str, error: RedisError) -> StoreUnavailable {
        let kind = if error.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(error.code(), Some("NOAUTH" | "WRONGPASS"))
        {
            UnavailableKind::Auth
        } else if error.is_timeout() {
            UnavailableKind::Timeout
        } else if error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_unrecoverable_error()
        {
            UnavailableKind::Connection
        } else {
            UnavailableKind::Server
        };
        let mut detail = error.to_string();
        for secret in &self.secrets {
            detail = detail.replace(secret.as_str(), "***");
        }
        StoreUnavailable {
            kind,
            operation,
            detail: format!("{detail} (at {})", self.endpoint),
        }
    }
}

/// The connection an operation runs on.
enum AnyConnection {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for AnyConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Node(node) => node.req_packed_command(cmd),
            Self::Cluster(cluster) => cluster.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Node(node) => node.req_packed_commands(pipeline, offset, count),
            Self::Cluster(cluster) => cluster.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(node) => node.get_db(),
            Self::Cluster(cluster) => cluster.get_db(),
        }
    }
}

/// A shared push sender (both client kinds want an owned one). Pushes also
/// tell the store's health: a disconnection, or any message or renewed
/// subscription (which only a live connection delivers).
struct ArcPushSender(Arc<dyn AsyncPushSender>, Arc<Shared>);

impl AsyncPushSender for ArcPushSender {
    fn send(&self, info: redis::PushInfo) -> Result<(), redis::aio::SendError> {
        health::observe_push(&self.1, &info.kind);
        self.0.send(info)
    }
}

/// Checks a URL (`redis://`, or `rediss://` for TLS, without the
/// `#insecure` fragment) and asks for RESP3 where pushes are wanted.
/// Returns the URL to use and its password, if any, to scrub from messages.
fn check_url(raw: &str, resp3: bool) -> Result<(String, Option<String>), StoreUnavailable> {
    let mut url = url::Url::parse(raw).map_err(|error| {
        StoreUnavailable::config(format!("{} is not a URL: {error}", redact(raw)))
    })?;
    match url.scheme() {
        "redis" | "rediss" => {}
        other => {
            return Err(StoreUnavailable::config(format!(
                "unsupported scheme {other:?} in {} (use redis:// or rediss://)",
                redact(raw)
            )));
        }
    }
    if url.fragment().is_some() {
        return Err(StoreUnavailable::config(format!(
            "{} has a #fragment: certificate checks cannot be turned off (#insecure); \
             give a private CA in the CA file instead",
            redact(raw)
        )));
    }
    let password = url.password().map(|password| {
        url::form_urlencoded::parse(format!("p={password}").as_bytes())
            .next()
            .map_or_else(|| password.to_owned(), |(_, decoded)| decoded.into_owned())
    });
    if resp3 {
        url.query_pairs_mut().append_pair("protocol", "resp3");
    }
    Ok((url.into(), password.filter(|password| !password.is_empty())))
}

/// `scheme://host:port/path` without user or password (or a placeholder
/// when it does not parse).
fn redact(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            let _ = url.set_password(None);
            let _ = url.set_username("");
            url.set_query(None);
            url.into()
        }
        Err(_) => "<unparsable Redis URL>".to_owned(),
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_user_and_password() {
        assert_eq!(
            redact("redis://user:s3cr%40t@cache:6380/2"),
            "redis://cache:6380/2"
        );
        let endpoint = RedisEndpoint::Cluster(vec!["redis://:hunter2@a:7000".to_owned()]);
        assert!(!format!("{endpoint:?}").contains("hunter2"));
    }

    #[test]
    fn accepts_tls_and_refuses_insecure_tls_and_foreign_schemes() {
        let (url, _) = check_url("rediss://cache:6380", false).unwrap();
        assert!(url.starts_with("rediss://cache:6380"), "{url}");
        assert_eq!(
            check_url("rediss://cache:6380/#insecure", false)
                .unwrap_err()
                .kind,
            UnavailableKind::Config
        );
        assert!(check_url("http://cache", false).is_err());
        let (url, password) = check_url("redis://:p%40ss@cache:6379", true).unwrap();
        assert!(url.ends_with("protocol=resp3"));
        assert_eq!(password.as_deref(), Some("p@ss"));
    }

    #[tokio::test]
    async fn keys_put_the_id_in_one_hash_tag() {
        // Connects lazily: no server is needed to build keys.
        let redis = RedisConnection::open(&RedisConfig::node("redis://127.0.0.1:1")).unwrap();
        let prefix = DEFAULT_KEY_PREFIX;
        assert_eq!(
            redis.key("run", "kn:e-1"),
            format!("{prefix}run:{{kn:e-1}}")
        );
        // Braces would end or split the tag (and the slot): they become `_`.
        assert_eq!(
            redis.key("replay", "a{b}c"),
            format!("{prefix}replay:{{a_b_c}}")
        );
    }
}
