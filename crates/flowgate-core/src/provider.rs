//! The trait every dialect implements.

use std::fmt;

use async_trait::async_trait;

use crate::{
    Deadline, FieldViolation, GatewayError, Invocation, ProviderKind, RunOutcome, WorkflowRef,
    WorkflowSchema,
};

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

    /// True when the dialect runs workflows asynchronously itself. When
    /// false the gateway offers async by running the synchronous call in the
    /// background.
    fn native_async(&self) -> bool {
        true
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
