//! Building the engine, stores and tracker from a configuration.

use std::sync::Arc;

use flowgate_core::{CallerQuotaStore, LimitStore, ReplayStore};
use flowgate_core::{Gateway, RunIdSigner, SchemaCatalog};
use flowgate_providers::{Dialects, HttpClient};
use flowgate_redis::{RedisCallerQuotaStore, RedisConnection, RedisLimitStore, RedisReplayStore};
use flowgate_state::{
    Forwarding, Idempotency, IdempotencyStore, IngressConfig, MemoryIdempotencyStore,
    MemoryRunStore, RedisRunStore, RunStore, RunTracker, SigningSecrets, StoreLimits,
    StoreUnavailable, TrackerConfig, idempotency::RedisIdempotencyStore,
};
use flowgate_telemetry::SchemaCacheOutcome;
use flowgate_webhook::{Forwarder, ForwarderConfig, StandardSecret, callback_client};

use super::ServeError;
use crate::{
    admin::Readiness,
    auth::quota::CallerQuotas,
    config::{Config, ConfigError, ConfigIssue},
    reload::SecretFiles,
};

#[derive(Debug, Clone)]
pub struct App {
    /// The engine: synchronous calls and schemas.
    pub gateway: Arc<Gateway>,
    /// Async runs, streams, callbacks (over the same gateway).
    pub tracker: Arc<RunTracker>,
    /// The `idempotency_key` check in front of Invoke.
    pub idempotency: Idempotency,
    /// The Redis connection when `[state] store = "redis"`: one handle
    /// (cheap to clone) for every part that keeps shared state.
    pub redis: Option<RedisConnection>,
    /// Where caller quotas are counted (Redis when shared).
    pub quotas: Arc<CallerQuotas>,
    /// Set while health says SERVING (the admin `/readyz`).
    pub readiness: Readiness,
    /// Read again while serving.
    pub(super) secret_files: SecretFiles,
    pub(super) config: Config,
}

/// The shared provider limits, caller quotas and webhook replay ids.
struct SharedStores {
    limits: Arc<dyn LimitStore>,
    quotas: Arc<dyn CallerQuotaStore>,
    replay: Arc<dyn ReplayStore>,
}

