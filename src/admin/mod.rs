//! The admin HTTP listener (`server.admin_listen`, default
//! `127.0.0.1:9464`), kept off the gRPC port so it can be exposed to the
//! scraper and the kubelet only:
//! - `GET /metrics`: flowgate's metrics and the standard `process_*`
//!   metrics ([`process`]) in the Prometheus text format;
//! - `GET /healthz`: `200 ok` while the process runs (liveness);
//! - `GET /readyz`: `200 ready` while the gRPC health service says SERVING,
//!   `503 not ready` before it starts and from the moment shutdown begins
//!   (readiness, for tools that do not speak gRPC probes).

mod process;

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Router,
    http::{StatusCode, header},
    routing::get,
};
use flowgate_telemetry_setup::PrometheusMetrics;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// Whether the gateway takes traffic: set when the gRPC health service
/// turns SERVING, cleared when shutdown begins. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the gateway ready (`true`) or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// True while the gateway takes traffic.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

const PLAIN_TEXT: &str = "text/plain; charset=utf-8";

/// The admin routes.
pub fn router(metrics: PrometheusMetrics, readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    let mut page = metrics.render();
                    // Reading /proc is blocking file I/O.
                    if let Ok(stats) =
                        tokio::task::spawn_blocking(process::ProcessStats::read).await
                    {
                        stats.render(&mut page);
                    }
                    (
                        [(header::CONTENT_TYPE, PrometheusMetrics::CONTENT_TYPE)],
                        page,
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(|| async { ([(header::CONTENT_TYPE, PLAIN_TEXT)], "ok\n") }),
        )
        .route(
            "/readyz",
            get(move || {
                let ready = readiness.is_ready();
                async move {
                    let (status, body) = if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    };
                    (status, [(header::CONTENT_TYPE, PLAIN_TEXT)], body)
                }
            }),
        )
}

/// Serves the admin routes on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: PrometheusMetrics,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, readiness))
        .with_graceful_shutdown(shutdown)
        .await
}

/// An admin listener running in the background.
#[derive(Debug)]
pub struct RunningAdmin {
    /// The bound address.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningAdmin {
    /// Stops the listener and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunningAdmin {
    fn drop(&mut self) {
        if self.shutdown.is_some() {
            self.task.abort();
        }
    }
}

/// Binds `addr` (port 0 picks one) and serves in the background.
pub async fn spawn(
    addr: SocketAddr,
    metrics: PrometheusMetrics,
    readiness: Readiness,
) -> std::io::Result<RunningAdmin> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, metrics, readiness, async move {
        let _ = shutdown_rx.await;
    }));
    Ok(RunningAdmin {
        addr,
        shutdown: Some(shutdown_tx),
        task,
    })
}
