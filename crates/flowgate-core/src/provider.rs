//! The trait every dialect implements.

use std::{
    fmt,
    time::{Duration, Instant},
};

use async_trait::async_trait;

use crate::{
    FieldViolation, GatewayError, Invocation, ProviderKind, RunError, RunOutcome, WorkflowRef,
    WorkflowSchema,
};

/// When the caller stops waiting. The upstream call never outlives it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// No caller deadline (the provider's own timeout still applies).
    pub const NONE: Deadline = Deadline(None);

    /// A deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Self(Instant::now().checked_add(timeout))
    }

    /// The instant, if any.
    pub fn instant(self) -> Option<Instant> {
        self.0
    }

    /// Time left, `None` when unbounded; zero once passed.
    pub fn remaining(self) -> Option<Duration> {
        self.0
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// The time an upstream request may take: the provider's `timeout`,
    /// shortened to what is left of the deadline.
    pub fn budget(self, timeout: Duration) -> Duration {
        self.remaining().map_or(timeout, |left| left.min(timeout))
    }

    /// The earlier of two deadlines (an unbounded one never wins).
    pub fn earlier(self, other: Deadline) -> Deadline {
        match (self.0, other.0) {
            (Some(a), Some(b)) => Deadline(Some(a.min(b))),
            (a, b) => Deadline(a.or(b)),
        }
    }

    /// True once the deadline has passed.
    pub fn is_expired(self) -> bool {
        self.remaining().is_some_and(|left| left.is_zero())
    }
}

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

    /// For [`AsyncMode::Callback`] dialects: the upstream run id a callback
    /// body names. Not yet trusted (the signature is checked after): it only
    /// selects which run's secret to verify the delivery with. `None` when
    /// the body names no run or the dialect signs with configured secrets.
    fn callback_run_id(&self, body: &[u8]) -> Option<String> {
        let _ = body;
        None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_the_shorter_of_timeout_and_deadline() {
        assert_eq!(
            Deadline::NONE.budget(Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        let soon = Deadline::after(Duration::from_millis(100));
        assert!(soon.budget(Duration::from_secs(5)) <= Duration::from_millis(100));
        let late = Deadline::after(Duration::from_secs(60));
        assert_eq!(late.budget(Duration::from_secs(5)), Duration::from_secs(5));
    }

    #[test]
    fn earlier_deadline_wins() {
        let soon = Deadline::after(Duration::from_secs(1));
        let late = Deadline::after(Duration::from_secs(60));
        assert_eq!(soon.earlier(late), soon);
        assert_eq!(late.earlier(soon), soon);
        assert_eq!(Deadline::NONE.earlier(late), late);
        assert_eq!(Deadline::NONE.earlier(Deadline::NONE), Deadline::NONE);
    }

    #[test]
    fn passed_deadline_is_expired() {
        assert!(Deadline::after(Duration::ZERO).is_expired());
        assert!(!Deadline::NONE.is_expired());
    }
}
