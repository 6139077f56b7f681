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
mod bucket;

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use flowgate_core::{
    AsyncMode, Deadline, ErrorClass, FieldViolation, GatewayError, Invocation, Provider,
    ProviderKind, RateLimitInfo, RunOutcome, UpstreamContext, WorkflowRef, WorkflowSchema,
    reason::Reason,
};
use rand::Rng as _;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tower::retry::budget::{Budget as _, TpsBudget};

use crate::{
    Resilience, RetryPolicy,
    depth::{MAX_OUTPUT_DEPTH, exceeds_depth},
    numbers::{MAX_RESET_AHEAD, MAX_RETRY_AFTER},
};
use breaker::{Breaker, trips_breaker};
use bucket::TokenBucket;

/// `now + by`, or — when that overflows the clock — as late as the clock
/// allows within `by`, never a panic. Every deadline the guard keeps goes
/// through here.
fn later(now: Instant, by: Duration) -> Instant {
    now.checked_add(by)
        .or_else(|| now.checked_add(MAX_RESET_AHEAD))
        .unwrap_or(now)
}

/// How long a retry-budget deposit counts.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// A provider with the gateway's protections around it.
#[derive(Debug)]
pub struct Guarded {
    inner: Arc<dyn Provider>,
    policy: Resilience,
    state: Mutex<GuardState>,
    budget: TpsBudget,
    run_slots: Option<Arc<Semaphore>>,
}

#[derive(Debug)]
struct GuardState {
    /// Until when the upstream window is known to be spent.
    exhausted_until: Option<Instant>,
    /// The last non-empty rate-limit report.
    last_rate_limit: RateLimitInfo,
    breaker: Breaker,
    bucket: Option<TokenBucket>,
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
        let run_slots = policy
            .limits
            .max_concurrent_runs
            .map(|runs| Arc::new(Semaphore::new(runs.max(1) as usize)));
        let bucket = policy
            .limits
            .requests_per_window
            .map(|requests| TokenBucket::new(requests, policy.limits.window));
        Self {
            inner,
            state: Mutex::new(GuardState {
                exhausted_until: None,
                last_rate_limit: RateLimitInfo::default(),
                breaker: Breaker::Closed {
                    consecutive_failures: 0,
                },
                bucket,
            }),
            budget,
            run_slots,
            policy,
        }
        .with_closed_circuit_reported()
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

