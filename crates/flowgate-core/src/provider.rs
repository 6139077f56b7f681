//! The trait every dialect implements.

use std::fmt;

use async_trait::async_trait;

#[cfg(doc)]
use crate::StreamEvent;
use crate::{
    Deadline, FieldViolation, GatewayError, Invocation, OutputSink, ProviderKind, RunError,
    RunOutcome, WorkflowRef, WorkflowSchema,
};

/// How a dialect runs an async invocation, which decides what the run
/// tracker does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsyncMode {
    /// No async mode upstream: the gateway runs the synchronous call in the
    /// background and publishes its outcome (AI Tutor).
    Background,
    /// The upstream runs the workflow asynchronously and answers with a run
    /// id the tracker polls; callbacks, if any, are signed with configured
    /// secrets (Knouds).
    Polled,
    /// The upstream delivers the result to a callback URL sent with the
    /// request, signed with a secret of that run returned at submission
    /// (Fetch Hive). With a public ingress the gateway puts its own URL in
    /// the request and keeps the secret; without one the caller's URL is
    /// passed through and the tracker polls.
    Callback,
}

/// One configured provider: a dialect plus its base URL, key and policies.
///
/// Implementations translate an [`Invocation`] into the vendor's REST call
/// and its answer into a [`RunOutcome`] or a typed [`GatewayError`]. They
/// never see protobuf types.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// The configured name (unique in the gateway).
    fn name(&self) -> &str;

    /// The dialect.
    fn kind(&self) -> ProviderKind;

    /// Dialect rules checked before any network call (slug syntax, required
    /// fields, mode requirements). Empty when the invocation can be sent.
    fn validate(&self, invocation: &Invocation) -> Vec<FieldViolation>;

    /// Runs the invocation upstream. Only called after [`Provider::validate`]
    /// found nothing.
    async fn invoke(
        &self,
        invocation: &Invocation,
        deadline: Deadline,
    ) -> Result<RunOutcome, GatewayError>;

    /// Runs the invocation upstream and streams its output into `sink`
    /// ([`StreamEvent::Started`] once accepted, then text deltas), returning
    /// the final outcome; an outcome whose output went out as deltas carries
    /// none. Only called after [`Provider::validate`] found nothing, never
    /// for async invocations.
    ///
    /// The default, for dialects without a streaming endpoint, is a unary
    /// [`Provider::invoke`] that sends nothing into the sink: the caller
    /// gets the first and final events together.
    async fn invoke_stream(
        &self,
        invocation: &Invocation,
        deadline: Deadline,
        sink: &OutputSink,
    ) -> Result<RunOutcome, GatewayError> {
        let _ = sink;
        self.invoke(invocation, deadline).await
    }

    /// How the dialect runs async invocations (see [`AsyncMode`]).
    fn async_mode(&self) -> AsyncMode {
        AsyncMode::Polled
    }

    /// True when the dialect runs workflows asynchronously itself. When
    /// false the gateway offers async by running the synchronous call in the
    /// background. Derived from [`Provider::async_mode`].
    fn native_async(&self) -> bool {
        self.async_mode() != AsyncMode::Background
    }

    /// A run error read from a callback body, made safe to show a caller
    /// (the provider's key redacted, the text bounded), as the dialect's
    /// own decoders do for every answer it reads.
    fn safe_run_error(&self, error: RunError) -> RunError {
        error
    }

    /// The current state of a run the provider knows as `upstream_id`.
    /// `Ok(None)` when the dialect has no status endpoint.
    async fn run_status(
        &self,
        upstream_id: &str,
        deadline: Deadline,
    ) -> Result<Option<RunOutcome>, GatewayError> {
        let _ = (upstream_id, deadline);
        Ok(None)
    }

    /// Fetches the workflow's input schema from the provider's schema
    /// endpoint. `Ok(None)`: the dialect publishes no schema (the default).
    /// An unknown workflow is a NOT_FOUND error with a resource. Called
    /// through the gateway's schema cache, never per invocation.
    async fn fetch_schema(
        &self,
        workflow: &WorkflowRef,
        deadline: Deadline,
    ) -> Result<Option<WorkflowSchema>, GatewayError> {
        let _ = (workflow, deadline);
        Ok(None)
    }

    /// The variant a deployment target without one runs (Fetch Hive's
    /// configured `default_variant`), so declared schemas keyed by
    /// `deployment/variant` apply to it too. `None` for other dialects.
    fn default_variant(&self) -> Option<&str> {
        None
    }
}
