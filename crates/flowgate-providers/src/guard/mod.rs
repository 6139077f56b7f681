//! Resilience around any provider: the remembered rate window, local
//! limits, circuit breaking and safe retries.
//!
//! [`Guarded`] wraps a dialect and implements [`Provider`] itself, so every
//! dialect gets the same behaviour and the dialects stay plain translators.
//! Per call, in order:
//!
//! 1. **Known-exhausted window**: when the provider said its window is spent
//!    (`remaining: 0` until a reset time, or a 429 with Retry-After), calls
//!    fail fast with RESOURCE_EXHAUSTED + RetryInfo until then, without
//!    spending an upstream call.
//! 2. **Circuit breaker**: after consecutive failures the circuit opens and
//!    calls fail fast with UNAVAILABLE + RetryInfo; after `open_for` one
//!    probe goes through and its answer closes or reopens the circuit.
//! 3. **Local limits**: a token bucket (`requests_per_window`) and a run-slot
//!    semaphore (`max_concurrent_runs`, waiting up to `concurrency_wait`).
//!    With these the window is checked again, in the same step: all three
//!    live in a [`LimitStore`](flowgate_core::LimitStore), this replica's
//!    memory or one shared by every replica (see [`limits`]).
//! 4. **Retries** (see [`RetryPolicy`]): never-sent requests, 429s whose
//!    Retry-After fits in the deadline, and — only with an idempotency key —
//!    5xx and upstream timeouts; all drawn from a retry budget.
//!
//! **Status polls and schema fetches never touch the circuit.** A poll
//! concerns a run that was already accepted (and paid for); its failures say
//! little about whether a new Invoke would succeed, and the run tracker
//! already paces polls and gives up after `max_poll_failures`. So polls are
//! neither stopped by an open circuit nor counted towards opening it, nor
//! used as the half-open probe; they do respect and update the remembered
//! rate window (the vendor counts them against the same key). Schema fetches
//! bypass the guard entirely (cached and single-flight in the catalog).
//!
//! **Every output is checked once here** ([`crate::depth`]): an output
//! nested deeper than [`MAX_OUTPUT_DEPTH`] levels, from an Invoke or a poll
//! of any dialect, is INTERNAL / `UPSTREAM_PROTOCOL_ERROR`, never sent on to
//! clients whose protobuf parsers would reject the reply.
//!
//! **Bounded time arithmetic.** Every `Instant + Duration` is checked
//! ([`later`]); waits the provider asks for are already clamped by
//! [`crate::numbers`], and a remembered window is clamped again here to
//! [`MAX_RESET_AHEAD`], so no upstream answer can block a provider for
//! longer than that.
//!
//! State is a few counters behind a `std` mutex held for nanoseconds, never
//! across an await.

mod breaker;
mod limits;
mod retry;

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use flowgate_core::{
    AsyncMode, Deadline, ErrorClass, FieldViolation, GatewayError, Invocation, LimitFailurePolicy,
    LimitRequest, LimitStore, LimitVerdict, OutputSink, Provider, ProviderKind, RateLimitInfo,
    RateQuota, RunOutcome, RunSlot, SlotQuota, UpstreamContext, WindowNote, WorkflowRef,
    WorkflowSchema, reason::Reason,
};
use tokio::time::Instant;
use tower::retry::budget::TpsBudget;

use crate::limits::later;
use crate::{
    Resilience,
    depth::{MAX_OUTPUT_DEPTH, exceeds_depth},
    numbers::{MAX_RESET_AHEAD, MAX_RETRY_AFTER},
};
use breaker::{Breaker, trips_breaker};
use limits::GuardLimits;
#[cfg(test)]
use retry::backoff;

/// How long a retry-budget deposit counts.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// A provider with the gateway's protections around it.
#[derive(Debug)]
pub struct Guarded {
    inner: Arc<dyn Provider>,
    policy: Resilience,
    state: Mutex<GuardState>,
    budget: TpsBudget,
    limits: GuardLimits,
}

#[derive(Debug)]
struct GuardState {
    /// The last non-empty rate-limit report.
    last_rate_limit: RateLimitInfo,
    breaker: Breaker,
}

/// A call let through; a half-open probe is released if the call is dropped
/// before its outcome was recorded (a cancelled probe must not wedge the
/// circuit).
struct Admission<'a> {
    guarded: &'a Guarded,
    probe: bool,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.probe {
            let mut state = self.guarded.lock();
            if let Breaker::HalfOpen { .. } = state.breaker {
                state.breaker = Breaker::HalfOpen {
                    probe_in_flight: false,
                };
            }
        }
    }
}

