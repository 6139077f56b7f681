//! A replica that dies leaves no run RUNNING: three real `flowgate serve`
//! processes (A, B, C) on one redis-server with `runs.owner_lease = "2s"`,
//! in front of the emulator.
//!
//! - C polls a Knouds async run that owes its caller a completion event;
//!   C is killed (SIGKILL) before the run ends, nobody streams it: another
//!   replica's sweep finds C's lapsed owner lease, polls the run on, and the
//!   caller's receiver gets the event once.
//! - A runs an AI Tutor async run (gateway-run) whose upstream answer is
//!   held; A is killed: the stream on B ends FAILED with reason
//!   `GATEWAY_REPLICA_LOST` within the lease and one sweep period, and the
//!   run stays FAILED for a later stream.
//! - A forwards a completion event to a receiver that answers 503; A is
//!   killed while backing off between attempts, the receiver comes back:
//!   B's sweep finds the forward's lapsed lease and delivers the event,
//!   with the same `webhook-id`, within the lease and one sweep period.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    inputs,
    process::{GatewayProcess, free_addr},
    receiver::receiver,
    slug, target, workflow_id,
};
use flowgate::pb;
use flowgate_emulator::{Dialect, Emulator, EmulatorConfig, Fault};
use flowgate_redis::testing::RedisServer;
use pb::workflow_gateway_client::WorkflowGatewayClient;
use serde_json::json;
use tonic::{Request, transport::Channel};

/// `runs.owner_lease` of every replica.
const LEASE: Duration = Duration::from_secs(2);

/// A dead replica's work is failed or taken over once its lease lapsed
/// (at most one lease after its last renewal) and a sweep ran (every third
/// of the lease); the rest is room for a loaded CI machine.
const TAKEN_OVER_WITHIN: Duration = Duration::from_secs(2 * 2 + 2);

/// Knouds async runs end this long after they start.
const RUN_TAKES: Duration = Duration::from_secs(5);

fn replica_config(emulator: &Emulator, redis: &RedisServer, grpc: SocketAddr) -> String {
    let text = common::config_text(emulator);
    assert_eq!(text.matches("listen = \"127.0.0.1:0\"").count(), 1);
    assert_eq!(text.matches("poll_max = \"200ms\"").count(), 1);
    let text = text
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{grpc}\"\nadmin_listen = \"127.0.0.1:0\""),
        )
        .replace(
            "poll_max = \"200ms\"",
            "poll_max = \"200ms\"\nowner_lease = \"2s\"",
        );
    format!(
        "{text}\n[state]\nstore = \"redis\"\nurl = \"{}\"\nop_timeout = \"300ms\"\n",
        redis.url()
    )
}

