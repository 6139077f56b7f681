//! One contract for every [`LimitStore`] and [`ReplayStore`]: the memory
//! stores, Redis on a single node and on a three-master cluster (real
//! redis-server processes). Then what only a shared store can show: two
//! instances spend one budget, a crashed holder's slot comes back after its
//! lease, a replay id crosses instances, and an outage is an error within
//! the timeout followed by recovery.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns: a failure there fails the test"
)]

use std::{sync::Arc, time::Duration};

use flowgate_core::{
    LimitRequest, LimitStore, LimitVerdict, RateQuota, ReplayStore, SlotQuota, WindowNote,
};
use flowgate_providers::MemoryLimitStore;
use flowgate_redis::{
    RedisConfig, RedisConnection, RedisLimitStore, RedisReplayStore,
    testing::{RedisCluster, RedisServer},
};
use flowgate_webhook::MemoryReplayStore;

const MINUTE: Duration = Duration::from_secs(60);

fn connect(config: RedisConfig) -> RedisConnection {
    RedisConnection::open(&RedisConfig {
        op_timeout: Duration::from_millis(500),
        ..config
    })
    .unwrap()
}

fn rate(requests: u32) -> LimitRequest {
    LimitRequest {
        rate: Some(RateQuota {
            requests,
            window: MINUTE,
        }),
        slot: None,
    }
}

fn slots(max: u32, wait: Duration) -> LimitRequest {
    LimitRequest {
        rate: None,
        slot: Some(SlotQuota { max, wait }),
    }
}

async fn admitted(store: &dyn LimitStore, scope: &str, request: LimitRequest) -> bool {
    matches!(
        store.admit(scope, request).await.unwrap(),
        LimitVerdict::Admitted(_)
    )
}

