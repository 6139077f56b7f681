//! One contract for every [`CallerQuotaStore`]: the memory store and Redis
//! (a single node and a three-master cluster; real redis-server processes).
//! Then: two instances on one Redis count one quota, and the Lua period
//! arithmetic agrees with the Rust one.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns: a failure there fails the test"
)]

use std::time::Duration;

use flowgate_core::{
    CallerQuota, CallerQuotaStore, MemoryCallerQuotaStore, QuotaBalance, QuotaLimit, QuotaVerdict,
    RunSlot, caller_quota::period,
};
use flowgate_redis::{
    PERIODS_LUA, RedisCallerQuotaStore, RedisConfig, RedisConnection,
    redis::Script,
    testing::{RedisCluster, RedisServer},
};

/// Fixed windows are aligned to the epoch: a day-long one only rolls over
/// at UTC midnight, so a test never straddles a reset by accident.
const DAY: Duration = Duration::from_secs(24 * 3600);
const MONTH: Duration = Duration::from_secs(31 * 24 * 3600);

fn connect(config: RedisConfig) -> RedisConnection {
    RedisConnection::open(&RedisConfig {
        op_timeout: Duration::from_millis(500),
        ..config
    })
    .unwrap()
}

async fn admitted(
    store: &dyn CallerQuotaStore,
    caller: &str,
    quota: &CallerQuota,
) -> (QuotaBalance, Option<RunSlot>) {
    match store.admit(caller, quota).await.unwrap() {
        QuotaVerdict::Admitted { balance, run } => (balance, run),
        other => panic!("expected admission of {caller}, got {other:?}"),
    }
}

async fn refused(
    store: &dyn CallerQuotaStore,
    caller: &str,
    quota: &CallerQuota,
) -> (QuotaLimit, Option<Duration>, QuotaBalance) {
    match store.admit(caller, quota).await.unwrap() {
        QuotaVerdict::Refused {
            limit,
            retry_after,
            balance,
        } => (limit, retry_after, balance),
        other => panic!("expected a refusal of {caller}, got {other:?}"),
    }
}

fn close(left: Option<f64>, expected: f64) -> bool {
    left.is_some_and(|left| (left - expected).abs() < 1e-9)
}

