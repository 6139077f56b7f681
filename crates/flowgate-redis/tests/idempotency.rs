//! The idempotency store contract against real Redis: a single node and a
//! three-master cluster, plus the Redis-only behaviour (TTLs on every key,
//! a lease that frees a crashed owner's key, the store failing closed).

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns: a failure there fails the test"
)]

use std::time::Duration;

use bytes::Bytes;
use flowgate_redis::{
    RedisConfig, RedisConnection, RedisIdempotencyStore,
    testing::{RedisCluster, RedisServer},
};
use flowgate_state::idempotency::{
    Claim, IdempotencyKey, IdempotencyStore, RecordedAnswer, RequestHash, SHARED_SCOPE, contract,
};

fn store(config: RedisConfig, ttl: Duration) -> RedisIdempotencyStore {
    let config = RedisConfig {
        op_timeout: Duration::from_millis(500),
        ..config
    };
    RedisIdempotencyStore::new(RedisConnection::open(&config).unwrap(), ttl)
}

fn key(name: &str) -> IdempotencyKey {
    IdempotencyKey::new(SHARED_SCOPE, name).unwrap()
}

const HASH: RequestHash = RequestHash::from_bytes([9; 32]);

#[tokio::test]
async fn the_contract_holds_on_a_single_node() {
    let server = RedisServer::start().unwrap();
    let store = store(RedisConfig::node(server.url()), Duration::from_secs(60));
    contract::run_all(&store, "node").await;
}

#[tokio::test]
async fn the_contract_holds_on_a_cluster() {
    let cluster = RedisCluster::start().unwrap();
    let store = store(
        RedisConfig::cluster(cluster.urls()),
        Duration::from_secs(60),
    );
    contract::run_all(&store, "cluster").await;
}

#[tokio::test]
async fn every_key_expires_and_a_lease_frees_a_lost_claim() {
    let server = RedisServer::start().unwrap();
    let store = store(RedisConfig::node(server.url()), Duration::from_secs(3));
    let pending = key("lease");
    let claimed = store
        .claim(&pending, HASH, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(claimed, Claim::Claimed);
    let redis_key = store.redis_key(&pending);
    let ttl: i64 = server
        .command(&["PTTL", &redis_key])
        .unwrap()
        .trim_start_matches(':')
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 0 && ttl <= 300, "pending claim ttl {ttl}");
    // The owner never records (it died): the lease ends, the key is free.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store
            .claim(&pending, HASH, Duration::from_secs(10))
            .await
            .unwrap(),
        Claim::Claimed
    );
    store
        .record(&pending, HASH, RecordedAnswer(Bytes::from_static(b"x")))
        .await
        .unwrap();
    let ttl: i64 = server
        .command(&["PTTL", &redis_key])
        .unwrap()
        .trim_start_matches(':')
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 2000 && ttl <= 3000, "recorded answer ttl {ttl}");
    // The caller's key never reaches Redis: the id is a hash.
    assert!(!redis_key.contains("lease"), "{redis_key}");
}

#[tokio::test]
async fn a_store_that_cannot_be_reached_says_so() {
    let mut server = RedisServer::start().unwrap();
    let store = store(RedisConfig::node(server.url()), Duration::from_secs(60));
    server.stop();
    let refused = store
        .claim(&key("down"), HASH, Duration::from_secs(1))
        .await;
    assert!(refused.is_err(), "{refused:?}");
}