/// Everything every store must do; `scope` is fresh per run.
async fn limit_contract(store: &dyn LimitStore, scope: &str) {
    // The request rate: exactly `requests` per window, then a wait hint.
    let rated = format!("{scope}-rate");
    for _ in 0..10 {
        assert!(admitted(store, &rated, rate(10)).await);
    }
    match store.admit(&rated, rate(10)).await.unwrap() {
        LimitVerdict::RateLimited { retry_after } => {
            assert!(retry_after > Duration::ZERO && retry_after <= MINUTE);
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(
        admitted(store, &format!("{scope}-other"), rate(10)).await,
        "scopes are independent"
    );

    // A window: extended, never shortened, by Retry-After; replaced by a
    // reset; checked before any token is taken.
    let windowed = format!("{scope}-window");
    assert_eq!(store.window(&windowed).await.unwrap(), None);
    let at_least = |secs| WindowNote {
        spent_for: None,
        at_least: Some(Duration::from_secs(secs)),
    };
    store.note_window(&windowed, at_least(30)).await.unwrap();
    store.note_window(&windowed, at_least(5)).await.unwrap();
    let left = store.window(&windowed).await.unwrap().unwrap();
    assert!(left > Duration::from_secs(10) && left <= Duration::from_secs(30));
    match store.admit(&windowed, rate(1)).await.unwrap() {
        LimitVerdict::WindowExhausted { retry_after } => {
            assert!(
                retry_after > Duration::from_secs(10) && retry_after <= Duration::from_secs(30)
            );
        }
        other => panic!("expected WindowExhausted, got {other:?}"),
    }
    let reset = |secs| WindowNote {
        spent_for: Some(Duration::from_secs(secs)),
        at_least: None,
    };
    store.note_window(&windowed, reset(5)).await.unwrap();
    assert!(store.window(&windowed).await.unwrap().unwrap() <= Duration::from_secs(5));
    store.note_window(&windowed, reset(0)).await.unwrap();
    assert_eq!(store.window(&windowed).await.unwrap(), None);
    assert!(
        admitted(store, &windowed, rate(1)).await,
        "the refused call took no token"
    );

    // Run slots: `max` at once; a dropped slot comes back (a waiting call
    // gets it).
    let slotted = format!("{scope}-slots");
    let first = store
        .admit(&slotted, slots(2, Duration::ZERO))
        .await
        .unwrap();
    let second = store
        .admit(&slotted, slots(2, Duration::ZERO))
        .await
        .unwrap();
    assert!(matches!(first, LimitVerdict::Admitted(Some(_))));
    assert!(matches!(second, LimitVerdict::Admitted(Some(_))));
    assert!(matches!(
        store
            .admit(&slotted, slots(2, Duration::ZERO))
            .await
            .unwrap(),
        LimitVerdict::NoSlot
    ));
    drop(first);
    assert!(
        matches!(
            store
                .admit(&slotted, slots(2, Duration::from_secs(5)))
                .await
                .unwrap(),
            LimitVerdict::Admitted(Some(_))
        ),
        "a released slot is free again"
    );
    drop(second);
}

async fn replay_contract(store: &dyn ReplayStore, scope: &str) {
    let id = format!("knouds:{scope}-evt{{1}}");
    assert!(store.first_seen(&id, MINUTE).await.unwrap());
    assert!(!store.first_seen(&id, MINUTE).await.unwrap());
    assert!(
        store
            .first_seen(&format!("{id}-other"), MINUTE)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn memory_stores_keep_the_contract() {
    limit_contract(&MemoryLimitStore::new(), "memory").await;
    replay_contract(&MemoryReplayStore::new(100), "memory").await;
}

#[tokio::test]
async fn redis_stores_keep_the_contract_on_one_node() {
    let server = RedisServer::start().unwrap();
    let redis = connect(RedisConfig::node(server.url()));
    limit_contract(&RedisLimitStore::new(redis.clone(), MINUTE), "node").await;
    replay_contract(&RedisReplayStore::new(redis.clone()), "node").await;
    // Every key has a TTL.
    let keys: Vec<String> = redis.query(redis::cmd("KEYS").arg("*")).await.unwrap();
    assert!(keys.len() >= 5, "{keys:?}");
    for key in keys {
        let ttl: i64 = redis.query(redis::cmd("PTTL").arg(&key)).await.unwrap();
        assert!(ttl > 0, "{key} has no TTL");
    }
}

#[tokio::test]
async fn redis_stores_keep_the_contract_on_a_cluster() {
    let cluster = RedisCluster::start().unwrap();
    let redis = connect(RedisConfig::cluster(cluster.urls()));
    limit_contract(&RedisLimitStore::new(redis.clone(), MINUTE), "cluster").await;
    replay_contract(&RedisReplayStore::new(redis), "cluster").await;
}

#[tokio::test]
async fn two_instances_on_one_redis_spend_one_budget() {
    let server = RedisServer::start().unwrap();
    let a = RedisLimitStore::new(connect(RedisConfig::node(server.url())), MINUTE);
    let b = RedisLimitStore::new(connect(RedisConfig::node(server.url())), MINUTE);
    let calls = (0..30).map(|call| {
        let store = if call % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { admitted(&store, "shared", rate(10)).await })
    });
    let mut admitted_calls = 0;
    for call in calls {
        admitted_calls += usize::from(call.await.unwrap());
    }
    assert_eq!(admitted_calls, 10, "10 per minute across both instances");

    // One slot across both.
    let held = a.admit("one-slot", slots(1, Duration::ZERO)).await.unwrap();
    assert!(matches!(held, LimitVerdict::Admitted(Some(_))));
    assert!(matches!(
        b.admit("one-slot", slots(1, Duration::ZERO)).await.unwrap(),
        LimitVerdict::NoSlot
    ));
    drop(held);
    assert!(matches!(
        b.admit("one-slot", slots(1, Duration::from_secs(5)))
            .await
            .unwrap(),
        LimitVerdict::Admitted(Some(_))
    ));

    // A window one instance learned stops the other.
    a.note_window(
        "vendor",
        WindowNote {
            spent_for: None,
            at_least: Some(Duration::from_secs(20)),
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        b.admit("vendor", rate(10)).await.unwrap(),
        LimitVerdict::WindowExhausted { .. }
    ));
}

#[tokio::test]
async fn a_crashed_holders_slot_comes_back_after_its_lease() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    // The "replica" holds the slot in its own runtime, then dies: the
    // runtime goes (no more renewals) and the slot is never dropped.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store =
                RedisLimitStore::new(connect(RedisConfig::node(url)), Duration::from_secs(1));
            let verdict = store
                .admit("crash", slots(1, Duration::ZERO))
                .await
                .unwrap();
            assert!(matches!(verdict, LimitVerdict::Admitted(Some(_))));
            std::mem::forget(verdict);
        });
    })
    .join()
    .unwrap();
    let survivor = RedisLimitStore::new(connect(RedisConfig::node(server.url())), MINUTE);
    assert!(matches!(
        survivor
            .admit("crash", slots(1, Duration::ZERO))
            .await
            .unwrap(),
        LimitVerdict::NoSlot
    ));
    // Waits (bounded) for the 1 s lease to lapse.
    assert!(matches!(
        survivor
            .admit("crash", slots(1, Duration::from_secs(10)))
            .await
            .unwrap(),
        LimitVerdict::Admitted(Some(_))
    ));
}

