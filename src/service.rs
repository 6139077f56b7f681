//! The `flowgate.v1.WorkflowGateway` service: thin glue from gRPC to the
//! engine. Decode, call [`Gateway`], encode; errors go through
//! [`crate::status::to_status`].

use std::{pin::Pin, sync::Arc, time::Duration};

use flowgate_core::{Deadline, Gateway, GatewayError};
use futures::Stream;
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::{Instrument as _, field};

use crate::{
    convert,
    proto::pb::{self, workflow_gateway_server::WorkflowGateway},
    status::{insert_rate_limit, to_status},
};

/// Most of a caller's deadline the engine keeps back for answering.
const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct GatewayService {
    gateway: Arc<Gateway>,
    default_deadline: Duration,
}

impl GatewayService {
    /// Serves `gateway`; calls without a deadline get `default_deadline`.
    pub fn new(gateway: Arc<Gateway>, default_deadline: Duration) -> Self {
        Self {
            gateway,
            default_deadline,
        }
    }

    fn deadline(&self, metadata: &MetadataMap) -> Deadline {
        let caller = metadata
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout);
        // The caller's own deadline wins, longer or shorter; the provider's
        // timeout still caps each upstream request. A small margin lets the
        // engine answer DEADLINE_EXCEEDED with its details before the
        // transport's own timer cancels the call with a bare CANCELLED.
        match caller {
            Some(timeout) => {
                let margin = (timeout / 20).min(DEADLINE_MARGIN);
                Deadline::after(timeout.saturating_sub(margin))
            }
            None => Deadline::after(self.default_deadline),
        }
    }
}

/// Parses a `grpc-timeout` header: up to 8 digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.checked_mul(3600)?),
        "M" => Duration::from_secs(value.checked_mul(60)?),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

fn unimplemented(what: &str) -> Status {
    to_status(&GatewayError::unimplemented(format!(
        "{what} is part of the published API but is not available in this flowgate version yet"
    )))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RunStatusEvent, Status>> + Send>>;

#[tonic::async_trait]
impl WorkflowGateway for GatewayService {
    async fn invoke(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        let deadline = self.deadline(request.metadata());
        // A child of the server span (`flowgate.v1.WorkflowGateway/Invoke`).
        // `flowgate.schema_cache` is recorded by the schema cache
        // (`flowgate_telemetry::Metrics::schema_cache`): `hit` or `miss`.
        let span = tracing::info_span!(
            "Invoke",
            flowgate.provider = field::Empty,
            flowgate.dialect = field::Empty,
            flowgate.workflow = field::Empty,
            flowgate.run_id = field::Empty,
            flowgate.run.status = field::Empty,
            flowgate.schema_cache = field::Empty,
            error.type = field::Empty,
        );
        async move {
            let (target, invocation) =
                convert::invoke_request(request.into_inner()).map_err(|err| reject(&err))?;
            let span = tracing::Span::current();
            span.record("flowgate.dialect", target.workflow.kind().as_str());
            span.record("flowgate.workflow", field::display(target.workflow.label()));
            match self.gateway.invoke(&target, &invocation, deadline).await {
                Ok(invoked) => {
                    span.record("flowgate.provider", invoked.provider.name());
                    span.record("flowgate.run_id", invoked.run_id.encode());
                    if let Some(status) = invoked.outcome.status {
                        span.record("flowgate.run.status", status.as_str());
                    }
                    let rate_limit = invoked.outcome.rate_limit.clone();
                    let mut response = Response::new(convert::invoke_response(invoked));
                    insert_rate_limit(&rate_limit, response.metadata_mut());
                    tracing::debug!("invoked");
                    Ok(response)
                }
                Err(err) => Err(reject(&err)),
            }
        }
        .instrument(span)
        .await
    }

    type StreamStatusStream = EventStream;

    async fn stream_status(
        &self,
        _request: Request<pb::StreamStatusRequest>,
    ) -> Result<Response<Self::StreamStatusStream>, Status> {
        Err(unimplemented("StreamStatus"))
    }

    async fn verify_webhook(
        &self,
        _request: Request<pb::VerifyWebhookRequest>,
    ) -> Result<Response<pb::VerifyWebhookResponse>, Status> {
        Err(unimplemented("VerifyWebhook"))
    }

    async fn get_workflow_schema(
        &self,
        _request: Request<pb::GetWorkflowSchemaRequest>,
    ) -> Result<Response<pb::GetWorkflowSchemaResponse>, Status> {
        Err(unimplemented("GetWorkflowSchema"))
    }
}

/// Logs a failed call (class and reason only: low cardinality, no bodies)
/// and converts it.
fn reject(error: &GatewayError) -> Status {
    let span = tracing::Span::current();
    span.record("error.type", error.class.as_str());
    if let Some(upstream) = &error.upstream {
        span.record("flowgate.provider", upstream.provider.as_str());
    }
    match error.class {
        flowgate_core::ErrorClass::Internal | flowgate_core::ErrorClass::ProtocolError => {
            tracing::warn!(reason = %error.reason, message = %error.message, "call failed");
        }
        _ => tracing::info!(reason = %error.reason, "call failed"),
    }
    to_status(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        for bad in ["", "S", "5", "5x", "123456789S", "-1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
