//! The connection against real redis-server processes: commands, scripts,
//! pub/sub, outages and recovery, a password that never shows, and a
//! three-master cluster.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers outside #[test] fns: a failure there fails the test"
)]

use std::time::Duration;

use flowgate_redis::{
    RedisConfig, RedisConnection, UnavailableKind,
    redis::{self, PushKind, Script},
    testing::{RedisCluster, RedisServer},
};
use tokio::sync::mpsc;

fn config(url: String) -> RedisConfig {
    RedisConfig {
        op_timeout: Duration::from_millis(300),
        ..RedisConfig::node(url)
    }
}

const INCR_BY: &str = "return redis.call('INCRBY', KEYS[1], ARGV[1])";

#[tokio::test]
async fn runs_commands_and_scripts_and_recovers_after_an_outage() {
    let mut server = RedisServer::start().unwrap();
    let redis = RedisConnection::open(&config(server.url())).unwrap();
    assert!(!redis.is_cluster());
    redis.ping().await.unwrap();
    let key = redis.key("counter", "a");
    assert_eq!(key, "flowgate:counter:{a}");
    let script = Script::new(INCR_BY);
    let value: i64 = redis.script(script.key(&key).arg(5)).await.unwrap();
    assert_eq!(value, 5);
    let value: i64 = redis.query(redis::cmd("GET").arg(&key)).await.unwrap();
    assert_eq!(value, 5);

    server.stop();
    let error = redis.ping().await.unwrap_err();
    assert!(
        matches!(
            error.kind,
            UnavailableKind::Connection | UnavailableKind::Timeout
        ),
        "{error:?}"
    );
    server.restart().unwrap();
    // The manager reconnects with backoff; a bounded wait for it.
    let mut recovered = false;
    for _ in 0..100 {
        if redis.ping().await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "no reconnect after the restart");
    // The restarted server is empty and has no scripts cached: EVALSHA
    // falls back to loading it.
    let value: i64 = redis.script(script.key(&key).arg(2)).await.unwrap();
    assert_eq!(value, 2);
}

#[tokio::test]
async fn a_wrong_password_never_shows_in_errors() {
    let server = RedisServer::start().unwrap();
    server
        .command(&["CONFIG", "SET", "requirepass", "right-one"])
        .unwrap();
    let url = format!("redis://:hunter2-secret@127.0.0.1:{}", server.port());
    let redis = RedisConnection::open(&config(url)).unwrap();
    let error = redis.ping().await.unwrap_err();
    let shown = format!("{error} {error:?} {redis:?}");
    assert!(!shown.contains("hunter2-secret"), "{shown}");
    let right = format!("redis://:right-one@127.0.0.1:{}", server.port());
    RedisConnection::open(&config(right))
        .unwrap()
        .ping()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_slow_answer_is_a_timeout() {
    let server = RedisServer::start().unwrap();
    let redis = RedisConnection::open(&config(server.url())).unwrap();
    redis.ping().await.unwrap();
    let error = redis
        .query::<()>(redis::cmd("DEBUG").arg("SLEEP").arg("1"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, UnavailableKind::Timeout, "{error:?}");
}

async fn next_message(pushes: &mut mpsc::UnboundedReceiver<redis::PushInfo>) -> Vec<redis::Value> {
    loop {
        let push = tokio::time::timeout(Duration::from_secs(5), pushes.recv())
            .await
            .expect("a message within 5 s")
            .expect("the push channel is open");
        if matches!(push.kind, PushKind::Message | PushKind::SMessage) {
            return push.data;
        }
    }
}

async fn publish_reaches_subscriber(seeds: RedisConfig) {
    let (sender, mut pushes) = mpsc::unbounded_channel();
    let subscriber = RedisConnection::open_subscriber(&seeds, sender).unwrap();
    let publisher = RedisConnection::open(&seeds).unwrap();
    for id in ["a", "b", "c", "d"] {
        let channel = publisher.key("events", id);
        subscriber.subscribe(&channel).await.unwrap();
        // Published from a script, as the stores do.
        let script = Script::new("return redis.call(ARGV[1], KEYS[1], ARGV[2])");
        let _: i64 = publisher
            .script(
                script
                    .key(&channel)
                    .arg(publisher.publish_command())
                    .arg(format!("hello {id}")),
            )
            .await
            .unwrap();
        let data = next_message(&mut pushes).await;
        assert_eq!(
            data,
            vec![
                redis::Value::BulkString(channel.into_bytes()),
                redis::Value::BulkString(format!("hello {id}").into_bytes())
            ]
        );
    }
}

#[tokio::test]
async fn publishes_reach_a_subscriber_on_a_node() {
    let server = RedisServer::start().unwrap();
    publish_reaches_subscriber(config(server.url())).await;
}

#[tokio::test]
async fn a_three_master_cluster_routes_scripts_and_sharded_pubsub() {
    let cluster = RedisCluster::start().unwrap();
    let seeds = RedisConfig {
        op_timeout: Duration::from_secs(2),
        ..RedisConfig::cluster(cluster.urls())
    };
    let redis = RedisConnection::open(&seeds).unwrap();
    assert!(redis.is_cluster());
    assert_eq!(redis.publish_command(), "SPUBLISH");
    let script = Script::new(INCR_BY);
    // Ids spread over the slots of all three masters.
    for index in 0..30 {
        let key = redis.key("counter", &format!("run-{index}"));
        let value: i64 = redis.script(script.key(&key).arg(index)).await.unwrap();
        assert_eq!(value, index);
    }
    let keys: usize = cluster
        .nodes()
        .iter()
        .filter(|node| !node.command(&["DBSIZE"]).unwrap().starts_with(":0"))
        .count();
    assert_eq!(keys, 3, "the keys spread over the three masters");
    publish_reaches_subscriber(seeds).await;
}
