//! Building and running the servers.
//!
//! The gRPC stack, outermost first:
//! 1. tonic's HTTP/2 server (keepalive, per-connection settings);
//! 2. the edge layers of [`edge_stack`]: panics caught, telemetry, callers
//!    authenticated, load shedding, malformed requests (see there, one comment a layer);
//! 3. the routes: `WorkflowGateway` (message size capped by
//!    `server.max_request_bytes`), `grpc.health.v1.Health`, and server
//!    reflection v1 and v1alpha (with the health descriptor registered).
//!
//! With `[server.tls]` the listener speaks TLS ([`crate::tls`]: its own
//! acceptor, certificates re-read while serving) and [`PeerIdentityLayer`]
//! sits outermost, putting a verified client certificate's identity into
//! each request; without it the plaintext path is as it was.
//!
//! Beside it, when `webhooks.listen` is set, the callback ingress
//! ([`crate::ingress`]).
//!
//! Shutdown, all within one `server.shutdown_grace` from the signal:
//! 1. health turns NOT_SERVING, then every open StreamStatus and
//!    Health.Watch stream ends at once with UNAVAILABLE, reason
//!    `SHUTTING_DOWN` (clients reconnect to another replica), and the
//!    listeners stop accepting;
//! 2. in-flight calls finish;
//! 3. gateway-run background runs finish, then queued and in-flight
//!    callback forwards are delivered ([`RunTracker::drain`]);
//!
//! what the grace did not cover is abandoned, logged once with counts and
//! counted in `flowgate.shutdown.abandoned`. An idle replica exits at once.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

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
use flowgate_telemetry_setup::RpcTelemetryLayer;
use flowgate_webhook::{Forwarder, ForwarderConfig, StandardSecret, callback_client};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{
    service::Routes,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::{ServingStatus, pb::health_server::HealthServer, server::HealthService};
use tower::{
    ServiceBuilder,
    layer::util::{Identity, Stack},
};

use crate::{
    admin::Readiness,
    auth::{CallerRegistry, quota::CallerQuotas},
    config::{Config, ConfigError, ConfigIssue, ServerConfig},
    health::DrainingHealth,
    ingress,
    layers::{
        auth::AuthLayer, malformed::MalformedRequestLayer, panic::CatchPanicLayer,
        shed::LoadShedLayer,
    },
    proto::{FILE_DESCRIPTOR_SET, pb::workflow_gateway_server::WorkflowGatewayServer},
    reload::SecretFiles,
    service::GatewayService,
    tls::{PeerIdentityLayer, TlsIncoming, TlsMaterial},
};

/// Every method served, as `package.Service/Method`: the names spans and
/// metrics use (any other path is recorded as `_OTHER`).
pub const SERVED_METHODS: &[&str] = &[
    "flowgate.v1.WorkflowGateway/Invoke",
    "flowgate.v1.WorkflowGateway/StreamStatus",
    "flowgate.v1.WorkflowGateway/VerifyWebhook",
    "flowgate.v1.WorkflowGateway/GetWorkflowSchema",
    "grpc.health.v1.Health/Check",
    "grpc.health.v1.Health/Watch",
    "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The tower layers around every gRPC route, outermost first (see
/// [`edge_stack`]).
pub type EdgeStack = ServiceBuilder<
    Stack<
        MalformedRequestLayer,
        Stack<
            LoadShedLayer,
            Stack<AuthLayer, Stack<RpcTelemetryLayer, Stack<CatchPanicLayer, Identity>>>,
        >,
    >,
>;

/// The one place the gRPC edge's tower stack is built, outermost first.
/// [`serve`] puts it around the routes; tests put it around their own.
pub fn edge_stack(server: &ServerConfig, callers: Arc<CallerRegistry>) -> EdgeStack {
    ServiceBuilder::new()
        // A panic anywhere below (a layer, a handler, a stream item) becomes
        // INTERNAL / INTERNAL_PANIC; outermost, so nothing escapes it.
        .layer(CatchPanicLayer::new(SERVED_METHODS))
        // Server span and RPC metrics per call (health and reflection too);
        // outside the limit, so time spent queued and shed calls show.
        .layer(RpcTelemetryLayer::new(SERVED_METHODS))
        // Who is calling: a bearer key or a client certificate becomes an
        // `Arc<Caller>` extension, or the call ends UNAUTHENTICATED /
        // CALLER_UNAUTHENTICATED; health always open. Inside telemetry
        // (refusals are counted, labelled by caller), outside the limit (a
        // stranger takes no slot).
        .layer(AuthLayer::new(callers))
        // At most `max_concurrent_requests` calls at once, up to
        // `max_queued_requests` more wait (each within its deadline), the
        // rest are shed with RESOURCE_EXHAUSTED / OVERLOADED; health exempt.
        .layer(LoadShedLayer::new(
            server.max_concurrent_requests,
            server.max_queued_requests,
            server.default_deadline,
        ))
        // tonic's INTERNAL for an undecodable request becomes
        // INVALID_ARGUMENT / MALFORMED_REQUEST.
        .layer(MalformedRequestLayer)
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Http(#[from] flowgate_providers::HttpClientError),
    /// A provider's dialect is not registered.
    #[error(transparent)]
    Dialect(#[from] flowgate_providers::UnknownDialect),
    /// Binding or serving failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The reflection service could not be built.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Everything the servers share, built from the configuration.
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
    secret_files: SecretFiles,
    config: Config,
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
    let idempotency = Idempotency::new(idempotency_store);
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

/// Servers running in the background (tests, the demo).
#[derive(Debug)]
pub struct RunningServer {
    /// The bound gRPC address.
    pub addr: SocketAddr,
    /// The bound ingress address, when `webhooks.listen` is set.
    pub ingress_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningServer {
    /// Stops accepting, drains, and waits for the servers to finish.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(join) => Err(ServeError::Io(std::io::Error::other(join.to_string()))),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if self.shutdown.is_some() {
            self.task.abort();
        }
    }
}

/// The listeners of a configuration.
#[derive(Debug)]
pub struct Listeners {
    grpc: TcpListener,
    ingress: Option<TcpListener>,
    tls: Option<TlsMaterial>,
}

impl Listeners {
    /// Binds `server.listen` and `webhooks.listen` (port 0 picks a free one),
    /// after reading the `[server.tls]` files when TLS is configured.
    pub async fn bind(config: &Config) -> Result<Self, ServeError> {
        let tls = match &config.server.tls {
            Some(settings) => Some(TlsMaterial::load(settings)?),
            None => None,
        };
        let grpc = TcpListener::bind(config.server.listen).await?;
        let ingress = match config.webhooks.listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Ok(Self { grpc, ingress, tls })
    }

    /// The bound gRPC and ingress addresses.
    pub fn local_addrs(&self) -> std::io::Result<(SocketAddr, Option<SocketAddr>)> {
        let ingress = match &self.ingress {
            Some(listener) => Some(listener.local_addr()?),
            None => None,
        };
        Ok((self.grpc.local_addr()?, ingress))
    }
}

/// Binds and serves in the background until [`RunningServer::shutdown`].
pub async fn spawn(app: App) -> Result<RunningServer, ServeError> {
    let listeners = Listeners::bind(&app.config).await?;
    let (addr, ingress_addr) = listeners.local_addrs()?;
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(app, listeners, async move {
        let _ = shutdown_rx.await;
    }));
    Ok(RunningServer {
        addr,
        ingress_addr,
        shutdown: Some(shutdown_tx),
        task,
    })
}

/// Serves on `listeners` until `shutdown` resolves, then drains.
pub async fn serve(
    app: App,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let server = app.config.server.clone();
    let service = GatewayService::new(
        Arc::clone(&app.gateway),
        Arc::clone(&app.tracker),
        server.default_deadline,
    )
    .with_idempotency(app.idempotency.clone())
    .with_quotas(Arc::clone(&app.quotas));
    let gateway_server =
        WorkflowGatewayServer::new(service).max_decoding_message_size(server.max_request_bytes);

    let health = tonic_health::server::HealthReporter::new();
    let health_service = HealthServer::new(DrainingHealth::new(
        HealthService::from_health_reporter(health.clone()),
        app.tracker.shutdown_signal(),
    ));
    health
        .set_serving::<WorkflowGatewayServer<GatewayService>>()
        .await;
    health.set_service_status("", ServingStatus::Serving).await;
    app.readiness.set(true);
    // Rotated secret files take effect without a restart (crate::reload).
    let _secret_reload = app.secret_files.spawn();

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    // The shutdown signal turns health NOT_SERVING before the listeners
    // close, so load balancers stop routing here while calls drain.
    let (drain_started_tx, drain_started_rx) = oneshot::channel::<tokio::time::Instant>();
    let (ingress_stop_tx, ingress_stop_rx) = oneshot::channel::<()>();
    let draining_health = health.clone();
    let draining_readiness = app.readiness.clone();
    let draining_tracker = Arc::clone(&app.tracker);
    let signal = async move {
        shutdown.await;
        tracing::info!("shutdown requested: NOT_SERVING, draining in-flight calls");
        let _ = drain_started_tx.send(tokio::time::Instant::now());
        draining_readiness.set(false);
        draining_health
            .set_not_serving::<WorkflowGatewayServer<GatewayService>>()
            .await;
        draining_health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        // Long-lived streams end now rather than holding the process for
        // the whole grace.
        draining_tracker.begin_shutdown();
        let _ = ingress_stop_tx.send(());
    };

    let ingress_task = listeners.ingress.map(|listener| {
        let router = ingress::router(Arc::clone(&app.tracker), app.config.webhooks.max_body_bytes);
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = ingress_stop_rx.await;
                })
                .await;
            if let Err(err) = served {
                tracing::warn!(%err, "callback ingress stopped with an error");
            }
        })
    });

    let routes = Routes::new(gateway_server)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));

    let callers = app.config.caller_registry();
    let serving = match listeners.tls {
        None => {
            // Options set on the builder apply only to listeners tonic binds
            // itself: accepted connections get TCP_NODELAY here (without it
            // small gRPC frames wait on Nagle and delayed ACKs: ~40 ms stalls).
            let incoming = TcpIncoming::from(listeners.grpc).with_nodelay(Some(true));
            futures::future::Either::Left(
                builder
                    // Panics, telemetry, callers, load shedding, malformed requests.
                    .layer(edge_stack(&server, Arc::clone(&callers)))
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(incoming, signal),
            )
        }
        Some(material) => {
            // The TLS acceptor sets TCP_NODELAY itself.
            let incoming = TlsIncoming::new(listeners.grpc, material);
            futures::future::Either::Right(
                builder
                    // The client certificate's identity into each request,
                    // before anything (auth) reads it; copying extensions
                    // cannot panic.
                    .layer(PeerIdentityLayer)
                    // Panics, telemetry, callers, load shedding, malformed requests.
                    .layer(edge_stack(&server, Arc::clone(&callers)))
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(incoming, signal),
            )
        }
    };
    tokio::pin!(serving);
    // One grace period from the signal bounds every step of the drain.
    let grace_ends = |started: tokio::time::Instant| {
        started
            .checked_add(server.shutdown_grace)
            .unwrap_or(started)
    };
    let (result, deadline) = tokio::select! {
        result = &mut serving => (
            result.map_err(ServeError::from),
            grace_ends(tokio::time::Instant::now()),
        ),
        started = drain_started_rx => {
            let deadline = grace_ends(started.unwrap_or_else(|_| tokio::time::Instant::now()));
            let result = match tokio::time::timeout_at(deadline, serving).await {
                Ok(result) => result.map_err(ServeError::from),
                Err(_) => {
                    tracing::warn!(
                        grace_seconds = server.shutdown_grace.as_secs_f64(),
                        "in-flight calls outlived the shutdown grace period; closing them"
                    );
                    Ok(())
                }
            };
            (result, deadline)
        }
    };
    if let Some(task) = ingress_task {
        let _ = tokio::time::timeout_at(deadline, task).await;
    }
    // Background runs, then callback forwards, get what is left.
    app.tracker.drain(deadline).await;
    result
}
