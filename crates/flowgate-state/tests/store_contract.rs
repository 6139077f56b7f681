//! One contract for every `RunStore`: the in-memory store, the Redis store
//! on a single node and on a three-master Redis Cluster (real redis-server
//! processes on 127.0.0.1). Each check gets two handles, `a` and `b`: the
//! same store in memory, two separate stores (two replicas) on one Redis.
//! Then what only the Redis store has: expiry, secrets kept out of events,
//! outages and recovery.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers outside #[test] fns: a failure there fails the test"
)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use flowgate_core::{RunError, RunId, RunStatus, SecretString, Usage};
use flowgate_redis::{
    RedisConfig, RedisConnection,
    testing::{RedisCluster, RedisServer},
};
use flowgate_state::{
    MemoryRunStore, RedisRunStore, RunChange, RunRecord, RunStore, StoreLimits, Subscription,
};
use serde_json::json;

/// How long an event may take from a change on one replica to a
/// subscriber on another (the target is ~100 ms; this bound only keeps a
/// loaded CI machine from failing the test).
const DELIVERY: Duration = Duration::from_secs(2);

fn change(status: RunStatus) -> RunChange {
    RunChange {
        status,
        output: None,
        error: None,
        usage: Usage::default(),
    }
}

async fn next(subscription: &mut Subscription) -> RunRecord {
    tokio::time::timeout(DELIVERY, subscription.next())
        .await
        .expect("an event within the delivery bound")
        .expect("the subscription is open")
}

async fn nothing_more(subscription: &mut Subscription) {
    let more = tokio::time::timeout(Duration::from_millis(300), subscription.next()).await;
    assert!(more.is_err(), "unexpected event: {more:?}");
}

/// A run id unique to one check (Redis stores are shared by the checks of
/// one backend).
fn run(check: &str) -> RunId {
    RunId::new("kn", format!("{check}-{}", rand_suffix()))
}

fn rand_suffix() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    u128::from(NEXT.fetch_add(1, Ordering::Relaxed)) + u128::from(std::process::id()) * 1_000_000
}

// ---- the contract --------------------------------------------------------

async fn a_change_through_a_reaches_a_subscriber_of_b(a: &dyn RunStore, b: &dyn RunStore) {
    let id = run("reach");
    a.insert(RunRecord::new(id.clone(), RunStatus::Queued))
        .await
        .unwrap();
    let (snapshot, mut subscription) = b.subscribe(&id).await.unwrap().unwrap();
    assert_eq!(snapshot.status, RunStatus::Queued);
    assert_eq!(b.subscribers(&id), 1);
    let started = Instant::now();
    let running = a.update(&id, change(RunStatus::Running)).await.unwrap();
    assert_eq!(running.unwrap().status, RunStatus::Running);
    assert_eq!(next(&mut subscription).await.status, RunStatus::Running);
    let latency = started.elapsed();
    let mut done = change(RunStatus::Completed);
    done.output = Some(json!({"answer": 42}));
    a.update(&id, done).await.unwrap().unwrap();
    let completed = next(&mut subscription).await;
    assert_eq!(completed.status, RunStatus::Completed);
    assert_eq!(completed.output, Some(json!({"answer": 42})));
    nothing_more(&mut subscription).await;
    drop(subscription);
    assert_eq!(b.subscribers(&id), 0);
    eprintln!("change on a seen by b's subscriber after {latency:?}");
}