    /// Checks the window, the circuit and the token bucket, in one lock.
    fn admit(&self) -> Result<Admission<'_>, GatewayError> {
        let now = Instant::now();
        let mut state = self.lock();
        self.check_window(&mut state, now)?;
        self.admit_locked(&mut state, now)
    }

    /// A status poll: checks the remembered window only.
    fn admit_poll(&self) -> Result<(), GatewayError> {
        let now = Instant::now();
        let mut state = self.lock();
        self.check_window(&mut state, now)
    }

    /// Fails fast while the upstream window is known to be spent.
    fn check_window(&self, state: &mut GuardState, now: Instant) -> Result<(), GatewayError> {
        let name = self.inner.name();
        if let Some(until) = state.exhausted_until {
            if until > now {
                let mut error = GatewayError::new(
                    ErrorClass::RateLimited,
                    Reason::RateLimitWindowExhausted,
                    format!(
                        "{name}'s rate-limit window is exhausted; not calling upstream until it resets"
                    ),
                )
                .with_upstream(self.context())
                .with_retry_after(Some(until - now))
                .with_quota(format!("provider:{name}"), "upstream request rate");
                if !state.last_rate_limit.is_empty() {
                    error = error.with_rate_limit(state.last_rate_limit.clone());
                }
                return Err(error);
            }
            state.exhausted_until = None;
        }
        Ok(())
    }

    /// The circuit and the token bucket, for an Invoke.
    fn admit_locked(
        &self,
        state: &mut GuardState,
        now: Instant,
    ) -> Result<Admission<'_>, GatewayError> {
        let name = self.inner.name();
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
        if let Some(bucket) = state.bucket.as_mut()
            && let Err(wait) = bucket.take(now)
        {
            if probe {
                state.breaker = Breaker::HalfOpen {
                    probe_in_flight: false,
                };
            }
            let limits = &self.policy.limits;
            return Err(GatewayError::new(
                ErrorClass::RateLimited,
                Reason::LocalRateLimit,
                format!(
                    "the gateway's limit for {name} ({} requests per {} s) is reached",
                    limits.requests_per_window.unwrap_or_default(),
                    limits.window.as_secs_f64()
                ),
            )
            .with_upstream(self.context())
            .with_retry_after(Some(wait))
            .with_quota(format!("provider:{name}"), "local request rate"));
        }
        Ok(Admission {
            guarded: self,
            probe,
        })
    }

    /// A run slot, waiting up to `concurrency_wait` (and the deadline).
    async fn run_slot(
        &self,
        deadline: Deadline,
    ) -> Result<Option<OwnedSemaphorePermit>, GatewayError> {
        let Some(slots) = &self.run_slots else {
            return Ok(None);
        };
        let wait = deadline.budget(self.policy.limits.concurrency_wait);
        match tokio::time::timeout(wait, Arc::clone(slots).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(GatewayError::new(
                ErrorClass::RateLimited,
                Reason::LocalConcurrencyLimit,
                format!(
                    "{} runs of {} are already in flight (the configured maximum); retry later or use async mode",
                    self.policy.limits.max_concurrent_runs.unwrap_or_default(),
                    self.inner.name()
                ),
            )
            .with_upstream(self.context())
            .with_quota(format!("provider:{}", self.inner.name()), "concurrent runs")),
        }
    }

    /// Updates the window and the circuit from one Invoke attempt's result.
    fn record(&self, admission: &mut Admission<'_>, result: Result<&RunOutcome, &GatewayError>) {
        let now = Instant::now();
        let mut state = self.lock();
        Self::record_window(&mut state, now, result);
        self.record_breaker(&mut state, now, result);
        admission.probe = false;
    }

    /// Remembers an exhausted window from one answer: `remaining: 0` until
    /// its reset, or a 429's Retry-After; never beyond [`MAX_RESET_AHEAD`].
    fn record_window(
        state: &mut GuardState,
        now: Instant,
        result: Result<&RunOutcome, &GatewayError>,
    ) {
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
                state.exhausted_until = Some(later(now, reset.min(MAX_RESET_AHEAD)));
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
            let until = later(now, wait.min(MAX_RETRY_AFTER));
            state.exhausted_until = Some(state.exhausted_until.map_or(until, |at| at.max(until)));
        }
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

    /// How long to wait before attempt `attempt + 1`, if it is safe at all.
    fn retry_delay(
        &self,
        error: &GatewayError,
        attempt: u32,
        invocation: &Invocation,
        deadline: Deadline,
    ) -> Option<Duration> {
        let policy = &self.policy.retry;
        if attempt >= policy.max_attempts {
            return None;
        }
        let delay = if error.never_sent {
            backoff(policy, attempt)
        } else if error.class == ErrorClass::RateLimited
            && error
                .upstream
                .as_ref()
                .is_some_and(|up| up.http_status.is_some())
        {
            error.retry_after?
        } else if policy.idempotent_retries
            && invocation.idempotency_key.is_some()
            && (matches!(
                error.class,
                ErrorClass::Unavailable | ErrorClass::UpstreamFailure
            ) || error.has_reason(Reason::UpstreamTimeout))
        {
            backoff(policy, attempt)
        } else {
            return None;
        };
        // The retry must fit in the caller's deadline, with room to run.
        match deadline.remaining() {
            Some(left) if delay >= left => None,
            _ => Some(delay),
        }
    }
}

/// Exponential backoff with equal jitter: half fixed, half random.
fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    let base = policy
        .initial_backoff
        .saturating_mul(1 << exponent)
        .min(policy.max_backoff);
    let half = base / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
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

    fn callback_run_id(&self, body: &[u8]) -> Option<String> {
        self.inner.callback_run_id(body)
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
        if let Ok(Some(outcome)) = &result {
            Self::record_window(&mut self.lock(), Instant::now(), Ok(outcome));
        } else if let Err(error) = &result {
            Self::record_window(&mut self.lock(), Instant::now(), Err(error));
        }
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
        let mut admission = self.admit()?;
        let _slot = self.run_slot(deadline).await?;
        self.budget.deposit();
        let mut attempt = 1;
        loop {
            let result = crate::http::ATTEMPT
                .scope(attempt, self.inner.invoke(invocation, deadline))
                .await
                .and_then(|outcome| self.checked_depth(outcome));
            self.record(&mut admission, result.as_ref());
            let error = match result {
                Ok(outcome) => return Ok(outcome),
                Err(error) => error,
            };
            let Some(delay) = self.retry_delay(&error, attempt, invocation, deadline) else {
                return Err(error);
            };
            if !self.budget.withdraw() {
                tracing::debug!(provider = self.name(), "retry budget spent; not retrying");
                return Err(error);
            }
            tracing::debug!(
                provider = self.name(),
                attempt,
                reason = %error.reason,
                delay_ms = delay.as_millis() as u64,
                "retrying"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests;
