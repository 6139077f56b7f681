//! Building and running the gRPC server.
//!
//! The stack, outermost first:
//! 1. tonic's HTTP/2 server (keepalive, per-connection settings);
//! 2. telemetry ([`RpcTelemetryLayer`]): one server span per call, named
//!    `package.Service/Method`, continuing the caller's `traceparent`, with
//!    the gRPC status code, plus the RPC request and latency metrics. It is
//!    outside the limit so time spent waiting for a slot is visible;
//! 3. a global concurrency limit (`server.max_concurrent_requests`): calls
//!    beyond it wait for a slot instead of overloading upstreams;
//! 4. the routes: `WorkflowGateway` (message size capped by
//!    `server.max_request_bytes`), `grpc.health.v1.Health`, and server
//!    reflection v1 and v1alpha (with the health descriptor registered).
//!
//! Shutdown: on the shutdown signal health turns NOT_SERVING, the listener
//! stops accepting, and in-flight calls get `server.shutdown_grace` to
//! finish.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use flowgate_core::Gateway;
use flowgate_providers::{HttpClient, build_provider};
use flowgate_telemetry::RpcTelemetryLayer;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tower::limit::GlobalConcurrencyLimitLayer;

use crate::{
    config::{Config, ConfigError, ServerConfig},
    proto::{FILE_DESCRIPTOR_SET, pb::workflow_gateway_server::WorkflowGatewayServer},
    service::GatewayService,
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

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Http(#[from] flowgate_providers::HttpClientError),
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

/// Builds the engine from a configuration, loading provider keys through
/// `env` (the process environment in production).
pub fn build_gateway(
    config: &Config,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Gateway, ServeError> {
    let http = HttpClient::new()?;
    let providers = config
        .provider_settings(env)?
        .into_iter()
        .map(|settings| build_provider(settings, &http))
        .collect();
    Ok(Gateway::new(providers))
}

/// A server running in the background (tests, the demo).
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningServer {
    /// Stops accepting, drains, and waits for the server to finish.
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

/// Binds `server.listen` (port 0 picks a free one) and serves in the
/// background until [`RunningServer::shutdown`].
pub async fn spawn(gateway: Gateway, server: ServerConfig) -> Result<RunningServer, ServeError> {
    let listener = TcpListener::bind(server.listen).await?;
    let addr = listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(gateway, server, listener, async move {
        let _ = shutdown_rx.await;
    }));
    Ok(RunningServer {
        addr,
        shutdown: Some(shutdown_tx),
        task,
    })
}

/// Serves on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    gateway: Gateway,
    server: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let service = GatewayService::new(Arc::new(gateway), server.default_deadline);
    let gateway_server =
        WorkflowGatewayServer::new(service).max_decoding_message_size(server.max_request_bytes);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<WorkflowGatewayServer<GatewayService>>()
        .await;
    health.set_service_status("", ServingStatus::Serving).await;

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    // The shutdown signal turns health NOT_SERVING before the listener
    // closes, so load balancers stop routing here while calls drain.
    let (drain_started_tx, drain_started_rx) = oneshot::channel::<()>();
    let draining_health = health.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutdown requested: NOT_SERVING, draining in-flight calls");
        draining_health
            .set_not_serving::<WorkflowGatewayServer<GatewayService>>()
            .await;
        draining_health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let _ = drain_started_tx.send(());
    };

    let router = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_nodelay(true)
        // Server span and RPC metrics per call (health and reflection too).
        .layer(RpcTelemetryLayer::new(SERVED_METHODS))
        // At most `max_concurrent_requests` calls at once; the rest wait.
        .layer(GlobalConcurrencyLimitLayer::new(
            server.max_concurrent_requests,
        ))
        .add_service(gateway_server)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let serving = router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal);
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => return Ok(result?),
        _ = drain_started_rx => {}
    }
    match tokio::time::timeout(server.shutdown_grace, serving).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            tracing::warn!(
                grace_seconds = server.shutdown_grace.as_secs_f64(),
                "in-flight calls outlived the shutdown grace period; closing them"
            );
            Ok(())
        }
    }
}
