//! Guard behaviour with a scripted provider and paused time.

use super::*;
use crate::{CircuitPolicy, LocalLimits, RetryPolicy};
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
    /// Polls answer from the same script.
    async fn run_status(&self, _: &str, _: Deadline) -> Result<Option<RunOutcome>, GatewayError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Ok(completed()))
            .map(Some)
    }
    /// Schema fetches answer from the same script too (a success is "no
    /// schema").
    async fn fetch_schema(
        &self,
        _: &WorkflowRef,
        _: Deadline,
    ) -> Result<Option<flowgate_core::WorkflowSchema>, GatewayError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self.answers.lock().unwrap().pop_front();
        answer.unwrap_or_else(|| Ok(completed())).map(|_| None)
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
async fn a_stream_is_retried_only_until_output_was_sent() {
    let deadline = Deadline::after(Duration::from_secs(30));
    let inner = Scripted::new(vec![Err(unreachable())]);
    let (fresh, _events) = OutputSink::channel();
    let guard = guarded(inner.clone(), Resilience::default());
    assert!(
        guard
            .invoke_stream(&invocation(None), deadline, &fresh)
            .await
            .is_ok()
    );
    assert_eq!(inner.calls(), 2);
    let inner = Scripted::new(vec![Err(unreachable())]);
    let (sent, _events) = OutputSink::channel();
    sent.send(flowgate_core::StreamEvent::Delta("seen".into()))
        .await
        .unwrap();
    let guard = guarded(inner.clone(), Resilience::default());
    assert!(
        guard
            .invoke_stream(&invocation(None), deadline, &sent)
            .await
            .is_err()
    );
    assert_eq!(inner.calls(), 1, "output reached the caller: no retry");
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

/// The deadline and the guard's waits run on one clock (tokio's): a wait
/// spent on a retry is gone from the deadline, so under paused time the
/// second Retry-After no longer fits.
#[tokio::test(start_paused = true)]
async fn retries_spend_the_deadline_on_the_same_clock() {
    let inner = Scripted::new(vec![
        Err(too_many(Duration::from_secs(2))),
        Err(too_many(Duration::from_secs(2))),
    ]);
    let guard = guarded(inner.clone(), Resilience::default());
    let started = Instant::now();
    let error = guard
        .invoke(&invocation(None), Deadline::after(Duration::from_secs(3)))
        .await
        .unwrap_err();
    assert_eq!(error.reason, "RATE_LIMIT_EXCEEDED");
    assert_eq!(inner.calls(), 2, "the first wait fit, the second did not");
    assert_eq!(started.elapsed(), Duration::from_secs(2));
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

/// A guard whose circuit opens after 3 failures, over 20 scripted 500s.
fn twenty_failures() -> (Arc<Scripted>, Guarded) {
    let inner = Scripted::new((0..20).map(|_| Err(server_error())).collect());
    let policy = Resilience {
        circuit: CircuitPolicy {
            failure_threshold: 3,
            open_for: Duration::from_secs(30),
        },
        ..Resilience::default()
    };
    (inner.clone(), guarded(inner, policy))
}

#[tokio::test(start_paused = true)]
async fn failed_polls_never_open_the_circuit_for_invokes() {
    let (inner, guard) = twenty_failures();
    let deadline = || Deadline::after(Duration::from_secs(5));
    for _ in 0..20 {
        let error = guard.run_status("run-1", deadline()).await.unwrap_err();
        assert_eq!(error.reason, "internal_server_error");
    }
    assert!(
        guard.invoke(&invocation(None), deadline()).await.is_ok(),
        "polls' failures must not fail a new Invoke with CIRCUIT_OPEN"
    );
    assert_eq!(inner.calls(), 21);
}

#[tokio::test(start_paused = true)]
async fn failed_schema_fetches_never_open_the_circuit_for_invokes() {
    let (inner, guard) = twenty_failures();
    let deadline = || Deadline::after(Duration::from_secs(5));
    let workflow = WorkflowRef::Slug("s".into());
    for _ in 0..20 {
        let error = guard.fetch_schema(&workflow, deadline()).await.unwrap_err();
        assert_eq!(error.reason, "internal_server_error");
    }
    assert!(
        guard.invoke(&invocation(None), deadline()).await.is_ok(),
        "schema fetches' failures must not fail a new Invoke with CIRCUIT_OPEN"
    );
    assert_eq!(inner.calls(), 21, "each fetch went out once, unretried");
}

#[tokio::test(start_paused = true)]
async fn polls_still_go_out_while_the_circuit_is_open() {
    let failures = (0..2).map(|_| Err(server_error())).collect();
    let inner = Scripted::new(failures);
    let policy = Resilience {
        circuit: CircuitPolicy {
            failure_threshold: 2,
            open_for: Duration::from_secs(30),
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
    assert!(guard.run_status("run-1", deadline()).await.is_ok());
    let open = guard
        .invoke(&invocation(None), deadline())
        .await
        .unwrap_err();
    assert_eq!(open.reason, "CIRCUIT_OPEN", "a poll is no probe");
    assert_eq!(inner.calls(), 3);
}

fn nested(levels: usize) -> serde_json::Value {
    (0..levels).fold(
        serde_json::json!(1),
        |inner, _| serde_json::json!({ "a": inner }),
    )
}

#[tokio::test(start_paused = true)]
async fn over_deep_outputs_are_protocol_errors_on_invoke_and_poll() {
    let deep = |levels| RunOutcome {
        output: Some(nested(levels)),
        ..completed()
    };
    let inner = Scripted::new(vec![
        Ok(deep(MAX_OUTPUT_DEPTH + 1)),
        Ok(deep(MAX_OUTPUT_DEPTH + 1)),
        Ok(deep(MAX_OUTPUT_DEPTH)),
    ]);
    let guard = guarded(inner.clone(), Resilience::default());
    let deadline = || Deadline::after(Duration::from_secs(5));
    let error = guard
        .invoke(&invocation(None), deadline())
        .await
        .unwrap_err();
    assert_eq!(
        (error.class, error.reason.as_str()),
        (ErrorClass::ProtocolError, "UPSTREAM_PROTOCOL_ERROR")
    );
    let error = guard.run_status("run-1", deadline()).await.unwrap_err();
    assert_eq!(error.reason, "UPSTREAM_PROTOCOL_ERROR");
    let fine = guard.invoke(&invocation(None), deadline()).await.unwrap();
    assert_eq!(fine.output, Some(nested(MAX_OUTPUT_DEPTH)));
}

mod absurd;
mod shared;
