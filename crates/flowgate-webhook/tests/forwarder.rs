//! The forwarder against a real local receiver on 127.0.0.1.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers outside #[test] fns: a failure there fails the test"
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use flowgate_core::{ProviderKind, RunStatus};
use flowgate_webhook::{
    Delivery, DeliveryOutcome, DeliveryResult, EnqueueError, ForwardedEvent, Forwarder,
    ForwarderConfig, ForwarderStats, StandardSecret, Verifier, WebhookScheme,
};
use serde_json::json;
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Default)]
struct Receiver {
    hits: Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>,
}

impl Receiver {
    fn hits(&self, route: &str) -> Vec<(HeaderMap, Bytes)> {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _, _)| r == route)
            .map(|(_, h, b)| (h.clone(), b.clone()))
            .collect()
    }
}

/// `POST /{route}`: `flaky` answers 503 twice then 200, `bad` 400,
/// `limited` 429 once then 200, anything else 200.
async fn receive(
    State(receiver): State<Receiver>,
    Path(route): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let seen = {
        let mut hits = receiver.hits.lock().unwrap();
        hits.push((route.clone(), headers, body));
        hits.iter().filter(|(r, _, _)| *r == route).count()
    };
    match (route.as_str(), seen) {
        ("flaky", 1 | 2) => StatusCode::SERVICE_UNAVAILABLE,
        ("bad", _) => StatusCode::BAD_REQUEST,
        ("limited", 1) => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::OK,
    }
}