/// Waits (bounded) until the emulator received a request of `dialect`
/// with `method` whose path contains `path`.
async fn wait_for_request(emulator: &Emulator, dialect: Dialect, method: &str, path: &str) {
    for _ in 0..500 {
        if emulator
            .requests()
            .iter()
            .any(|r| r.dialect == dialect && r.method == method && r.path.contains(path))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the emulator never saw {method} {path} ({dialect:?})");
}

async fn invoke(
    client: &mut WorkflowGatewayClient<Channel>,
    target: Option<pb::WorkflowTarget>,
    inputs_json: serde_json::Value,
    callback_url: &str,
) -> pb::InvokeResponse {
    let response = client
        .invoke(pb::InvokeRequest {
            target,
            inputs: inputs(inputs_json),
            async_options: Some(pb::AsyncOptions {
                enabled: true,
                callback_url: callback_url.to_owned(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.status(), pb::RunStatus::Running);
    response
}

async fn open_stream(
    client: &mut WorkflowGatewayClient<Channel>,
    run_id: &str,
) -> tonic::Streaming<pb::RunStatusEvent> {
    let mut request = Request::new(pb::StreamStatusRequest {
        run_id: run_id.to_owned(),
    });
    request.set_timeout(Duration::from_secs(20));
    client.stream_status(request).await.unwrap().into_inner()
}

/// A redis-server, the emulator (async runs ending after `run_takes`) and
/// one ready replica per name in front of both.
async fn start(
    run_takes: Duration,
    names: &[&str],
) -> (RedisServer, Emulator, Vec<GatewayProcess>) {
    let redis = RedisServer::start().unwrap();
    let emulator = Emulator::start(
        EmulatorConfig {
            async_completion_delay: run_takes,
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let mut replicas: Vec<GatewayProcess> = names
        .iter()
        .map(|name| {
            let grpc = free_addr();
            GatewayProcess::spawn(name, grpc, &replica_config(&emulator, &redis, grpc))
        })
        .collect();
    for replica in &mut replicas {
        replica.ready().await;
    }
    (redis, emulator, replicas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_runs_are_taken_over_or_fail_with_gateway_replica_lost() {
    let (_redis, emulator, mut replicas) = start(RUN_TAKES, &["A", "B", "C"]).await;
    let mut a = replicas[0].client().await;
    let mut b = replicas[1].client().await;
    let mut c = replicas[2].client().await;

    // C polls a Knouds run that owes a completion event; C dies.
    let (url, received) = receiver().await;
    let started = Instant::now();
    let knouds = invoke(
        &mut c,
        target("kn", slug("render-video")),
        json!({"prompt": "a fox"}),
        &url,
    )
    .await;
    wait_for_request(&emulator, Dialect::Knouds, "GET", "/api/executions/").await;
    replicas[2].kill();
    let killed = Instant::now();
    assert!(
        killed.duration_since(started) < RUN_TAKES,
        "C died before the run ended"
    );
    let mut events = Vec::new();
    while killed.elapsed() < RUN_TAKES + TAKEN_OVER_WITHIN && events.is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        events = received
            .all()
            .iter()
            .map(|(_, body)| serde_json::from_slice::<serde_json::Value>(body).unwrap())
            .collect();
    }
    assert_eq!(events.len(), 1, "one completion event: {events:?}");
    assert_eq!(events[0]["type"], "run.completed", "{events:?}");
    assert_eq!(events[0]["data"]["run_id"], json!(knouds.run_id));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(received.all().len(), 1, "forwarded once");

    // A runs an AI Tutor call whose answer is held; A dies.
    emulator.inject_fault(
        Fault::delay(Dialect::AiTutor, Duration::from_secs(20))
            .with_path("/run/wf_story")
            .with_times(1),
    );
    let tutor = invoke(
        &mut a,
        target("tutor", workflow_id("wf_story")),
        json!({"story": "a lighthouse"}),
        "",
    )
    .await;
    wait_for_request(&emulator, Dialect::AiTutor, "POST", "/run/wf_story").await;
    let mut stream = open_stream(&mut b, &tutor.run_id).await;
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status(), pb::RunStatus::Running);
    replicas[0].kill();
    let killed = Instant::now();
    let last = tokio::time::timeout(TAKEN_OVER_WITHIN, stream.message())
        .await
        .expect("the run ended within the lease and a sweep")
        .unwrap()
        .unwrap();
    let took = killed.elapsed();
    assert_eq!(last.status(), pb::RunStatus::Failed, "{last:?}");
    let error = last.error.unwrap();
    assert_eq!(error.code, "GATEWAY_REPLICA_LOST", "{error:?}");
    assert!(error.message.contains("cannot be resumed"), "{error:?}");
    assert!(
        took >= LEASE / 2,
        "failed after {took:?}: before the lease could have lapsed"
    );
    assert!(stream.message().await.unwrap().is_none(), "the stream ends");
    eprintln!("gateway-run run failed on B {took:?} after A was killed");

    // Terminal states stay: a later stream sees FAILED at once.
    let mut again = open_stream(&mut b, &tutor.run_id).await;
    let only = again.message().await.unwrap().unwrap();
    assert_eq!(only.status(), pb::RunStatus::Failed);
    assert_eq!(only.error.unwrap().code, "GATEWAY_REPLICA_LOST");
    drop(replicas);
}

/// What a [`flaky_receiver`] got: every attempt's `webhook-id` and whether
/// it was answered 200.
type Attempts = Arc<Mutex<Vec<(String, bool)>>>;

/// A receiver on 127.0.0.1 answering 503 until `up` is set, then 200.
async fn flaky_receiver(up: Arc<AtomicBool>) -> (String, Attempts) {
    use axum::{Router, extract::State, http::HeaderMap, http::StatusCode, routing::post};
    type Shared = (Arc<AtomicBool>, Attempts);
    async fn hook(State((up, attempts)): State<Shared>, headers: HeaderMap) -> StatusCode {
        let id = headers
            .get("webhook-id")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let ok = up.load(Ordering::SeqCst);
        attempts.lock().unwrap().push((id, ok));
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
    let attempts = Attempts::default();
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state((up, Arc::clone(&attempts)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_queued_forward_is_delivered_by_another_with_the_same_webhook_id() {
    let (_redis, _emulator, mut replicas) = start(Duration::from_millis(300), &["A", "B"]).await;
    let mut a = replicas[0].client().await;
    let up = Arc::new(AtomicBool::new(false));
    let (url, attempts) = flaky_receiver(Arc::clone(&up)).await;
    invoke(
        &mut a,
        target("kn", slug("render-video")),
        json!({"prompt": "a fox"}),
        &url,
    )
    .await;
    // A polls the run to its end and forwards the event: refused twice,
    // it backs off (default backoff: 0.5 s, doubled per retry).
    for _ in 0..400 {
        if attempts.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let refused = attempts.lock().unwrap().clone();
    assert!(refused.len() >= 2, "A tried twice: {refused:?}");
    let webhook_id = refused[0].0.clone();
    assert!(webhook_id.starts_with("msg_"), "{refused:?}");
    replicas[0].kill();
    let killed = Instant::now();
    let tried_by_a = attempts.lock().unwrap().len();
    up.store(true, Ordering::SeqCst);
    let mut delivered = None;
    while killed.elapsed() < TAKEN_OVER_WITHIN && delivered.is_none() {
        tokio::time::sleep(Duration::from_millis(25)).await;
        delivered = attempts.lock().unwrap().iter().find(|(_, ok)| *ok).cloned();
    }
    let took = killed.elapsed();
    let (delivered_id, _) = delivered.expect("B delivered the event within the lease and a sweep");
    assert_eq!(delivered_id, webhook_id, "the same webhook-id");
    eprintln!("B delivered A's queued forward {took:?} after A was killed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = attempts.lock().unwrap().clone();
    assert_eq!(
        all.len(),
        tried_by_a + 1,
        "delivered once, after A's refused attempts: {all:?}"
    );
    assert!(all.iter().all(|(id, _)| *id == webhook_id), "{all:?}");
    drop(replicas);
}