/// Everything every store must do; `caller` is fresh per run.
async fn quota_contract(store: &dyn CallerQuotaStore, caller: &str) {
    // The request window: exactly `requests`, counting down, then a wait
    // until the window resets.
    let rated = format!("{caller}-rate");
    let rate = CallerQuota {
        requests: Some((3, DAY)),
        ..CallerQuota::default()
    };
    for left in [2, 1, 0] {
        let (balance, run) = admitted(store, &rated, &rate).await;
        assert_eq!(balance.requests_remaining, Some(left));
        assert!(balance.requests_reset.unwrap() <= DAY);
        assert!(run.is_none(), "no run limit, no lease");
        assert_eq!(balance.credits_remaining, None);
    }
    let (limit, retry_after, balance) = refused(store, &rated, &rate).await;
    assert_eq!(limit, QuotaLimit::Requests);
    assert!(retry_after.unwrap() > Duration::ZERO && retry_after.unwrap() <= DAY);
    assert_eq!(balance.requests_remaining, Some(0));
    admitted(store, &format!("{caller}-other"), &rate).await;

    // Concurrent runs: leases, given back when dropped.
    let running = format!("{caller}-runs");
    let runs = CallerQuota {
        max_concurrent_runs: Some(2),
        ..CallerQuota::default()
    };
    let (_, first) = admitted(store, &running, &runs).await;
    let (_, second) = admitted(store, &running, &runs).await;
    assert!(first.is_some() && second.is_some());
    let (limit, retry_after, _) = refused(store, &running, &runs).await;
    assert_eq!((limit, retry_after), (QuotaLimit::ConcurrentRuns, None));
    drop(first);
    let mut back = false;
    for _ in 0..100 {
        if let QuotaVerdict::Admitted { .. } = store.admit(&running, &runs).await.unwrap() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(back, "a dropped run is given back");
    drop(second);

    // Budgets: checked at admission, spent by charges; the smaller of day
    // and month is the balance; a refusal takes no request.
    let paying = format!("{caller}-credits");
    let budget = CallerQuota {
        requests: Some((10, DAY)),
        credits_per_day: Some(1.0),
        credits_per_month: Some(10.0),
        ..CallerQuota::default()
    };
    let (balance, _) = admitted(store, &paying, &budget).await;
    assert!(close(balance.credits_remaining, 1.0), "{balance:?}");
    assert!(balance.credits_reset.unwrap() <= DAY);
    let after = store.charge(&paying, &budget, 0.4).await.unwrap();
    assert!(close(after.credits_remaining, 0.6), "{after:?}");
    admitted(store, &paying, &budget).await;
    let after = store.charge(&paying, &budget, 0.7).await.unwrap();
    assert!(
        close(after.credits_remaining, 0.0),
        "never below 0: {after:?}"
    );
    let (limit, retry_after, balance) = refused(store, &paying, &budget).await;
    assert_eq!(limit, QuotaLimit::CreditsPerDay);
    assert!(retry_after.unwrap() > Duration::ZERO && retry_after.unwrap() <= DAY);
    assert_eq!(balance.requests_remaining, Some(8), "refusals take nothing");

    let monthly = format!("{caller}-month");
    let month = CallerQuota {
        credits_per_month: Some(0.5),
        ..CallerQuota::default()
    };
    store.charge(&monthly, &month, 0.5).await.unwrap();
    let (limit, retry_after, _) = refused(store, &monthly, &month).await;
    assert_eq!(limit, QuotaLimit::CreditsPerMonth);
    assert!(retry_after.unwrap() <= MONTH);
}

#[tokio::test]
async fn the_memory_store_keeps_the_contract() {
    quota_contract(&MemoryCallerQuotaStore::new(), "mem").await;
}

#[tokio::test]
async fn redis_keeps_the_contract_on_one_node() {
    let server = RedisServer::start().unwrap();
    let redis = connect(RedisConfig::node(server.url()));
    quota_contract(&RedisCallerQuotaStore::new(redis, DAY), "node").await;
}

#[tokio::test]
async fn redis_keeps_the_contract_on_a_cluster() {
    let cluster = RedisCluster::start().unwrap();
    let redis = connect(RedisConfig::cluster(cluster.urls()));
    quota_contract(&RedisCallerQuotaStore::new(redis, DAY), "cluster").await;
}

#[tokio::test]
async fn two_instances_on_one_redis_count_one_quota() {
    let server = RedisServer::start().unwrap();
    let a = RedisCallerQuotaStore::new(connect(RedisConfig::node(server.url())), DAY);
    let b = RedisCallerQuotaStore::new(connect(RedisConfig::node(server.url())), DAY);
    let quota = CallerQuota {
        requests: Some((4, DAY)),
        max_concurrent_runs: Some(1),
        credits_per_day: Some(3.0),
        ..CallerQuota::default()
    };
    let (_, held) = admitted(&a, "ci", &quota).await;
    let (limit, _, _) = refused(&b, "ci", &quota).await;
    assert_eq!(limit, QuotaLimit::ConcurrentRuns, "one run across both");
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (balance, _) = admitted(&b, "ci", &quota).await;
    assert_eq!(
        balance.requests_remaining,
        Some(2),
        "one window across both"
    );
    a.charge("ci", &quota, 3.0).await.unwrap();
    let (limit, _, _) = refused(&b, "ci", &quota).await;
    assert_eq!(limit, QuotaLimit::CreditsPerDay, "one budget across both");
}

#[tokio::test]
async fn the_lua_periods_match_the_rust_ones() {
    let server = RedisServer::start().unwrap();
    let redis = connect(RedisConfig::node(server.url()));
    let script = Script::new(&format!(
        "{PERIODS_LUA}\nlocal now = tonumber(ARGV[1])\n\
         local d, d_end = window_of(now, DAY_MS)\nlocal m, m_end = month_of(now)\n\
         return {{tostring(d), tostring(d_end), tostring(m), tostring(m_end)}}"
    ));
    // 1970, leap days, year ends, 2026-12-01, 2100 (not a leap year).
    let instants: [u64; 8] = [
        0,
        951_782_400_000,
        1_709_164_800_000,
        1_709_251_199_999,
        1_796_083_200_000,
        1_798_761_599_999,
        1_798_761_600_000,
        4_107_542_400_000,
    ];
    for now in instants {
        let answer: Vec<String> = redis.script(&script.arg(now)).await.unwrap();
        let day = period::day(now);
        let month = period::month(now);
        let expected = [day.index, day.end_ms, month.index, month.end_ms].map(|n| n.to_string());
        assert_eq!(answer, expected, "at {now}");
    }
}