async fn terminal_states_are_sticky_and_runs_never_go_back(a: &dyn RunStore, b: &dyn RunStore) {
    let id = run("sticky");
    a.insert(RunRecord::new(id.clone(), RunStatus::Running))
        .await
        .unwrap();
    let (_, mut subscription) = b.subscribe(&id).await.unwrap().unwrap();
    assert!(
        a.update(&id, change(RunStatus::Queued))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        b.update(&id, change(RunStatus::Running))
            .await
            .unwrap()
            .is_none()
    );
    let mut failed = change(RunStatus::Failed);
    failed.error = Some(RunError {
        code: "BOOM".into(),
        message: "it broke".into(),
    });
    assert!(b.update(&id, failed).await.unwrap().is_some());
    for late in [
        RunStatus::Completed,
        RunStatus::Cancelled,
        RunStatus::Running,
    ] {
        assert!(a.update(&id, change(late)).await.unwrap().is_none());
    }
    a.insert(RunRecord::new(id.clone(), RunStatus::Running))
        .await
        .unwrap();
    let record = b.get(&id).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.error.unwrap().code, "BOOM");
    assert_eq!(next(&mut subscription).await.status, RunStatus::Failed);
    nothing_more(&mut subscription).await;
}

async fn unknown_runs_are_none(a: &dyn RunStore, _: &dyn RunStore) {
    let id = run("unknown");
    assert!(a.get(&id).await.unwrap().is_none());
    assert!(
        a.update(&id, change(RunStatus::Running))
            .await
            .unwrap()
            .is_none()
    );
    assert!(a.subscribe(&id).await.unwrap().is_none());
    assert_eq!(a.subscribers(&id), 0);
    assert!(
        a.get(&id).await.unwrap().is_none(),
        "an update creates nothing"
    );
}

async fn records_round_trip_and_updates_merge(a: &dyn RunStore, b: &dyn RunStore) {
    let id = run("fields");
    let mut record = RunRecord::new(id.clone(), RunStatus::Running);
    record.usage = Usage {
        credits: Some(0.25),
        duration: Some(Duration::from_millis(1500)),
        tokens: Some(12),
    };
    record.webhook_secret = Some(SecretString::new("whsec_per_run"));
    record.callback_url = Some("https://caller.example/done".into());
    record.trace_parent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    a.insert(record.clone()).await.unwrap();
    assert_eq!(b.get(&id).await.unwrap().unwrap(), record);
    // A change without usage keeps the reported usage; the output and
    // error are the change's.
    let mut done = change(RunStatus::Completed);
    done.output = Some(json!(["a", {"b": null}]));
    let updated = b.update(&id, done).await.unwrap().unwrap();
    assert_eq!(updated.usage, record.usage);
    assert_eq!(updated.output, Some(json!(["a", {"b": null}])));
    assert_eq!(updated.error, None);
    assert_eq!(updated.callback_url, record.callback_url);
    assert_eq!(updated.webhook_secret, record.webhook_secret);
    assert!(updated.updated_at >= record.updated_at);
    assert_eq!(a.get(&id).await.unwrap().unwrap(), updated);
}

async fn a_replacement_of_a_running_run_is_published(a: &dyn RunStore, b: &dyn RunStore) {
    let id = run("replace");
    a.insert(RunRecord::new(id.clone(), RunStatus::Running))
        .await
        .unwrap();
    let (_, mut subscription) = b.subscribe(&id).await.unwrap().unwrap();
    let mut again = RunRecord::new(id.clone(), RunStatus::Running);
    again.callback_url = Some("https://caller.example/again".into());
    a.insert(again).await.unwrap();
    let event = next(&mut subscription).await;
    assert_eq!(
        event.callback_url.as_deref(),
        Some("https://caller.example/again")
    );
}

async fn racing_changes_end_once(a: &dyn RunStore, b: &dyn RunStore) {
    let id = run("race");
    a.insert(RunRecord::new(id.clone(), RunStatus::Queued))
        .await
        .unwrap();
    let statuses = [
        RunStatus::Running,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];
    let attempts = (0..24).map(|index| {
        let store = if index % 2 == 0 { a } else { b };
        let status = statuses[index % statuses.len()];
        let id = id.clone();
        async move { (status, store.update(&id, change(status)).await.unwrap()) }
    });
    let results = futures::future::join_all(attempts).await;
    let ended: Vec<_> = results
        .iter()
        .filter(|(status, applied)| status.is_terminal() && applied.is_some())
        .collect();
    assert_eq!(
        ended.len(),
        1,
        "exactly one terminal change wins: {results:?}"
    );
    assert_eq!(a.get(&id).await.unwrap().unwrap().status, ended[0].0);
}