#[tokio::test]
async fn a_held_slot_outlives_its_lease_while_renewed() {
    let server = RedisServer::start().unwrap();
    let holder = RedisLimitStore::new(
        connect(RedisConfig::node(server.url())),
        Duration::from_secs(1),
    );
    let held = holder
        .admit("renewed", slots(1, Duration::ZERO))
        .await
        .unwrap();
    assert!(matches!(held, LimitVerdict::Admitted(Some(_))));
    // Three leases long, the slot must stay taken: every try is refused.
    let other = RedisLimitStore::new(connect(RedisConfig::node(server.url())), MINUTE);
    assert!(matches!(
        other
            .admit("renewed", slots(1, Duration::from_secs(3)))
            .await
            .unwrap(),
        LimitVerdict::NoSlot
    ));
    drop(held);
}

#[tokio::test]
async fn a_replay_id_seen_through_one_instance_is_replayed_through_another() {
    let server = RedisServer::start().unwrap();
    let a = RedisReplayStore::new(connect(RedisConfig::node(server.url())));
    let b = RedisReplayStore::new(connect(RedisConfig::node(server.url())));
    assert!(a.first_seen("knouds:evt-1", MINUTE).await.unwrap());
    assert!(!b.first_seen("knouds:evt-1", MINUTE).await.unwrap());
    // Through the Verifier: accepted on A, Replayed on B.
    let shared = |store: &RedisReplayStore| {
        flowgate_webhook::Verifier::default()
            .with_shared_replay(Arc::new(store.clone()) as Arc<dyn ReplayStore>, "ingress")
    };
    let (va, vb) = (shared(&a), shared(&b));
    let secret = flowgate_core::SecretString::new("knouds-webhook-secret");
    let body = br#"{"event":"execution.completed","executionId":"ex-9","status":"completed","result":{"ok":true}}"#;
    let now = std::time::SystemTime::now();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "x-knouds-signature",
        flowgate_webhook::sign_knouds(&secret, now, body)
            .parse()
            .unwrap(),
    );
    let secrets = [secret];
    let scheme = flowgate_webhook::WebhookScheme::Knouds;
    va.verify_shared(scheme, &headers, body, &secrets, now)
        .await
        .unwrap();
    let again = vb
        .verify_shared(scheme, &headers, body, &secrets, now)
        .await
        .unwrap_err();
    assert_eq!(again.reason(), flowgate_webhook::FailureReason::Replayed);
}

#[tokio::test]
async fn an_outage_is_an_error_within_the_timeout_then_recovers() {
    let mut server = RedisServer::start().unwrap();
    let redis = connect(RedisConfig::node(server.url()));
    let limits = RedisLimitStore::new(redis.clone(), MINUTE);
    let replay = RedisReplayStore::new(redis);
    assert!(admitted(&limits, "outage", rate(100)).await);
    server.stop();
    let started = std::time::Instant::now();
    assert!(limits.admit("outage", rate(100)).await.is_err());
    assert!(
        limits
            .note_window(
                "outage",
                WindowNote {
                    spent_for: None,
                    at_least: Some(MINUTE)
                }
            )
            .await
            .is_err()
    );
    assert!(replay.first_seen("knouds:evt-2", MINUTE).await.is_err());
    // Three operations, each bounded by the 500 ms timeout (generous slack:
    // this checks "no hang", not speed).
    assert!(started.elapsed() < Duration::from_secs(10));
    server.restart().unwrap();
    let mut recovered = false;
    for _ in 0..100 {
        if let Ok(verdict) = limits.admit("outage", rate(100)).await {
            assert!(matches!(verdict, LimitVerdict::Admitted(None)));
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "admits again once Redis is back");
    assert!(replay.first_seen("knouds:evt-2", MINUTE).await.unwrap());
}