impl Guarded {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: Arc<dyn Provider>, policy: Resilience) -> Self {
        let retry = &policy.retry;
        let budget = TpsBudget::new(
            BUDGET_WINDOW,
            retry.min_retries_per_second.min(1_000_000),
            (retry.budget_percent / 100.0).clamp(0.0, 1000.0),
        );
        Self {
            inner,
            state: Mutex::new(GuardState {
                last_rate_limit: RateLimitInfo::default(),
                breaker: Breaker::Closed {
                    consecutive_failures: 0,
                },
            }),
            budget,
            limits: GuardLimits::default(),
            policy,
        }
        .with_closed_circuit_reported()
    }

    /// Keeps the window, rate and run-slot limits in `store`, shared with
    /// every replica that uses the same store; `on_unavailable` says what
    /// happens while it cannot answer.
    pub fn with_shared_limits(
        mut self,
        store: Arc<dyn LimitStore>,
        on_unavailable: LimitFailurePolicy,
    ) -> Self {
        self.limits = GuardLimits::shared(store, on_unavailable);
        self
    }

    /// Reports the circuit closed, so the `flowgate.circuit.open` series
    /// exists from the start.
    fn with_closed_circuit_reported(self) -> Self {
        flowgate_telemetry::metrics().record_circuit(self.inner.name(), false);
        self
    }

    fn lock(&self) -> MutexGuard<'_, GuardState> {
        // A panic while holding this lock cannot leave the counters in a
        // state worse than stale; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn context(&self) -> UpstreamContext {
        UpstreamContext {
            provider: self.inner.name().to_owned(),
            kind: self.inner.kind(),
            http_status: None,
            request_id: None,
        }
    }

    /// The remembered window (this replica's copy, free), the circuit, then
    /// the limits in one [`LimitStore`] step: the window again (the shared
    /// one, if shared), a rate token and a run slot (waiting up to
    /// `concurrency_wait` and the deadline).
    async fn admit(
        &self,
        deadline: Deadline,
    ) -> Result<(Admission<'_>, Option<RunSlot>), GatewayError> {
        self.admit_poll()?;
        let admission = self.admit_circuit(Instant::now())?;
        let limits = &self.policy.limits;
        let request = LimitRequest {
            rate: limits.requests_per_window.map(|requests| RateQuota {
                requests,
                window: limits.window,
            }),
            slot: limits.max_concurrent_runs.map(|max| SlotQuota {
                max,
                wait: deadline.budget(limits.concurrency_wait),
            }),
        };
        // A refusal drops `admission`, which releases a half-open probe.
        match self.limits.admit(self.inner.name(), request).await {
            Ok(LimitVerdict::Admitted(slot)) => Ok((admission, slot)),
            Ok(LimitVerdict::WindowExhausted { retry_after }) => {
                Err(self.window_exhausted(retry_after))
            }
            Ok(LimitVerdict::RateLimited { retry_after }) => {
                Err(self.local_rate_limit(retry_after))
            }
            Ok(LimitVerdict::NoSlot) => Err(self.no_run_slot()),
            Err(error) => Err(GatewayError::new(
                ErrorClass::Unavailable,
                Reason::StateStoreUnavailable,
                format!(
                    "the shared limits for {} cannot be checked ({error}); refusing, as configured",
                    self.inner.name()
                ),
            )
            .with_retry_after(Some(Duration::from_secs(1)))),
        }
    }

    /// Fails fast while the upstream window is known to be spent (this
    /// replica's copy; a status poll checks only this).
    fn admit_poll(&self) -> Result<(), GatewayError> {
        match self.limits.window(self.inner.name()) {
            Some(retry_after) => Err(self.window_exhausted(retry_after)),
            None => Ok(()),
        }
    }

    fn window_exhausted(&self, retry_after: Duration) -> GatewayError {
        let name = self.inner.name();
        let error = GatewayError::new(
            ErrorClass::RateLimited,
            Reason::RateLimitWindowExhausted,
            format!(
                "{name}'s rate-limit window is exhausted; not calling upstream until it resets"
            ),
        )
        .with_upstream(self.context())
        .with_retry_after(Some(retry_after))
        .with_quota(format!("provider:{name}"), "upstream request rate");
        let last = self.lock().last_rate_limit.clone();
        if last.is_empty() {
            error
        } else {
            error.with_rate_limit(last)
        }
    }

    fn local_rate_limit(&self, retry_after: Duration) -> GatewayError {
        let name = self.inner.name();
        let limits = &self.policy.limits;
        GatewayError::new(
            ErrorClass::RateLimited,
            Reason::LocalRateLimit,
            format!(
                "the gateway's limit for {name} ({} requests per {} s) is reached",
                limits.requests_per_window.unwrap_or_default(),
                limits.window.as_secs_f64()
            ),
        )
        .with_upstream(self.context())
        .with_retry_after(Some(retry_after))
        .with_quota(format!("provider:{name}"), "local request rate")
    }

    fn no_run_slot(&self) -> GatewayError {
        GatewayError::new(
            ErrorClass::RateLimited,
            Reason::LocalConcurrencyLimit,
            format!(
                "{} runs of {} are already in flight (the configured maximum); retry later or use async mode",
                self.policy.limits.max_concurrent_runs.unwrap_or_default(),
                self.inner.name()
            ),
        )
        .with_upstream(self.context())
        .with_quota(format!("provider:{}", self.inner.name()), "concurrent runs")
    }

    /// The circuit, for an Invoke.
    fn admit_circuit(&self, now: Instant) -> Result<Admission<'_>, GatewayError> {
        let name = self.inner.name();
        let mut state = self.lock();
        let mut probe = false;
        match state.breaker {
            Breaker::Closed { .. } => {}
            Breaker::Open { until } if until > now => {
                return Err(GatewayError::new(
                    ErrorClass::Unavailable,
                    Reason::CircuitOpen,
                    format!("{name} is failing; calls fail fast while its circuit is open"),
                )
                .with_upstream(self.context())
                .with_retry_after(Some(until - now)));
            }
            Breaker::Open { .. }
            | Breaker::HalfOpen {
                probe_in_flight: false,
            } => {
                state.breaker = Breaker::HalfOpen {
                    probe_in_flight: true,
                };
                probe = true;
            }
            Breaker::HalfOpen {
                probe_in_flight: true,
            } => {
                return Err(GatewayError::new(
                    ErrorClass::Unavailable,
                    Reason::CircuitOpen,
                    format!("{name} is failing; a probe call is checking whether it recovered"),
                )
                .with_upstream(self.context())
                .with_retry_after(Some(Duration::from_secs(1))));
            }
        }
        Ok(Admission {
            guarded: self,
            probe,
        })
    }

    /// Updates the window and the circuit from one Invoke attempt's result.
    async fn record(
        &self,
        admission: &mut Admission<'_>,
        result: Result<&RunOutcome, &GatewayError>,
    ) {
        let note = {
            let now = Instant::now();
            let mut state = self.lock();
            self.record_breaker(&mut state, now, result);
            admission.probe = false;
            Self::window_note(&mut state, result)
        };
        self.limits.note_window(self.inner.name(), note).await;
    }

    /// What one answer says about the window: `remaining: 0` until its
    /// reset, or a 429's Retry-After; never beyond [`MAX_RESET_AHEAD`]. Also
    /// keeps the last non-empty rate-limit report.
    fn window_note(
        state: &mut GuardState,
        result: Result<&RunOutcome, &GatewayError>,
    ) -> WindowNote {
        let mut note = WindowNote::default();
        let rate_limit = match result {
            Ok(outcome) => Some(&outcome.rate_limit),
            Err(error) => error.rate_limit.as_ref(),
        };
        if let Some(rate_limit) = rate_limit.filter(|info| !info.is_empty()) {
            state.last_rate_limit = rate_limit.clone();
            if rate_limit.remaining == Some(0)
                && let Some(reset) = rate_limit
                    .reset_at
                    .and_then(|at| at.duration_since(SystemTime::now()).ok())
            {
                note.spent_for = Some(reset.min(MAX_RESET_AHEAD));
            }
        }
        if let Err(error) = result
            && error.class == ErrorClass::RateLimited
            && error
                .upstream
                .as_ref()
                .is_some_and(|up| up.http_status.is_some())
            && let Some(wait) = error.retry_after
        {
            note.at_least = Some(wait.min(MAX_RETRY_AFTER));
        }
        note
    }

    /// Counts an Invoke attempt towards (or against) opening the circuit.
    fn record_breaker(
        &self,
        state: &mut GuardState,
        now: Instant,
        result: Result<&RunOutcome, &GatewayError>,
    ) {
        let failed = matches!(result, Err(error) if trips_breaker(error));
        let policy = &self.policy.circuit;
        let was_closed = matches!(state.breaker, Breaker::Closed { .. });
        let was_open = matches!(state.breaker, Breaker::Open { .. });
        state.breaker = state.breaker.after(failed, policy, now);
        if !was_open && matches!(state.breaker, Breaker::Open { .. }) {
            tracing::warn!(
                provider = self.inner.name(),
                open_for_seconds = policy.open_for.as_secs_f64(),
                "circuit opened"
            );
        }
        let is_closed = matches!(state.breaker, Breaker::Closed { .. });
        if was_closed != is_closed {
            flowgate_telemetry::metrics().record_circuit(self.inner.name(), !is_closed);
        }
    }

    /// An outcome whose output nests deeper than [`MAX_OUTPUT_DEPTH`]
    /// becomes INTERNAL / `UPSTREAM_PROTOCOL_ERROR`.
    fn checked_depth(&self, outcome: RunOutcome) -> Result<RunOutcome, GatewayError> {
        if !outcome
            .output
            .as_ref()
            .is_some_and(|output| exceeds_depth(output, MAX_OUTPUT_DEPTH))
        {
            return Ok(outcome);
        }
        let error = GatewayError::new(
            ErrorClass::ProtocolError,
            Reason::UpstreamProtocolError,
            format!(
                "{} answered with an output nested deeper than {MAX_OUTPUT_DEPTH} levels, more than protobuf clients accept",
                self.inner.name()
            ),
        )
        .with_upstream(UpstreamContext {
            request_id: outcome.upstream_request_id,
            ..self.context()
        });
        Err(if outcome.rate_limit.is_empty() {
            error
        } else {
            error.with_rate_limit(outcome.rate_limit)
        })
    }
}