async fn start_receiver() -> (Receiver, String) {
    let receiver = Receiver::default();
    let app = Router::new()
        .route("/{route}", post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (receiver, base)
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn fast_config() -> ForwarderConfig {
    ForwarderConfig {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        request_timeout: Duration::from_secs(2),
        queue_capacity: 16,
        workers: 2,
        ..ForwarderConfig::default()
    }
}

fn event(run_id: &str) -> ForwardedEvent {
    ForwardedEvent {
        run_id: run_id.to_owned(),
        provider: ProviderKind::Knouds,
        upstream_run_id: Some("ex-1".to_owned()),
        status: RunStatus::Completed,
        output: Some(json!({"answer": 42})),
        error: None,
        time: SystemTime::now(),
    }
}

fn delivery(url: &str, event: &ForwardedEvent, secret: &StandardSecret) -> Delivery {
    Delivery {
        url: url.parse().unwrap(),
        event_id: event.event_id(),
        body: event.to_body(),
        secret: secret.clone(),
    }
}

async fn next_outcome(outcomes: &mut broadcast::Receiver<DeliveryOutcome>) -> DeliveryOutcome {
    tokio::time::timeout(WAIT, outcomes.recv())
        .await
        .expect("an outcome within the deadline")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_503_then_delivers_once_with_a_valid_signature() {
    let (receiver, base) = start_receiver().await;
    let forwarder = Forwarder::new(fast_config(), client());
    let mut outcomes = forwarder.subscribe();
    let secret = StandardSecret::generate();
    let event = event("run_flaky");
    forwarder
        .enqueue(delivery(&format!("{base}/flaky"), &event, &secret))
        .unwrap();

    let outcome = next_outcome(&mut outcomes).await;
    assert_eq!(outcome.event_id, event.event_id());
    assert_eq!(outcome.result, DeliveryResult::Delivered { status: 200 });
    assert_eq!(outcome.attempts, 3);
    assert_eq!(
        forwarder.stats(),
        ForwarderStats {
            delivered: 1,
            retried: 2,
            ..ForwarderStats::default()
        }
    );

    let hits = receiver.hits("flaky");
    assert_eq!(hits.len(), 3);
    // The official library accepts every attempt; all share one webhook-id.
    let official = standardwebhooks::Webhook::new(secret.to_secret_string().expose()).unwrap();
    for (headers, body) in &hits {
        assert_eq!(headers["webhook-id"], event.event_id().as_str());
        assert_eq!(headers["content-type"], "application/json");
        official.verify(body, headers).unwrap();
    }
    // …and so does ours, which reads the event back.
    let (headers, body) = hits.last().unwrap();
    let verified = Verifier::default()
        .verify(
            WebhookScheme::Standard,
            headers,
            body,
            &[secret.to_secret_string()],
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(verified.event.run_id.as_deref(), Some("run_flaky"));
    assert_eq!(verified.event.output, Some(json!({"answer": 42})));
    forwarder.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_not_retried() {
    let (receiver, base) = start_receiver().await;
    let forwarder = Forwarder::new(fast_config(), client());
    let mut outcomes = forwarder.subscribe();
    let secret = StandardSecret::generate();
    let event = event("run_bad");
    forwarder
        .enqueue(delivery(&format!("{base}/bad"), &event, &secret))
        .unwrap();
    let outcome = next_outcome(&mut outcomes).await;
    assert_eq!(
        outcome.result,
        DeliveryResult::Rejected { status: Some(400) }
    );
    assert_eq!(outcome.attempts, 1);
    assert_eq!(receiver.hits("bad").len(), 1);
    assert_eq!(
        forwarder.stats(),
        ForwarderStats {
            failed: 1,
            ..ForwarderStats::default()
        }
    );
    // A failed delivery may be enqueued again (the dedup forgot it).
    forwarder
        .enqueue(delivery(&format!("{base}/bad"), &event, &secret))
        .unwrap();
    next_outcome(&mut outcomes).await;
    assert_eq!(receiver.hits("bad").len(), 2);
    forwarder.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_deliveries_are_retried() {
    let (receiver, base) = start_receiver().await;
    let forwarder = Forwarder::new(fast_config(), client());
    let mut outcomes = forwarder.subscribe();
    let event = event("run_limited");
    forwarder
        .enqueue(delivery(
            &format!("{base}/limited"),
            &event,
            &StandardSecret::generate(),
        ))
        .unwrap();
    let outcome = next_outcome(&mut outcomes).await;
    assert_eq!(outcome.result, DeliveryResult::Delivered { status: 200 });
    assert_eq!(outcome.attempts, 2);
    assert_eq!(receiver.hits("limited").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_id_is_delivered_once() {
    let (receiver, base) = start_receiver().await;
    let forwarder = Forwarder::new(fast_config(), client());
    let mut outcomes = forwarder.subscribe();
    let secret = StandardSecret::generate();
    let url = format!("{base}/ok");
    let event = event("run_dup");
    // Twice while pending, once after delivery.
    forwarder.enqueue(delivery(&url, &event, &secret)).unwrap();
    forwarder.enqueue(delivery(&url, &event, &secret)).unwrap();
    let outcome = next_outcome(&mut outcomes).await;
    assert_eq!(outcome.result, DeliveryResult::Delivered { status: 200 });
    forwarder.enqueue(delivery(&url, &event, &secret)).unwrap();
    // Another event of the same run is a different delivery.
    let mut failed = event.clone();
    failed.status = RunStatus::Failed;
    forwarder.enqueue(delivery(&url, &failed, &secret)).unwrap();
    let outcome = next_outcome(&mut outcomes).await;
    assert_eq!(outcome.event_id, failed.event_id());
    tokio::time::sleep(Duration::from_millis(100)).await;

    let ids: Vec<_> = receiver
        .hits("ok")
        .iter()
        .map(|(h, _)| h["webhook-id"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, vec![event.event_id(), failed.event_id()]);
    let stats = forwarder.stats();
    assert_eq!((stats.delivered, stats.duplicates), (2, 2));
    forwarder.shutdown().await;
}

/// A port nothing listens on.
async fn closed_port_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/gone")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_are_retried_up_to_max_attempts() {
    let url = closed_port_url().await;
    let forwarder = Forwarder::new(
        ForwarderConfig {
            max_attempts: 3,
            ..fast_config()
        },
        client(),
    );
    let mut outcomes = forwarder.subscribe();
    forwarder
        .enqueue(delivery(
            &url,
            &event("run_gone"),
            &StandardSecret::generate(),
        ))
        .unwrap();
    let outcome = next_outcome(&mut outcomes).await;
    assert_eq!(
        outcome.result,
        DeliveryResult::Exhausted { last_status: None }
    );
    assert_eq!(outcome.attempts, 3);
    assert_eq!(
        forwarder.stats(),
        ForwarderStats {
            retried: 2,
            failed: 1,
            ..ForwarderStats::default()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_queue_and_shutdown() {
    let url = closed_port_url().await;
    let forwarder = Forwarder::new(
        ForwarderConfig {
            queue_capacity: 1,
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
            ..fast_config()
        },
        client(),
    );
    let mut outcomes = forwarder.subscribe();
    let secret = StandardSecret::generate();
    forwarder
        .enqueue(delivery(&url, &event("run_a"), &secret))
        .unwrap();
    // The first delivery holds the only slot while it backs off.
    assert_eq!(
        forwarder.enqueue(delivery(&url, &event("run_b"), &secret)),
        Err(EnqueueError::Full)
    );
    let mut bad_id = delivery(&url, &event("run_c"), &secret);
    bad_id.event_id = "bad\nid".to_owned();
    assert_eq!(forwarder.enqueue(bad_id), Err(EnqueueError::InvalidEventId));

    // Let the first attempt fail so the delivery is waiting out its backoff.
    for _ in 0..200 {
        if forwarder.stats().retried == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(forwarder.stats().retried, 1, "the first attempt failed");
    tokio::time::timeout(WAIT, forwarder.shutdown())
        .await
        .expect("shutdown does not wait out the backoff");
    let outcome = next_outcome(&mut outcomes).await;
    assert_eq!(outcome.result, DeliveryResult::Abandoned);
    assert_eq!(
        forwarder.enqueue(delivery(&url, &event("run_d"), &secret)),
        Err(EnqueueError::Closed)
    );
    let stats = forwarder.stats();
    assert_eq!((stats.dropped, stats.retried, stats.delivered), (3, 1, 0));
}

/// A receiver on 127.0.0.1: `POST /slow` answers 200 after 300 ms, `POST
/// /hang` after a minute. Stopped when the test's runtime ends.
async fn start_slow_receiver() -> String {
    let app = Router::new()
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                StatusCode::OK
            }),
        )
        .route(
            "/hang",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                StatusCode::OK
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_delivers_what_is_queued_within_the_grace() {
    let base = start_slow_receiver().await;
    let forwarder = Forwarder::new(
        ForwarderConfig {
            workers: 1,
            ..fast_config()
        },
        client(),
    );
    let secret = StandardSecret::generate();
    let url = format!("{base}/slow");
    for run in ["run_a", "run_b", "run_c"] {
        forwarder
            .enqueue(delivery(&url, &event(run), &secret))
            .unwrap();
    }
    // One worker: two deliveries are still queued behind the first.
    let grace = tokio::time::Instant::now() + Duration::from_secs(30);
    let report = tokio::time::timeout(WAIT, forwarder.drain(grace))
        .await
        .expect("the drain ends once everything is delivered");
    assert_eq!(report.abandoned, 0);
    let stats = forwarder.stats();
    assert_eq!((stats.delivered, stats.abandoned), (3, 0));
    assert_eq!(
        forwarder.enqueue(delivery(&url, &event("run_d"), &secret)),
        Err(EnqueueError::Closed),
        "a draining forwarder takes nothing new"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_abandons_and_counts_what_outlives_the_grace() {
    let base = start_slow_receiver().await;
    let forwarder = Forwarder::new(
        ForwarderConfig {
            request_timeout: Duration::from_secs(30),
            ..fast_config()
        },
        client(),
    );
    let mut outcomes = forwarder.subscribe();
    let secret = StandardSecret::generate();
    forwarder
        .enqueue(delivery(&format!("{base}/hang"), &event("run_a"), &secret))
        .unwrap();
    forwarder
        .enqueue(delivery(&format!("{base}/slow"), &event("run_b"), &secret))
        .unwrap();
    let grace = tokio::time::Instant::now() + Duration::from_secs(1);
    let report = tokio::time::timeout(WAIT, forwarder.drain(grace))
        .await
        .expect("the drain ends at the grace, not at the receiver's pace");
    assert_eq!(report.abandoned, 1);
    let mut results = [
        next_outcome(&mut outcomes).await,
        next_outcome(&mut outcomes).await,
    ];
    results.sort_by_key(|outcome| matches!(outcome.result, DeliveryResult::Abandoned));
    assert!(matches!(
        results[0].result,
        DeliveryResult::Delivered { status: 200 }
    ));
    assert_eq!(results[1].result, DeliveryResult::Abandoned);
    let stats = forwarder.stats();
    assert_eq!((stats.delivered, stats.abandoned), (1, 1));
}
