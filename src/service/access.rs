//! Per-call helpers of the service: the access log record a call fills in,
//! the caller the auth layer resolved, the names capability checks match,
//! and [`reject`], the one way a failed call becomes a logged `Status`.

use std::sync::Arc;

use flowgate_core::{ErrorClass, GatewayError, WorkflowRef, reason::Reason};
use flowgate_telemetry::CallRecord;
use tonic::{Request, Status};

use crate::{
    auth::{Caller, Required, UNAUTHENTICATED},
    layers::auth::unauthenticated,
    proto::pb,
    status::to_status,
};

/// The target of the "call failed" lines: stable for log filters
/// (`RUST_LOG=flowgate::service=warn`), wherever the code lives.
const LOG_TARGET: &str = "flowgate::service";

/// This call's access log record (see [`CallRecord`]): what the service
/// learns is written into it. Absent when served without the RPC layer.
#[derive(Clone, Debug, Default)]
pub(super) struct Access(Option<Arc<CallRecord>>);

impl Access {
    pub(super) fn of<T>(request: &Request<T>) -> Self {
        Self(request.extensions().get::<Arc<CallRecord>>().cloned())
    }

    pub(super) fn target(&self, provider: &str, workflow: &str) {
        if let Some(record) = &self.0 {
            record.update(|details| {
                details.provider = Some(provider.to_owned());
                details.workflow = Some(workflow.to_owned());
            });
        }
    }

    pub(super) fn run_id(&self, run_id: &str) {
        if let Some(record) = &self.0 {
            record.update(|details| details.run_id = Some(run_id.to_owned()));
        }
    }

    pub(super) fn answered(&self, response: &pb::InvokeResponse) {
        if let Some(record) = &self.0 {
            record.update(|details| {
                details.run_id = Some(response.run_id.clone());
                details.credits = response.usage.as_ref().and_then(|usage| usage.credits);
            });
        }
    }

    /// [`reject`], keeping the reason for the access log.
    pub(super) fn reject(&self, error: &GatewayError) -> Status {
        if let Some(record) = &self.0 {
            record.update(|details| details.reason = Some(error.reason.clone()));
        }
        reject(error)
    }
}

/// The caller the auth layer resolved; none means the service is served
/// without it, and nothing is allowed.
pub(super) fn caller_of<T>(request: &Request<T>) -> Result<Arc<Caller>, Status> {
    request
        .extensions()
        .get::<Arc<Caller>>()
        .cloned()
        .ok_or_else(|| reject(&unauthenticated()))
}

/// The owner written into the run ids a caller gets: none for the caller
/// `unauthenticated` (an open gateway's ids stay as they were).
pub(super) fn owner(caller: &Caller) -> Option<&str> {
    (caller.name() != UNAUTHENTICATED).then_some(caller.name())
}

/// The name capability patterns match a workflow by: the Fetch Hive
/// deployment (any variant), the AI Tutor workflow id, the Knouds slug.
pub(super) fn workflow_name(workflow: &WorkflowRef) -> &str {
    match workflow {
        WorkflowRef::Deployment { name, .. } => name,
        WorkflowRef::WorkflowId(id) => id,
        WorkflowRef::Slug(slug) => slug,
    }
}

/// PERMISSION_DENIED / `CALLER_CAPABILITY_DENIED`, naming the capability
/// that would allow the call.
pub(super) fn denied(required: Required<'_>) -> GatewayError {
    let required = required.to_string();
    GatewayError::new(
        ErrorClass::PermissionDenied,
        Reason::CallerCapabilityDenied,
        format!("this caller lacks the capability {required}"),
    )
    .with_metadata("required_capability", required)
}

/// What StreamStatus answers for a run it does not know (the run tracker's
/// answer, repeated so another caller's run looks the same).
pub(super) fn unknown_run(run_id: &str) -> GatewayError {
    GatewayError::not_found(
        Reason::UnknownRun,
        "flowgate.run",
        run_id,
        "no run with this id is known to the gateway or its provider",
    )
}

/// Logs a failed call (class and reason only: low cardinality, no bodies)
/// and converts it.
pub(super) fn reject(error: &GatewayError) -> Status {
    let span = tracing::Span::current();
    span.record("error.type", error.class.as_str());
    if let Some(upstream) = &error.upstream {
        span.record("flowgate.provider", upstream.provider.as_str());
    }
    // Log lines carry their own context (the log layer does not print
    // span fields): the provider and the HTTP status when there was one.
    let provider = error.upstream.as_ref().map(|up| up.provider.as_str());
    let http_status = error.upstream.as_ref().and_then(|up| up.http_status);
    match error.class {
        ErrorClass::Internal | ErrorClass::ProtocolError => {
            tracing::warn!(
                target: LOG_TARGET,
                class = error.class.as_str(),
                reason = %error.reason,
                provider,
                http_status,
                message = %error.message,
                "call failed"
            );
        }
        _ => tracing::info!(
            target: LOG_TARGET,
            class = error.class.as_str(),
            reason = %error.reason,
            provider,
            http_status,
            "call failed"
        ),
    }
    to_status(error)
}
