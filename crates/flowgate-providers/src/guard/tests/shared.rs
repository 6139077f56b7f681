//! Guards whose limits live in a shared [`LimitStore`]: one budget across
//! guards (replicas), no store call unless a limit is configured, and the
//! failure policies while the store is down.

use super::*;
use crate::MemoryLimitStore;
use flowgate_core::StateStoreUnavailable;
use std::sync::atomic::AtomicBool;

/// A store that counts calls and can be switched off.
#[derive(Debug, Default)]
struct Switchable {
    inner: MemoryLimitStore,
    down: AtomicBool,
    admits: AtomicU32,
    notes: AtomicU32,
}

impl Switchable {
    fn check(&self) -> Result<(), StateStoreUnavailable> {
        if self.down.load(Ordering::SeqCst) {
            Err(StateStoreUnavailable("switched off".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl LimitStore for Switchable {
    async fn admit(
        &self,
        scope: &str,
        request: LimitRequest,
    ) -> Result<LimitVerdict, StateStoreUnavailable> {
        self.admits.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        self.inner.admit(scope, request).await
    }

    async fn window(&self, scope: &str) -> Result<Option<Duration>, StateStoreUnavailable> {
        self.check()?;
        self.inner.window(scope).await
    }

    async fn note_window(
        &self,
        scope: &str,
        note: WindowNote,
    ) -> Result<(), StateStoreUnavailable> {
        self.notes.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        self.inner.note_window(scope, note).await
    }
}

fn limited(requests: u32) -> Resilience {
    Resilience {
        limits: LocalLimits {
            requests_per_window: Some(requests),
            window: Duration::from_secs(60),
            ..LocalLimits::default()
        },
        ..Resilience::default()
    }
}

fn shared(
    inner: Arc<Scripted>,
    policy: Resilience,
    store: &Arc<Switchable>,
    on_unavailable: LimitFailurePolicy,
) -> Guarded {
    Guarded::new(inner, policy)
        .with_shared_limits(Arc::clone(store) as Arc<dyn LimitStore>, on_unavailable)
}

#[tokio::test(start_paused = true)]
async fn two_guards_on_one_store_spend_one_rate_budget() {
    let store = Arc::new(Switchable::default());
    let inner = Scripted::new(Vec::new());
    let a = shared(inner.clone(), limited(5), &store, LimitFailurePolicy::Local);
    let b = shared(inner.clone(), limited(5), &store, LimitFailurePolicy::Local);
    let deadline = Deadline::after(Duration::from_secs(5));
    let mut admitted = 0;
    let mut refused = 0;
    for round in 0..8 {
        let guard = if round % 2 == 0 { &a } else { &b };
        for _ in 0..2 {
            match guard.invoke(&invocation(None), deadline).await {
                Ok(_) => admitted += 1,
                Err(error) => {
                    assert_eq!(error.reason, "LOCAL_RATE_LIMIT");
                    refused += 1;
                }
            }
        }
    }
    assert_eq!((admitted, refused), (5, 11), "5 per minute across both");
    assert_eq!(inner.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn two_guards_on_one_store_share_run_slots() {
    let store = Arc::new(Switchable::default());
    let policy = Resilience {
        limits: LocalLimits {
            max_concurrent_runs: Some(1),
            concurrency_wait: Duration::ZERO,
            ..LocalLimits::default()
        },
        ..Resilience::default()
    };
    let a = shared(
        Scripted::new(Vec::new()),
        policy.clone(),
        &store,
        LimitFailurePolicy::Local,
    );
    let b = shared(
        Scripted::new(Vec::new()),
        policy,
        &store,
        LimitFailurePolicy::Local,
    );
    let (first, held) = a
        .admit(Deadline::after(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(held.is_some());
    let error = b
        .invoke(&invocation(None), Deadline::after(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert_eq!(error.reason, "LOCAL_CONCURRENCY_LIMIT");
    drop((first, held));
    assert!(
        b.invoke(&invocation(None), Deadline::after(Duration::from_secs(5)))
            .await
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn no_limit_configured_means_no_store_round_trip() {
    let store = Arc::new(Switchable::default());
    let inner = Scripted::new(Vec::new());
    let guard = shared(
        inner.clone(),
        Resilience::default(),
        &store,
        LimitFailurePolicy::Closed,
    );
    for _ in 0..5 {
        guard
            .invoke(&invocation(None), Deadline::after(Duration::from_secs(5)))
            .await
            .unwrap();
    }
    assert_eq!(store.admits.load(Ordering::SeqCst), 0);
    assert_eq!(store.notes.load(Ordering::SeqCst), 0);
    let limited_guard = shared(inner, limited(100), &store, LimitFailurePolicy::Closed);
    limited_guard
        .invoke(&invocation(None), Deadline::after(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(
        store.admits.load(Ordering::SeqCst),
        1,
        "one admission per call"
    );
}

#[tokio::test(start_paused = true)]
async fn a_window_one_guard_learned_stops_the_other() {
    let store = Arc::new(Switchable::default());
    let a_inner = Scripted::new(vec![Err(too_many(Duration::from_secs(20)))]);
    let b_inner = Scripted::new(Vec::new());
    let a = shared(a_inner, limited(100), &store, LimitFailurePolicy::Local);
    let b = shared(
        b_inner.clone(),
        limited(100),
        &store,
        LimitFailurePolicy::Local,
    );
    let deadline = Deadline::after(Duration::from_secs(5));
    assert_eq!(
        a.invoke(&invocation(None), deadline)
            .await
            .unwrap_err()
            .reason,
        "RATE_LIMIT_EXCEEDED"
    );
    let error = b.invoke(&invocation(None), deadline).await.unwrap_err();
    assert_eq!(error.reason, "RATE_LIMIT_WINDOW_EXHAUSTED");
    assert!(error.retry_after.unwrap() <= Duration::from_secs(20));
    assert_eq!(b_inner.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn store_down_local_policy_enforces_limits_per_guard() {
    let store = Arc::new(Switchable::default());
    store.down.store(true, Ordering::SeqCst);
    let inner = Scripted::new(Vec::new());
    let guard = shared(inner.clone(), limited(2), &store, LimitFailurePolicy::Local);
    let deadline = Deadline::after(Duration::from_secs(5));
    assert!(guard.invoke(&invocation(None), deadline).await.is_ok());
    assert!(guard.invoke(&invocation(None), deadline).await.is_ok());
    let error = guard.invoke(&invocation(None), deadline).await.unwrap_err();
    assert_eq!(error.reason, "LOCAL_RATE_LIMIT");
    assert_eq!(inner.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn store_down_open_policy_admits_and_closed_refuses_then_both_recover() {
    let store = Arc::new(Switchable::default());
    let inner = Scripted::new(Vec::new());
    let open = shared(inner.clone(), limited(1), &store, LimitFailurePolicy::Open);
    let closed = shared(
        inner.clone(),
        limited(1),
        &store,
        LimitFailurePolicy::Closed,
    );
    let deadline = Deadline::after(Duration::from_secs(5));
    store.down.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert!(open.invoke(&invocation(None), deadline).await.is_ok());
        let error = closed
            .invoke(&invocation(None), deadline)
            .await
            .unwrap_err();
        assert_eq!(
            (error.class, error.reason.as_str()),
            (ErrorClass::Unavailable, "STATE_STORE_UNAVAILABLE")
        );
        assert!(error.retry_after.is_some());
    }
    assert_eq!(inner.calls(), 3);
    store.down.store(false, Ordering::SeqCst);
    assert!(closed.invoke(&invocation(None), deadline).await.is_ok());
    let error = open.invoke(&invocation(None), deadline).await.unwrap_err();
    assert_eq!(error.reason, "LOCAL_RATE_LIMIT", "one budget again");
}