/// With `store = "redis"`: the provider limits and webhook replay ids every
/// replica shares, on their own connection (admissions never queue behind
/// run-store traffic). Connects lazily, like the run store.
fn shared_limits_and_replay(
    config: &Config,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<SharedStores>, ServeError> {
    let Some(redis) = config.state.redis(env)? else {
        return Ok(None);
    };
    let connection = RedisConnection::open(&redis).map_err(|error| {
        ConfigError::from(ConfigIssue {
            path: "state".into(),
            message: error.to_string(),
        })
    })?;
    let limits = RedisLimitStore::new(connection.clone(), config.state.limits.slot_lease);
    let quotas = RedisCallerQuotaStore::new(connection.clone(), config.state.limits.slot_lease);
    Ok(Some(SharedStores {
        limits: Arc::new(limits),
        quotas: Arc::new(quotas),
        replay: Arc::new(RedisReplayStore::new(connection)),
    }))
}

/// Builds the engine from a configuration, loading provider keys and
/// webhook secrets through `env` (the process environment in production).
/// Must run inside a Tokio runtime (the forwarder starts its workers).
pub fn build(config: &Config, env: impl Fn(&str) -> Option<String>) -> Result<App, ServeError> {
    // No callers and no opt-in: loopback only (check-config says so too).
    if let Some(issue) = config.exposure_issue() {
        return Err(ConfigError::from(issue).into());
    }
    let http = HttpClient::new()?;
    let shared = shared_limits_and_replay(config, &env)?;
    let dialects = Dialects::builtin();
    let provider_settings = config.provider_settings(&env)?;
    let mut secret_files = SecretFiles::of(config, &provider_settings);
    let providers = provider_settings
        .into_iter()
        .map(|settings| match &shared {
            Some(shared) => dialects.build_sharing_limits(
                settings,
                &http,
                Arc::clone(&shared.limits),
                config.state.limits.on_unavailable,
            ),
            None => dialects.build(settings, &http),
        })
        .collect::<Result<_, _>>()?;
    let schemas = SchemaCatalog::new(config.schemas, config.declared_schemas()).with_observer(
        Arc::new(|provider: &str, hit: bool| {
            let outcome = if hit {
                SchemaCacheOutcome::Hit
            } else {
                SchemaCacheOutcome::Miss
            };
            flowgate_telemetry::metrics().schema_cache(provider, outcome);
        }),
    );
    let run_ids = match config.run_id_signer(&env)? {
        Some(signer) => signer,
        None => {
            tracing::warn!(
                "runs.id_secret_env is not set: run ids are signed with a random secret of this \
                 process and are valid on this replica only, until it restarts"
            );
            RunIdSigner::ephemeral()
        }
    };
    let gateway = Arc::new(
        Gateway::new(providers)
            .with_schemas(schemas)
            .with_run_ids(run_ids)
            .with_callback_policy(config.callback_policy()?),
    );
    // Caller quotas: on the shared store with its failure policy, else here.
    let quotas = Arc::new(match &shared {
        Some(shared) => CallerQuotas::shared(
            Arc::clone(&shared.quotas),
            config.state.limits.on_unavailable,
        ),
        None => CallerQuotas::memory(),
    });
    let secrets = config.webhook_secrets(&env)?;
    let forwarding = match secrets.signing.first() {
        Some(first) => {
            let signing_secret =
                StandardSecret::parse(first.expose()).map_err(|_| ConfigError {
                    issues: vec![ConfigIssue {
                        path: "webhooks.signing_secret_env".into(),
                        message: "signing secrets must be whsec_ followed by base64".into(),
                    }],
                })?;
            let secrets = SigningSecrets::new(signing_secret, secrets.signing.clone());
            secret_files.watch_signing_secrets(config, &secrets);
            Some(Forwarding {
                forwarder: Forwarder::new(
                    ForwarderConfig {
                        max_attempts: config.webhooks.forward_max_attempts,
                        destinations: Some(Arc::clone(gateway.callback_policy())),
                        ..ForwarderConfig::default()
                    },
                    // Its own client: a resolver that refuses forbidden
                    // addresses at connect time (DNS rebinding).
                    callback_client(Arc::clone(gateway.callback_policy())).map_err(|err| {
                        std::io::Error::other(format!("building the callback client: {err}"))
                    })?,
                ),
                secrets,
            })
        }
        None => None,
    };
    let runs = &config.runs;
    // Connects lazily: a Redis that is down at start is a degraded state
    // (async runs, streams and keyed Invokes unavailable), not a failed start.
    let unusable = |error: StoreUnavailable| {
        ConfigError::from(ConfigIssue {
            path: "state".into(),
            message: error.to_string(),
        })
    };
    let redis = match config.state.redis(&env)? {
        Some(redis_config) => {
            let connection = RedisConnection::open(&redis_config).map_err(unusable)?;
            tracing::info!(
                cluster = connection.is_cluster(),
                prefix = connection.prefix(),
                "run state and idempotency records in Redis"
            );
            // One round trip at start (none per call): its outcome is the
            // first value of `flowgate.state_store.up`, and an unreachable
            // Redis or a refused password is logged now, not on first use.
            let probe = connection.clone();
            tokio::spawn(async move { probe.check().await });
            Some((connection, redis_config))
        }
        None => None,
    };
    let store: Arc<dyn RunStore> = match &redis {
        None => Arc::new(MemoryRunStore::new(StoreLimits {
            capacity: runs.capacity,
            ttl: runs.ttl,
        })),
        Some((connection, redis_config)) => Arc::new(
            RedisRunStore::open(connection.clone(), redis_config, runs.ttl).map_err(unusable)?,
        ),
    };
    let idempotency_store: Arc<dyn IdempotencyStore> = match &redis {
        None => Arc::new(MemoryIdempotencyStore::new(
            config.idempotency.ttl,
            usize::try_from(config.idempotency.capacity).unwrap_or(usize::MAX),
        )),
        Some((connection, _)) => Arc::new(RedisIdempotencyStore::new(
            connection.clone(),
            config.idempotency.ttl,
        )),
    };
    let tracker = RunTracker::new(
        Arc::clone(&gateway),
        store,
        TrackerConfig {
            poll_initial: runs.poll_initial,
            poll_max: runs.poll_max,
            max_watch: runs.max_watch,
            max_background_runs: runs.max_background_runs,
            owner_lease: runs.owner_lease,
            ..TrackerConfig::default()
        },
        IngressConfig {
            public_url: config.webhooks.public_url.clone(),
            provider_secrets: secrets.providers.into_iter().collect(),
            tolerance: config.webhooks.tolerance,
            replay_store: shared.map(|shared| shared.replay),
        },
        forwarding,
    );
    let idempotency =
        Idempotency::new(idempotency_store).with_panic_answer(crate::recorded::panic_answer());
    Ok(App {
        gateway,
        tracker,
        idempotency,
        redis: redis.map(|(connection, _)| connection),
        quotas,
        readiness: Readiness::default(),
        secret_files,
        config: config.clone(),
    })
}
