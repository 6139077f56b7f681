//! `grpc.health.v1.Health` with Watch streams that end at shutdown.
//!
//! tonic-health's Watch streams stay open until the server is torn down,
//! so a replica with a watching load balancer would wait out the whole
//! shutdown grace. [`DrainingHealth`] delegates to tonic-health and, once
//! shutdown begins, sends the last status change (NOT_SERVING) and then
//! ends every Watch stream with UNAVAILABLE, reason `SHUTTING_DOWN`.

use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::{
    pb::{HealthCheckRequest, HealthCheckResponse, health_server::Health},
    server::HealthService,
};

use crate::status::to_status;

/// See the module docs.
#[derive(Debug)]
pub struct DrainingHealth {
    inner: HealthService,
    shutdown: CancellationToken,
}

impl DrainingHealth {
    /// Serves `inner`; Watch streams end when `shutdown` is cancelled.
    pub fn new(inner: HealthService, shutdown: CancellationToken) -> Self {
        Self { inner, shutdown }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for DrainingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inner: WatchStream = Box::pin(self.inner.watch(request).await?.into_inner());
        let shutdown = self.shutdown.clone();
        let stream = futures::stream::unfold(
            (inner, shutdown, false),
            |(mut inner, shutdown, done)| async move {
                if done {
                    return None;
                }
                tokio::select! {
                    // A status change first: watchers see NOT_SERVING before
                    // the stream ends.
                    biased;
                    item = inner.next() => item.map(|item| (item, (inner, shutdown, false))),
                    () = shutdown.cancelled() => {
                        let status = to_status(&flowgate_state::shutting_down());
                        Some((Err(status), (inner, shutdown, true)))
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}
