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
//! State is a few counters behind a `std` mutex held for nanoseconds, never
//! across an await.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use flowgate_core::{
    Deadline, ErrorClass, FieldViolation, GatewayError, Invocation, Provider, ProviderKind,
    RateLimitInfo, RunOutcome, UpstreamContext, WorkflowRef, WorkflowSchema,
};
use rand::Rng as _;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tower::retry::budget::{Budget as _, TpsBudget};

use crate::{Resilience, RetryPolicy};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Breaker {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_in_flight: bool },
}

#[derive(Debug)]
struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn new(requests: u32, window: Duration) -> Self {
        let capacity = f64::from(requests.max(1));
        Self {
            capacity,
            per_second: capacity / window.as_secs_f64().max(0.001),
            tokens: capacity,
            refilled: Instant::now(),
        }
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second,
            ))
        }
    }
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

/// Failures that say the upstream itself is unwell.
fn trips_breaker(error: &GatewayError) -> bool {
    match error.class {
        ErrorClass::Unavailable | ErrorClass::UpstreamFailure | ErrorClass::ProtocolError => {
            error.upstream.is_some()
        }
        ErrorClass::DeadlineExceeded => error.reason == "UPSTREAM_TIMEOUT",
        _ => false,
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
        self.admit_with(true)
    }

    /// Checks the window and the circuit only.
    fn admit_without_limits(&self) -> Result<Admission<'_>, GatewayError> {
        self.admit_with(false)
    }

    fn admit_with(&self, local_limits: bool) -> Result<Admission<'_>, GatewayError> {
        let now = Instant::now();
        let name = self.inner.name();
        let mut state = self.lock();
        if let Some(until) = state.exhausted_until {
            if until > now {
                let mut error = GatewayError::new(
                    ErrorClass::RateLimited,
                    "RATE_LIMIT_WINDOW_EXHAUSTED",
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
        let mut probe = false;
        match state.breaker {
            Breaker::Closed { .. } => {}
            Breaker::Open { until } if until > now => {
                return Err(GatewayError::new(
                    ErrorClass::Unavailable,
                    "CIRCUIT_OPEN",
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
                    "CIRCUIT_OPEN",
                    format!("{name} is failing; a probe call is checking whether it recovered"),
                )
                .with_upstream(self.context())
                .with_retry_after(Some(Duration::from_secs(1))));
            }
        }
        if local_limits
            && let Some(bucket) = state.bucket.as_mut()
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
                "LOCAL_RATE_LIMIT",
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
                "LOCAL_CONCURRENCY_LIMIT",
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

    /// Updates the window and the circuit from one attempt's result.
    fn record(&self, admission: &mut Admission<'_>, result: Result<&RunOutcome, &GatewayError>) {
        let now = Instant::now();
        let mut state = self.lock();
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
                state.exhausted_until = Some(now + reset);
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
            let until = now + wait;
            state.exhausted_until = Some(state.exhausted_until.map_or(until, |at| at.max(until)));
        }
        let failed = matches!(result, Err(error) if trips_breaker(error));
        let policy = &self.policy.circuit;
        let was_closed = matches!(state.breaker, Breaker::Closed { .. });
        state.breaker = match (state.breaker, failed) {
            (_, _) if policy.failure_threshold == 0 => Breaker::Closed {
                consecutive_failures: 0,
            },
            (_, false) => Breaker::Closed {
                consecutive_failures: 0,
            },
            (
                Breaker::Closed {
                    consecutive_failures,
                },
                true,
            ) if consecutive_failures + 1 < policy.failure_threshold => Breaker::Closed {
                consecutive_failures: consecutive_failures + 1,
            },
            (_, true) => {
                tracing::warn!(
                    provider = self.inner.name(),
                    open_for_seconds = policy.open_for.as_secs_f64(),
                    "circuit opened"
                );
                Breaker::Open {
                    until: now + policy.open_for,
                }
            }
        };
        let is_closed = matches!(state.breaker, Breaker::Closed { .. });
        if was_closed != is_closed {
            flowgate_telemetry::metrics().record_circuit(self.inner.name(), !is_closed);
        }
        admission.probe = false;
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
            ) || error.reason == "UPSTREAM_TIMEOUT")
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

    fn native_async(&self) -> bool {
        self.inner.native_async()
    }

    /// Status polls skip the local limits and retries (the tracker paces
    /// them) but respect a known-exhausted window and an open circuit.
    async fn run_status(
        &self,
        upstream_id: &str,
        deadline: Deadline,
    ) -> Result<Option<RunOutcome>, GatewayError> {
        let mut admission = self.admit_without_limits()?;
        let result = self.inner.run_status(upstream_id, deadline).await;
        match &result {
            Ok(Some(outcome)) => self.record(&mut admission, Ok(outcome)),
            Err(error) => self.record(&mut admission, Err(error)),
            Ok(None) => {}
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
                .await;
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
mod tests {
    use super::*;
    use crate::{CircuitPolicy, LocalLimits};
    use flowgate_core::{RunStatus, WorkflowRef};
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A provider that answers from a script and counts calls.
    #[derive(Debug)]
    struct Scripted {
        answers: Mutex<VecDeque<Result<RunOutcome, GatewayError>>>,
        calls: AtomicU32,
    }

    impl Scripted {
        fn new(answers: Vec<Result<RunOutcome, GatewayError>>) -> Arc<Self> {
            Arc::new(Self {
                answers: Mutex::new(answers.into()),
                calls: AtomicU32::new(0),
            })
        }
        fn calls(&self) -> u32 {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl Provider for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn kind(&self) -> ProviderKind {
            ProviderKind::Knouds
        }
        fn validate(&self, _: &Invocation) -> Vec<FieldViolation> {
            Vec::new()
        }
        async fn invoke(&self, _: &Invocation, _: Deadline) -> Result<RunOutcome, GatewayError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.answers
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| Ok(completed()))
        }
    }

    fn completed() -> RunOutcome {
        RunOutcome {
            status: Some(RunStatus::Completed),
            ..RunOutcome::default()
        }
    }

    fn upstream(status: u16) -> UpstreamContext {
        UpstreamContext {
            provider: "scripted".into(),
            kind: ProviderKind::Knouds,
            http_status: Some(status),
            request_id: None,
        }
    }

    fn unreachable() -> GatewayError {
        GatewayError::new(ErrorClass::Unavailable, "UPSTREAM_UNREACHABLE", "down")
            .with_upstream(UpstreamContext {
                http_status: None,
                ..upstream(0)
            })
            .never_sent()
    }

    fn server_error() -> GatewayError {
        GatewayError::new(ErrorClass::UpstreamFailure, "internal_server_error", "500")
            .with_upstream(upstream(500))
    }

    fn too_many(wait: Duration) -> GatewayError {
        GatewayError::new(ErrorClass::RateLimited, "RATE_LIMIT_EXCEEDED", "429")
            .with_upstream(upstream(429))
            .with_retry_after(Some(wait))
    }

    fn invocation(idempotency_key: Option<&str>) -> Invocation {
        let mut invocation = Invocation::new(WorkflowRef::Slug("s".into()));
        invocation.idempotency_key = idempotency_key.map(str::to_owned);
        invocation
    }

    fn guarded(inner: Arc<Scripted>, policy: Resilience) -> Guarded {
        Guarded::new(inner, policy)
    }

    #[tokio::test(start_paused = true)]
    async fn never_sent_requests_are_retried_with_backoff() {
        let inner = Scripted::new(vec![Err(unreachable()), Err(unreachable())]);
        let guard = guarded(inner.clone(), Resilience::default());
        let outcome = guard
            .invoke(&invocation(None), Deadline::after(Duration::from_secs(30)))
            .await;
        assert!(outcome.is_ok());
        assert_eq!(inner.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn server_errors_are_not_retried_without_an_idempotency_key() {
        let inner = Scripted::new(vec![Err(server_error())]);
        let guard = guarded(inner.clone(), Resilience::default());
        let error = guard
            .invoke(&invocation(None), Deadline::after(Duration::from_secs(30)))
            .await
            .unwrap_err();
        assert_eq!(error.reason, "internal_server_error");
        assert_eq!(inner.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn idempotency_key_makes_server_errors_retryable() {
        let inner = Scripted::new(vec![Err(server_error())]);
        let guard = guarded(inner.clone(), Resilience::default());
        assert!(
            guard
                .invoke(
                    &invocation(Some("key-1")),
                    Deadline::after(Duration::from_secs(30))
                )
                .await
                .is_ok()
        );
        assert_eq!(inner.calls(), 2);

        let inner = Scripted::new(vec![Err(server_error())]);
        let mut policy = Resilience::default();
        policy.retry.idempotent_retries = false;
        let guard = guarded(inner.clone(), policy);
        assert!(
            guard
                .invoke(
                    &invocation(Some("key-1")),
                    Deadline::after(Duration::from_secs(30))
                )
                .await
                .is_err()
        );
        assert_eq!(inner.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_is_retried_only_when_retry_after_fits_the_deadline() {
        let inner = Scripted::new(vec![Err(too_many(Duration::from_secs(2)))]);
        let guard = guarded(inner.clone(), Resilience::default());
        assert!(
            guard
                .invoke(&invocation(None), Deadline::after(Duration::from_secs(10)))
                .await
                .is_ok()
        );
        assert_eq!(inner.calls(), 2);

        let inner = Scripted::new(vec![Err(too_many(Duration::from_secs(20)))]);
        let guard = guarded(inner.clone(), Resilience::default());
        let error = guard
            .invoke(&invocation(None), Deadline::after(Duration::from_secs(10)))
            .await
            .unwrap_err();
        assert_eq!(error.reason, "RATE_LIMIT_EXCEEDED");
        assert_eq!(inner.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_known_exhausted_window_fails_fast_until_it_resets() {
        let inner = Scripted::new(vec![Err(too_many(Duration::from_secs(20)))]);
        let guard = guarded(inner.clone(), Resilience::default());
        let deadline = || Deadline::after(Duration::from_secs(5));
        guard
            .invoke(&invocation(None), deadline())
            .await
            .unwrap_err();
        for _ in 0..10 {
            let error = guard
                .invoke(&invocation(None), deadline())
                .await
                .unwrap_err();
            assert_eq!(error.reason, "RATE_LIMIT_WINDOW_EXHAUSTED");
            assert!(error.retry_after.unwrap() <= Duration::from_secs(20));
        }
        assert_eq!(
            inner.calls(),
            1,
            "no upstream call while the window is spent"
        );
        tokio::time::advance(Duration::from_secs(21)).await;
        assert!(guard.invoke(&invocation(None), deadline()).await.is_ok());
        assert_eq!(inner.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_zero_with_a_reset_time_is_remembered() {
        let spent = RunOutcome {
            rate_limit: RateLimitInfo {
                limit: Some(100),
                remaining: Some(0),
                reset_at: Some(SystemTime::now() + Duration::from_secs(30)),
                retry_after: None,
            },
            ..completed()
        };
        let inner = Scripted::new(vec![Ok(spent)]);
        let guard = guarded(inner.clone(), Resilience::default());
        let deadline = Deadline::after(Duration::from_secs(5));
        assert!(guard.invoke(&invocation(None), deadline).await.is_ok());
        let error = guard.invoke(&invocation(None), deadline).await.unwrap_err();
        assert_eq!(error.class, ErrorClass::RateLimited);
        assert_eq!(error.rate_limit.as_ref().unwrap().limit, Some(100));
        assert_eq!(inner.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn circuit_opens_fails_fast_then_a_probe_closes_it() {
        let failures = (0..3).map(|_| Err(server_error())).collect();
        let inner = Scripted::new(failures);
        let policy = Resilience {
            circuit: CircuitPolicy {
                failure_threshold: 3,
                open_for: Duration::from_secs(10),
            },
            ..Resilience::default()
        };
        let guard = guarded(inner.clone(), policy);
        let deadline = || Deadline::after(Duration::from_secs(5));
        for _ in 0..3 {
            assert_eq!(
                guard
                    .invoke(&invocation(None), deadline())
                    .await
                    .unwrap_err()
                    .reason,
                "internal_server_error"
            );
        }
        let open = guard
            .invoke(&invocation(None), deadline())
            .await
            .unwrap_err();
        assert_eq!(
            (open.class, open.reason.as_str()),
            (ErrorClass::Unavailable, "CIRCUIT_OPEN")
        );
        assert!(open.retry_after.is_some());
        assert_eq!(inner.calls(), 3);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(
            guard.invoke(&invocation(None), deadline()).await.is_ok(),
            "the probe"
        );
        assert!(
            guard.invoke(&invocation(None), deadline()).await.is_ok(),
            "closed again"
        );
        assert_eq!(inner.calls(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_the_circuit() {
        let failures = (0..3).map(|_| Err(server_error())).collect();
        let inner = Scripted::new(failures);
        let policy = Resilience {
            circuit: CircuitPolicy {
                failure_threshold: 2,
                open_for: Duration::from_secs(10),
            },
            ..Resilience::default()
        };
        let guard = guarded(inner.clone(), policy);
        let deadline = || Deadline::after(Duration::from_secs(5));
        for _ in 0..2 {
            guard
                .invoke(&invocation(None), deadline())
                .await
                .unwrap_err();
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        guard
            .invoke(&invocation(None), deadline())
            .await
            .unwrap_err();
        let error = guard
            .invoke(&invocation(None), deadline())
            .await
            .unwrap_err();
        assert_eq!(error.reason, "CIRCUIT_OPEN");
        assert_eq!(inner.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_never_open_the_circuit() {
        let bad_input = || {
            Err(
                GatewayError::new(ErrorClass::InvalidArgument, "INVALID_INPUTS", "bad")
                    .with_upstream(upstream(400)),
            )
        };
        let inner = Scripted::new((0..10).map(|_| bad_input()).collect());
        let guard = guarded(inner.clone(), Resilience::default());
        for _ in 0..10 {
            let error = guard
                .invoke(&invocation(None), Deadline::after(Duration::from_secs(5)))
                .await
                .unwrap_err();
            assert_eq!(error.reason, "INVALID_INPUTS");
        }
        assert_eq!(inner.calls(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn local_rate_limit_refills_over_the_window() {
        let inner = Scripted::new(Vec::new());
        let policy = Resilience {
            limits: LocalLimits {
                requests_per_window: Some(2),
                window: Duration::from_secs(10),
                ..LocalLimits::default()
            },
            ..Resilience::default()
        };
        let guard = guarded(inner.clone(), policy);
        let deadline = || Deadline::after(Duration::from_secs(5));
        assert!(guard.invoke(&invocation(None), deadline()).await.is_ok());
        assert!(guard.invoke(&invocation(None), deadline()).await.is_ok());
        let error = guard
            .invoke(&invocation(None), deadline())
            .await
            .unwrap_err();
        assert_eq!(error.reason, "LOCAL_RATE_LIMIT");
        assert!(error.retry_after.unwrap() <= Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(guard.invoke(&invocation(None), deadline()).await.is_ok());
        assert_eq!(inner.calls(), 3);
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let policy = RetryPolicy::default();
        for attempt in 1..10 {
            let delay = backoff(&policy, attempt);
            let base = policy
                .initial_backoff
                .saturating_mul(1 << (attempt - 1))
                .min(policy.max_backoff);
            assert!(delay >= base / 2 && delay <= base, "{attempt}: {delay:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_retry_budget_caps_retries_in_a_storm() {
        // Every call fails before sending; without a budget each would be
        // tried three times.
        let inner = Scripted::new((0..1000).map(|_| Err(unreachable())).collect());
        let policy = Resilience {
            retry: RetryPolicy {
                budget_percent: 10.0,
                min_retries_per_second: 1,
                ..RetryPolicy::default()
            },
            circuit: CircuitPolicy {
                failure_threshold: 0,
                ..CircuitPolicy::default()
            },
            ..Resilience::default()
        };
        let guard = guarded(inner.clone(), policy);
        for _ in 0..100 {
            let _ = guard
                .invoke(&invocation(None), Deadline::after(Duration::from_secs(30)))
                .await;
        }
        // 100 calls, 10% budget plus a reserve of 1/s over the 10 s window.
        assert!(
            inner.calls() <= 100 + 10 + 10 + 2,
            "{} upstream calls",
            inner.calls()
        );
    }
}
