//! Guarded providers ("replicas") sharing their limits through one real
//! Redis: a 10-per-minute limit admits exactly 10 across two, one run slot
//! holds across both, and with Redis stopped each failure policy gives its
//! documented answer, then everything recovers after a restart.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns: a failure there fails the test"
)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use flowgate_core::{
    Deadline, ErrorClass, FieldViolation, GatewayError, Invocation, LimitFailurePolicy, Provider,
    ProviderKind, RunOutcome, RunStatus, WorkflowRef,
};
use flowgate_providers::{Guarded, LocalLimits, Resilience};
use flowgate_redis::{RedisConfig, RedisConnection, RedisLimitStore, testing::RedisServer};
use tokio::sync::Semaphore;

/// A provider that completes every call once `gate` lets it.
#[derive(Debug)]
struct Upstream {
    calls: AtomicU32,
    gate: Arc<Semaphore>,
}

#[async_trait]
impl Provider for Upstream {
    fn name(&self) -> &str {
        "fetchhive"
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::FetchHive
    }

    fn validate(&self, _: &Invocation) -> Vec<FieldViolation> {
        Vec::new()
    }

    async fn invoke(&self, _: &Invocation, _: Deadline) -> Result<RunOutcome, GatewayError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        drop(self.gate.acquire().await);
        Ok(RunOutcome {
            status: Some(RunStatus::Completed),
            ..RunOutcome::default()
        })
    }
}

fn upstream(open: bool) -> Arc<Upstream> {
    Arc::new(Upstream {
        calls: AtomicU32::new(0),
        gate: Arc::new(Semaphore::new(if open {
            Semaphore::MAX_PERMITS
        } else {
            0
        })),
    })
}

fn replica(
    server: &RedisServer,
    upstream: &Arc<Upstream>,
    limits: LocalLimits,
    on_unavailable: LimitFailurePolicy,
) -> Arc<Guarded> {
    let redis = RedisConnection::open(&RedisConfig {
        op_timeout: Duration::from_millis(300),
        ..RedisConfig::node(server.url())
    })
    .unwrap();
    let store = Arc::new(RedisLimitStore::new(redis, Duration::from_secs(30)));
    let provider: Arc<dyn Provider> = Arc::clone(upstream) as Arc<dyn Provider>;
    Arc::new(
        Guarded::new(
            provider,
            Resilience {
                limits,
                ..Resilience::default()
            },
        )
        .with_shared_limits(store, on_unavailable),
    )
}

fn per_minute(requests: u32) -> LocalLimits {
    LocalLimits {
        requests_per_window: Some(requests),
        window: Duration::from_secs(60),
        ..LocalLimits::default()
    }
}

fn call() -> Invocation {
    Invocation::new(WorkflowRef::Slug("s".into()))
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(10))
}

#[tokio::test]
async fn ten_per_minute_admits_exactly_ten_across_two_replicas() {
    let server = RedisServer::start().unwrap();
    let upstream = upstream(true);
    let a = replica(
        &server,
        &upstream,
        per_minute(10),
        LimitFailurePolicy::Local,
    );
    let b = replica(
        &server,
        &upstream,
        per_minute(10),
        LimitFailurePolicy::Local,
    );
    let calls = (0..24).map(|n| {
        let guard = Arc::clone(if n % 2 == 0 { &a } else { &b });
        tokio::spawn(async move { guard.invoke(&call(), deadline()).await })
    });
    let mut refused = 0;
    for result in calls {
        if let Err(error) = result.await.unwrap() {
            assert_eq!(error.reason, "LOCAL_RATE_LIMIT");
            refused += 1;
        }
    }
    assert_eq!(refused, 14);
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 10);
}

#[tokio::test]
async fn one_run_slot_holds_across_replicas() {
    let server = RedisServer::start().unwrap();
    let upstream = upstream(false);
    let one_slot = LocalLimits {
        max_concurrent_runs: Some(1),
        concurrency_wait: Duration::ZERO,
        ..LocalLimits::default()
    };
    let a = replica(
        &server,
        &upstream,
        one_slot.clone(),
        LimitFailurePolicy::Local,
    );
    let b = replica(&server, &upstream, one_slot, LimitFailurePolicy::Local);
    let running = {
        let a = Arc::clone(&a);
        tokio::spawn(async move { a.invoke(&call(), deadline()).await })
    };
    // Bounded wait until A's call is upstream (it holds the slot).
    for _ in 0..200 {
        if upstream.calls.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 1);
    let error = b.invoke(&call(), deadline()).await.unwrap_err();
    assert_eq!(error.reason, "LOCAL_CONCURRENCY_LIMIT");
    upstream.gate.add_permits(Semaphore::MAX_PERMITS);
    running.await.unwrap().unwrap();
    // The slot is released in the background; a waiting call gets it.
    let waiting = LocalLimits {
        max_concurrent_runs: Some(1),
        concurrency_wait: Duration::from_secs(5),
        ..LocalLimits::default()
    };
    let b = replica(&server, &upstream, waiting, LimitFailurePolicy::Local);
    b.invoke(&call(), deadline()).await.unwrap();
}

#[tokio::test]
async fn redis_down_each_policy_answers_as_documented_then_recovers() {
    let mut server = RedisServer::start().unwrap();
    let upstream = upstream(true);
    let local = replica(&server, &upstream, per_minute(2), LimitFailurePolicy::Local);
    let open = replica(&server, &upstream, per_minute(2), LimitFailurePolicy::Open);
    let closed = replica(
        &server,
        &upstream,
        per_minute(2),
        LimitFailurePolicy::Closed,
    );
    server.stop();
    // local: this replica's own limit (2) applies.
    local.invoke(&call(), deadline()).await.unwrap();
    local.invoke(&call(), deadline()).await.unwrap();
    assert_eq!(
        local.invoke(&call(), deadline()).await.unwrap_err().reason,
        "LOCAL_RATE_LIMIT"
    );
    // open: admitted regardless.
    for _ in 0..4 {
        open.invoke(&call(), deadline()).await.unwrap();
    }
    // closed: refused, retryable.
    let error = closed.invoke(&call(), deadline()).await.unwrap_err();
    assert_eq!(
        (error.class, error.reason.as_str()),
        (ErrorClass::Unavailable, "STATE_STORE_UNAVAILABLE")
    );
    assert!(error.retry_after.is_some());
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 6);

    server.restart().unwrap();
    let mut recovered = false;
    for _ in 0..100 {
        if closed.invoke(&call(), deadline()).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        recovered,
        "the closed replica admits again once Redis is back"
    );
    // One shared budget again (Redis restarted empty): 2 per minute across
    // all three, one already spent.
    open.invoke(&call(), deadline()).await.unwrap();
    assert_eq!(
        local.invoke(&call(), deadline()).await.unwrap_err().reason,
        "LOCAL_RATE_LIMIT"
    );
}