async fn subscribing_while_it_changes_misses_nothing(a: &dyn RunStore, b: &dyn RunStore) {
    for round in 0..10 {
        let id = run(&format!("gap{round}"));
        a.insert(RunRecord::new(id.clone(), RunStatus::Queued))
            .await
            .unwrap();
        let changes = async {
            tokio::task::yield_now().await;
            a.update(&id, change(RunStatus::Running)).await.unwrap();
            a.update(&id, change(RunStatus::Completed)).await.unwrap();
        };
        let subscribing = b.subscribe(&id);
        let (_, subscribed) = tokio::join!(changes, subscribing);
        let (mut last, mut subscription) = subscribed.unwrap().unwrap();
        let mut seen = vec![last.status];
        while !last.status.is_terminal() {
            last = next(&mut subscription).await;
            seen.push(last.status);
        }
        assert!(
            seen.windows(2).all(|pair| pair[0] != pair[1]),
            "no state twice: {seen:?}"
        );
        assert_eq!(last.status, RunStatus::Completed);
    }
}

/// Owner leases: one holder at a time; a renewed lease never lapses, a
/// released one is nobody's work; a lapsed one is found by a sweep and
/// only one of two racing claims takes it over.
async fn one_owner_at_a_time_and_lapsed_leases_are_found(a: &dyn RunStore, b: &dyn RunStore) {
    let id = run("owner");
    let lease = Duration::from_millis(400);
    let expired = async |store: &dyn RunStore| store.expired_owners(10_000).await.unwrap();
    assert!(a.claim_owner(&id, "a-1", lease).await.unwrap());
    assert!(
        !b.claim_owner(&id, "b-1", lease).await.unwrap(),
        "held by a"
    );
    assert!(
        a.claim_owner(&id, "a-1", lease).await.unwrap(),
        "a claims again"
    );
    assert!(!b.renew_owner(&id, "b-1", lease).await.unwrap(), "not b's");
    for _ in 0..4 {
        tokio::time::sleep(lease / 2).await;
        assert!(a.renew_owner(&id, "a-1", lease).await.unwrap());
    }
    assert!(!expired(b).await.contains(&id), "renewed: never lapsed");
    b.release_owner(&id, "b-1").await.unwrap();
    assert!(
        !b.claim_owner(&id, "b-1", lease).await.unwrap(),
        "b cannot free it"
    );
    a.release_owner(&id, "a-1").await.unwrap();
    assert!(b.claim_owner(&id, "b-1", lease).await.unwrap(), "released");
    // b dies: its lease lapses.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    assert!(!b.renew_owner(&id, "b-1", lease).await.unwrap(), "lapsed");
    assert!(expired(a).await.contains(&id), "a sweep finds it");
    let (first, second) = tokio::join!(
        a.claim_owner(&id, "a-2", lease),
        b.claim_owner(&id, "b-2", lease)
    );
    assert!(
        first.unwrap() ^ second.unwrap(),
        "exactly one claim takes it over"
    );
    assert!(!expired(b).await.contains(&id), "owned again");
    a.release_owner(&id, "a-2").await.unwrap();
    b.release_owner(&id, "b-2").await.unwrap();
    assert!(a.claim_owner(&id, "a-3", lease).await.unwrap(), "released");
    a.release_owner(&id, "a-3").await.unwrap();
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    assert!(
        !expired(a).await.contains(&id),
        "a released lease is no work"
    );
}

