//! Binding the listeners and serving in the background.

use std::net::SocketAddr;

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use super::{App, ServeError, serve};
use crate::{config::Config, tls::TlsMaterial};

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
    pub(super) grpc: TcpListener,
    pub(super) ingress: Option<TcpListener>,
    pub(super) tls: Option<TlsMaterial>,
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
