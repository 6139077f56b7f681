//! The admin HTTP listener (`server.admin_listen`, default
//! `127.0.0.1:9464`): `GET /metrics` in the Prometheus text format. Kept off
//! the gRPC port so it can be exposed to the scraper only.

use std::{future::Future, net::SocketAddr};

use axum::{Router, http::header, routing::get};
use flowgate_telemetry_setup::PrometheusMetrics;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// The admin routes.
pub fn router(metrics: PrometheusMetrics) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, PrometheusMetrics::CONTENT_TYPE)],
                    metrics.render(),
                )
            }
        }),
    )
}

/// Serves the admin routes on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: PrometheusMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics))
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
pub async fn spawn(addr: SocketAddr, metrics: PrometheusMetrics) -> std::io::Result<RunningAdmin> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, metrics, async move {
        let _ = shutdown_rx.await;
    }));
    Ok(RunningAdmin {
        addr,
        shutdown: Some(shutdown_tx),
        task,
    })
}
