//! Building and running the servers.
//!
//! The gRPC stack, outermost first:
//! 1. tonic's server, HTTP/2 and HTTP/1.1 (gRPC-Web, Connect) (keepalive,
//!    per-connection settings);
//! 2. the edge layers of [`edge_stack`]: CORS, the Connect protocol (its
//!    own panics caught), gRPC-Web, panics caught, telemetry, callers
//!    authenticated, load shedding, malformed requests (see there, one
//!    comment a layer);
//! 3. the routes: `WorkflowGateway` (message size capped by
//!    `server.max_request_bytes`), `grpc.health.v1.Health`, and server
//!    reflection v1 and v1alpha (the health descriptor, the `google.rpc`
//!    error details and the well-known types registered too).
//!
//! With `[server.tls]` the listener speaks TLS ([`crate::tls`]: its own
//! acceptor, certificates re-read while serving) and [`PeerIdentityLayer`]
//! sits outermost, putting a verified client certificate's identity into
//! each request; without it the plaintext path is as it was.
//!
//! Beside it, when `webhooks.listen` is set, the callback ingress
//! ([`crate::ingress`], panics answered 500).
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

mod app;
mod listen;

pub use app::{App, build};
pub use listen::{Listeners, RunningServer, spawn};

use std::{future::Future, sync::Arc, time::Duration};

use flowgate_telemetry_setup::RpcTelemetryLayer;
use tokio::sync::oneshot;
use tonic::{
    service::Routes,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::{ServingStatus, pb::health_server::HealthServer, server::HealthService};
use tower::{
    ServiceBuilder,
    layer::util::{Identity, Stack},
    util::Either,
};
use tower_http::cors::CorsLayer;

use crate::{
    auth::CallerRegistry,
    config::{ConfigError, ServerConfig},
    connect::ConnectLayer,
    health::DrainingHealth,
    ingress,
    layers::{
        auth::AuthLayer, cors, malformed::MalformedRequestLayer, panic::CatchPanicLayer,
        shed::LoadShedLayer,
    },
    proto::{FILE_DESCRIPTOR_SET, pb::workflow_gateway_server::WorkflowGatewayServer},
    service::GatewayService,
    tls::{PeerIdentityLayer, TlsIncoming},
};

/// Every method served, as `package.Service/Method`: the names spans and
/// metrics use (any other path is recorded as `_OTHER`).
pub const SERVED_METHODS: &[&str] = &[
    "flowgate.v1.WorkflowGateway/Invoke",
    "flowgate.v1.WorkflowGateway/StreamStatus",
    "flowgate.v1.WorkflowGateway/InvokeStream",
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
            Stack<
                AuthLayer,
                Stack<
                    RpcTelemetryLayer,
                    Stack<
                        CatchPanicLayer,
                        Stack<
                            tonic_web::GrpcWebLayer,
                            Stack<ConnectLayer, Stack<Either<CorsLayer, Identity>, Identity>>,
                        >,
                    >,
                >,
            >,
        >,
    >,
>;

/// The one place the gRPC edge's tower stack is built, outermost first.
/// [`serve`] puts it around the routes; tests put it around their own.
pub fn edge_stack(server: &ServerConfig, callers: Arc<CallerRegistry>) -> EdgeStack {
    ServiceBuilder::new()
        // Browsers' CORS preflights answered, CORS headers on answers to
        // `[server.cors]` origins; no layer when none is allowed.
        .option_layer(cors::layer(&server.cors))
        // Connect requests (JSON or binary, unary or streaming) become the
        // gRPC requests below and their answers Connect answers, so every
        // layer and the error table serve them as gRPC (crate::connect).
        // Above gRPC-Web, which answers any other HTTP/1.1 request 400.
        // Catches panics in its own translation (answered in Connect's
        // form, INTERNAL_PANIC), so no byte path of ours is unprotected.
        .layer(ConnectLayer::new(server.max_request_bytes))
        // gRPC-Web (HTTP/1.1 or 2, binary or base64 text) becomes gRPC here
        // and the answer gRPC-Web again, so every layer below sees one
        // protocol (a panic answer too).
        .layer(tonic_web::GrpcWebLayer::new())
        // A panic anywhere below (a layer, a handler, a stream item) becomes
        // INTERNAL / INTERNAL_PANIC; outermost of the gRPC layers: above it
        // only the protocol adapters, which must answer in their own
        // protocol (CORS and gRPC-Web are library code; Connect catches its
        // own panics).
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
        // HTTP/1.1 beside HTTP/2 for gRPC-Web (browsers) and Connect
        // callers such as curl; see `edge_stack`.
        .accept_http1(true)
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
                    // CORS, gRPC-Web, panics, telemetry, callers, load
                    // shedding, malformed requests.
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
                    // CORS, gRPC-Web, panics, telemetry, callers, load
                    // shedding, malformed requests.
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
    // Idempotent calls detached from their callers, then background runs,
    // then callback forwards, get what is left.
    app.idempotency.drain(deadline).await;
    app.tracker.drain(deadline).await;
    result
}
