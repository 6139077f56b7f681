//! Absurd numbers from vendors (reset times, Retry-After, open-for
//! durations) are clamped to their ceilings and never panic.

use super::*;

fn spent_until(reset_at: SystemTime) -> RunOutcome {
    RunOutcome {
        rate_limit: RateLimitInfo {
            limit: Some(100),
            remaining: Some(0),
            reset_at: Some(reset_at),
            retry_after: None,
        },
        ..completed()
    }
}

#[tokio::test(start_paused = true)]
async fn an_absurd_reset_never_blocks_longer_than_the_ceiling() {
    let far = SystemTime::UNIX_EPOCH + Duration::from_secs(i64::MAX as u64 / 2);
    let inner = Scripted::new(vec![Ok(spent_until(far))]);
    let guard = guarded(inner.clone(), Resilience::default());
    let deadline = || Deadline::after(Duration::from_secs(5));
    assert!(guard.invoke(&invocation(None), deadline()).await.is_ok());
    let error = guard
        .invoke(&invocation(None), deadline())
        .await
        .unwrap_err();
    assert_eq!(error.reason, "RATE_LIMIT_WINDOW_EXHAUSTED");
    assert!(error.retry_after.unwrap() <= MAX_RESET_AHEAD);
    tokio::time::advance(MAX_RESET_AHEAD + Duration::from_secs(1)).await;
    assert!(guard.invoke(&invocation(None), deadline()).await.is_ok());
    assert_eq!(inner.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_absurd_retry_after_is_clamped_and_never_panics() {
    let inner = Scripted::new(vec![Err(too_many(Duration::MAX))]);
    let guard = guarded(inner.clone(), Resilience::default());
    let deadline = || Deadline::after(Duration::from_secs(5));
    let first = guard
        .invoke(&invocation(None), deadline())
        .await
        .unwrap_err();
    assert_eq!(first.reason, "RATE_LIMIT_EXCEEDED");
    let error = guard
        .invoke(&invocation(None), deadline())
        .await
        .unwrap_err();
    assert!(error.retry_after.unwrap() <= MAX_RETRY_AFTER);
    tokio::time::advance(MAX_RETRY_AFTER + Duration::from_secs(1)).await;
    assert!(guard.invoke(&invocation(None), deadline()).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_huge_open_for_does_not_overflow() {
    let inner = Scripted::new(vec![Err(server_error())]);
    let policy = Resilience {
        circuit: CircuitPolicy {
            failure_threshold: 1,
            open_for: Duration::MAX,
        },
        ..Resilience::default()
    };
    let guard = guarded(inner.clone(), policy);
    let deadline = || Deadline::after(Duration::from_secs(5));
    guard
        .invoke(&invocation(None), deadline())
        .await
        .unwrap_err();
    let open = guard
        .invoke(&invocation(None), deadline())
        .await
        .unwrap_err();
    assert_eq!(open.reason, "CIRCUIT_OPEN");
}