async fn contract(a: &dyn RunStore, b: &dyn RunStore) {
    a_change_through_a_reaches_a_subscriber_of_b(a, b).await;
    terminal_states_are_sticky_and_runs_never_go_back(a, b).await;
    unknown_runs_are_none(a, b).await;
    records_round_trip_and_updates_merge(a, b).await;
    a_replacement_of_a_running_run_is_published(a, b).await;
    racing_changes_end_once(a, b).await;
    subscribing_while_it_changes_misses_nothing(a, b).await;
    one_owner_at_a_time_and_lapsed_leases_are_found(a, b).await;
}

// ---- the backends --------------------------------------------------------

const TTL: Duration = Duration::from_secs(600);

fn redis_config(endpoint: RedisConfig, prefix: &str) -> RedisConfig {
    RedisConfig {
        key_prefix: prefix.to_owned(),
        op_timeout: Duration::from_secs(2),
        ..endpoint
    }
}

/// A replica's store on the Redis of `config`.
fn replica(config: &RedisConfig) -> RedisRunStore {
    let commands = RedisConnection::open(config).unwrap();
    RedisRunStore::open(commands, config, TTL).unwrap()
}

#[tokio::test]
async fn the_memory_store_keeps_the_contract() {
    let store = MemoryRunStore::new(StoreLimits::default());
    contract(&store, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_keeps_the_contract_on_a_node() {
    let server = RedisServer::start().unwrap();
    let config = redis_config(RedisConfig::node(server.url()), "node:");
    contract(&replica(&config), &replica(&config)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_keeps_the_contract_on_a_three_master_cluster() {
    let cluster = RedisCluster::start().unwrap();
    let config = redis_config(RedisConfig::cluster(cluster.urls()), "cluster:");
    contract(&replica(&config), &replica(&config)).await;
    // The runs spread over the masters (hash tags put each run in one
    // slot, not every run in the same one).
    let used = cluster
        .nodes()
        .iter()
        .filter(|node| !node.command(&["DBSIZE"]).unwrap().starts_with(":0"))
        .count();
    assert!(used >= 2, "runs on {used} of 3 masters");
}

// ---- only Redis ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_expire_and_events_carry_no_secret() {
    let server = RedisServer::start().unwrap();
    let config = redis_config(RedisConfig::node(server.url()), "fg:");
    let (a, b) = (replica(&config), replica(&config));
    let id = RunId::new("fh", "run-ttl");
    let mut record = RunRecord::new(id.clone(), RunStatus::Running);
    record.webhook_secret = Some(SecretString::new("whsec_never_published"));
    a.insert(record).await.unwrap();
    let key = format!("fg:run:{{{}}}", id.encode());
    let ttl = server.command(&["PTTL", &key]).unwrap();
    let ttl: u64 = ttl.trim().trim_start_matches(':').parse().unwrap();
    assert!(ttl > 590_000 && ttl <= 600_000, "PTTL {ttl}");
    let (snapshot, mut subscription) = b.subscribe(&id).await.unwrap().unwrap();
    assert!(snapshot.webhook_secret.is_some(), "the record keeps it");
    a.update(&id, change(RunStatus::Completed)).await.unwrap();
    let event = next(&mut subscription).await;
    assert_eq!(event.status, RunStatus::Completed);
    assert_eq!(event.webhook_secret, None, "events never carry the secret");
    // Owner leases: the lease expires by itself, its index with the runs.
    assert!(
        a.claim_owner(&id, "a-1", Duration::from_secs(5))
            .await
            .unwrap()
    );
    let keys = server.command(&["KEYS", "fg:run-owner*"]).unwrap();
    let keys: Vec<&str> = keys
        .lines()
        .filter(|line| line.contains("run-owner"))
        .collect();
    assert_eq!(keys.len(), 2, "the lease and its shard's index: {keys:?}");
    for key in keys {
        let key = key.trim().trim_start_matches('+');
        let ttl = server.command(&["PTTL", key]).unwrap();
        let ttl: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
        assert!(ttl > 0 && ttl <= 600_000, "{key}: PTTL {ttl}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_an_error_and_subscriptions_come_back() {
    let mut server = RedisServer::start().unwrap();
    let config = RedisConfig {
        op_timeout: Duration::from_millis(300),
        ..redis_config(RedisConfig::node(server.url()), "fg:")
    };
    let (a, b) = (replica(&config), replica(&config));
    let id = run("outage");
    a.insert(RunRecord::new(id.clone(), RunStatus::Queued))
        .await
        .unwrap();
    let (_, mut subscription) = b.subscribe(&id).await.unwrap().unwrap();
    a.check().await.unwrap();

    server.stop();
    assert!(a.check().await.is_err());
    assert!(a.get(&id).await.is_err());
    assert!(b.update(&id, change(RunStatus::Running)).await.is_err());
    assert!(b.subscribe(&run("other")).await.is_err());

    // Back, empty (nothing is persisted): the run is recorded again and
    // its changes reach the subscription made before the outage.
    server.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.check().await.is_err() || b.check().await.is_err() {
        assert!(Instant::now() < deadline, "no recovery after the restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.insert(RunRecord::new(id.clone(), RunStatus::Queued))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The resubscription is asynchronous: until it is in place an
        // update may go unheard, so retry with fresh states.
        let running = a.update(&id, change(RunStatus::Running)).await.unwrap();
        let heard = tokio::time::timeout(Duration::from_millis(200), subscription.next()).await;
        if let Ok(Some(record)) = heard {
            assert!(running.is_some() || record.status == RunStatus::Running);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the subscription did not come back"
        );
        a.insert(RunRecord::new(id.clone(), RunStatus::Queued))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_event_connection_catches_up() {
    let server = RedisServer::start().unwrap();
    let config = redis_config(RedisConfig::node(server.url()), "fg:");
    let (a, b) = (replica(&config), replica(&config));
    let id = run("catch-up");
    a.insert(RunRecord::new(id.clone(), RunStatus::Running))
        .await
        .unwrap();
    let (_, mut subscription) = b.subscribe(&id).await.unwrap().unwrap();
    // b's event connection drops; the run ends before b listens again.
    let killed = server
        .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .unwrap();
    assert!(killed.starts_with(":1"), "{killed}");
    a.update(&id, change(RunStatus::Completed)).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("the end arrives after the reconnect")
        .unwrap();
    assert_eq!(event.status, RunStatus::Completed);
}

#[tokio::test]
async fn many_subscribers_share_one_channel_per_replica() {
    let server = RedisServer::start().unwrap();
    let config = redis_config(RedisConfig::node(server.url()), "fg:");
    let (a, b) = (replica(&config), replica(&config));
    let id = run("fanout");
    a.insert(RunRecord::new(id.clone(), RunStatus::Running))
        .await
        .unwrap();
    let mut subscriptions = Vec::new();
    for _ in 0..5 {
        subscriptions.push(b.subscribe(&id).await.unwrap().unwrap().1);
    }
    assert_eq!(b.subscribers(&id), 5);
    let channels = server
        .command(&[
            "PUBSUB",
            "NUMSUB",
            &format!("fg:run-events:{{{}}}", id.encode()),
        ])
        .unwrap();
    assert!(
        channels.ends_with(":1\r\n"),
        "one Redis subscription: {channels:?}"
    );
    a.update(&id, change(RunStatus::Completed)).await.unwrap();
    for subscription in &mut subscriptions {
        assert_eq!(next(subscription).await.status, RunStatus::Completed);
    }
    drop(subscriptions);
    assert_eq!(b.subscribers(&id), 0);
    // The replica leaves the channel once nobody listens (asynchronously).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let channels = server
            .command(&[
                "PUBSUB",
                "NUMSUB",
                &format!("fg:run-events:{{{}}}", id.encode()),
            ])
            .unwrap();
        if channels.ends_with(":0\r\n") {
            break;
        }
        assert!(Instant::now() < deadline, "channel not left: {channels:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn stores_are_shareable() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Arc<dyn RunStore>>();
    shareable::<RedisRunStore>();
}