#[async_trait]
impl Provider for Guarded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn kind(&self) -> ProviderKind {
        self.inner.kind()
    }

    fn validate(&self, invocation: &Invocation) -> Vec<FieldViolation> {
        self.inner.validate(invocation)
    }

    fn async_mode(&self) -> AsyncMode {
        self.inner.async_mode()
    }

    fn safe_run_error(&self, error: flowgate_core::RunError) -> flowgate_core::RunError {
        self.inner.safe_run_error(error)
    }

    /// Status polls skip the local limits and retries (the tracker paces
    /// them) and never touch the circuit (see the module docs), but respect
    /// and update a known-exhausted window.
    async fn run_status(
        &self,
        upstream_id: &str,
        deadline: Deadline,
    ) -> Result<Option<RunOutcome>, GatewayError> {
        self.admit_poll()?;
        let result = self.inner.run_status(upstream_id, deadline).await;
        let result = match result {
            Ok(Some(outcome)) => self.checked_depth(outcome).map(Some),
            other => other,
        };
        let note = match &result {
            Ok(Some(outcome)) => Self::window_note(&mut self.lock(), Ok(outcome)),
            Ok(None) => WindowNote::default(),
            Err(error) => Self::window_note(&mut self.lock(), Err(error)),
        };
        self.limits.note_window(self.inner.name(), note).await;
        result
    }

    fn default_variant(&self) -> Option<&str> {
        self.inner.default_variant()
    }

    /// Schema fetches are free and already single-flight and cached (the
    /// gateway's schema catalog), and a failed one never blocks a run: they
    /// go straight to the dialect, outside the run protections.
    async fn fetch_schema(
        &self,
        workflow: &WorkflowRef,
        deadline: Deadline,
    ) -> Result<Option<WorkflowSchema>, GatewayError> {
        self.inner.fetch_schema(workflow, deadline).await
    }

    async fn invoke(
        &self,
        invocation: &Invocation,
        deadline: Deadline,
    ) -> Result<RunOutcome, GatewayError> {
        self.attempts(
            invocation,
            deadline,
            || true,
            || self.inner.invoke(invocation, deadline),
        )
        .await
    }

    /// As [`Guarded::invoke`], but an attempt that already sent output into
    /// `sink` is never repeated: the caller may have seen it.
    async fn invoke_stream(
        &self,
        invocation: &Invocation,
        deadline: Deadline,
        sink: &OutputSink,
    ) -> Result<RunOutcome, GatewayError> {
        self.attempts(
            invocation,
            deadline,
            || !sink.has_sent(),
            || self.inner.invoke_stream(invocation, deadline, sink),
        )
        .await
    }
}

#[cfg(test)]
mod tests;
