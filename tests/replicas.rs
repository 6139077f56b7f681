//! Three real `flowgate serve` processes (A, B, C) sharing one redis-server,
//! in front of one emulator, behave as one gateway, as a user of any of
//! them would notice: a callback landing on A reaches a stream on B; an AI
//! Tutor run started on A streams from C; a 10-per-minute limit admits 10
//! across the three; Fetch Hive `max_concurrent_runs = 1` holds across them;
//! a delivery accepted by A is REPLAYED on B; one idempotency key sent to A
//! and B starts one upstream run; and with Redis stopped each replica gives
//! the documented degraded answers, then recovers by itself once Redis is
//! back on the same port.
//!
//! One trio serves every case (each case has its own providers, so cases
//! do not share limits), in one test, in order; the Redis outage comes last.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant, SystemTime},
};

use common::{
    deployment, inputs,
    process::{GatewayProcess, free_addr, health},
    slug, target, workflow_id,
};
use flowgate::{pb, recorded::REPLAYED_HEADER};
use flowgate_core::SecretString;
use flowgate_emulator::{Dialect, Emulator, EmulatorConfig, Fault};
use flowgate_redis::testing::RedisServer;
use pb::workflow_gateway_client::WorkflowGatewayClient;
use serde_json::json;
use tonic::{Code, Request, Status, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt as _;

/// How long a callback landing on one replica may take to reach a stream
/// on another (the README promises milliseconds; this leaves room for a
/// loaded CI machine).
const CROSS_REPLICA_WITHIN: Duration = Duration::from_secs(2);

/// Every bounded wait of a stream.
const STREAM_DEADLINE: Duration = Duration::from_secs(15);

/// One replica: its process, its callback ingress and a client.
struct Replica {
    process: GatewayProcess,
    ingress: SocketAddr,
    client: WorkflowGatewayClient<Channel>,
}

struct Trio {
    // Dropped in field order: the gateways first, then Redis, then the
    // emulator.
    replicas: Vec<Replica>,
    redis: RedisServer,
    emulator: Emulator,
}

impl Trio {
    fn a(&self) -> WorkflowGatewayClient<Channel> {
        self.replicas[0].client.clone()
    }
    fn b(&self) -> WorkflowGatewayClient<Channel> {
        self.replicas[1].client.clone()
    }
    fn c(&self) -> WorkflowGatewayClient<Channel> {
        self.replicas[2].client.clone()
    }

    /// POST requests of `dialect` the emulator received (run starts:
    /// schema fetches and status polls are GETs).
    fn upstream_posts(&self, dialect: Dialect) -> usize {
        self.emulator
            .requests()
            .iter()
            .filter(|r| r.dialect == dialect && r.method == "POST")
            .count()
    }
}

/// `text` with `from` replaced by `to`, which must occur exactly once (a
/// silent no-op would test another configuration than the one intended).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} in the test config");
    text.replace(from, to)
}

/// The configuration of every replica: the tests' providers plus one per
/// case, run state on `redis`, the callback ingress on `ingress`, and the
/// public ingress URL of replica A (Fetch Hive calls back there, whichever
/// replica started the run). Runs are not polled within the test (30 s),
/// so an update can only come from a callback.
fn replica_config(
    emulator: &Emulator,
    redis: &RedisServer,
    grpc: SocketAddr,
    ingress: SocketAddr,
    public_ingress: SocketAddr,
) -> String {
    let text = common::config_text(emulator);
    let text = replace_once(
        &text,
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{grpc}\"\nadmin_listen = \"127.0.0.1:0\""),
    );
    let text = replace_once(&text, "poll_initial = \"50ms\"", "poll_initial = \"30s\"");
    let text = replace_once(&text, "poll_max = \"200ms\"", "poll_max = \"30s\"");
    let text = replace_once(
        &text,
        "[webhooks]\n",
        &format!("[webhooks]\nlisten = \"{ingress}\"\npublic_url = \"http://{public_ingress}\"\n"),
    );
    format!(
        r#"{text}
        [providers.tutor-limited]
        kind = "aitutor"
        base_url = "{at}"
        api_key_env = "AT_KEY"
        [providers.tutor-limited.limits]
        requests_per_window = 10
        window = "1m"

        [providers.fh-one]
        kind = "fetchhive"
        base_url = "{fh}"
        api_key_env = "FH_KEY"
        [providers.fh-one.limits]
        max_concurrent_runs = 1
        concurrency_wait = "200ms"

        [providers.fh-one-waiting]
        kind = "fetchhive"
        base_url = "{fh}"
        api_key_env = "FH_KEY"
        [providers.fh-one-waiting.limits]
        max_concurrent_runs = 1
        concurrency_wait = "10s"

        [state]
        store = "redis"
        url = "{redis}"
        op_timeout = "300ms"
        "#,
        at = emulator.aitutor_base_url(),
        fh = emulator.fetchhive_base_url(),
        redis = redis.url(),
    )
}

/// Starts Redis, the emulator (async runs finish after a second, time
/// enough for a stream to be open before the callback) and three gateway
/// processes, and waits until all three serve.
async fn start_trio() -> Trio {
    let redis = RedisServer::start().unwrap();
    let emulator = Emulator::start(
        EmulatorConfig {
            async_completion_delay: Duration::from_secs(1),
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let ports: Vec<(SocketAddr, SocketAddr)> = (0..3).map(|_| (free_addr(), free_addr())).collect();
    let public_ingress = ports[0].1;
    let mut processes: Vec<GatewayProcess> = ["A", "B", "C"]
        .iter()
        .zip(&ports)
        .map(|(name, &(grpc, ingress))| {
            let config = replica_config(&emulator, &redis, grpc, ingress, public_ingress);
            GatewayProcess::spawn(name, grpc, &config)
        })
        .collect();
    for process in &mut processes {
        process.ready().await;
    }
    let mut replicas = Vec::new();
    for (process, &(_, ingress)) in processes.into_iter().zip(&ports) {
        let client = process.client().await;
        replicas.push(Replica {
            process,
            ingress,
            client,
        });
    }
    Trio {
        replicas,
        redis,
        emulator,
    }
}

fn story(workflow: &str, text: &str, async_run: bool) -> pb::InvokeRequest {
    pb::InvokeRequest {
        target: target(workflow, workflow_id("wf_story")),
        inputs: inputs(json!({"story": text})),
        async_options: async_run.then(|| pb::AsyncOptions {
            enabled: true,
            callback_url: String::new(),
        }),
        ..Default::default()
    }
}

fn fh_summary(provider: &str, topic: &str, async_run: bool) -> pb::InvokeRequest {
    pb::InvokeRequest {
        target: target(provider, deployment("summarize", "default")),
        inputs: inputs(json!({"topic": topic})),
        async_options: async_run.then(|| pb::AsyncOptions {
            enabled: true,
            callback_url: String::new(),
        }),
        ..Default::default()
    }
}

fn terminal(status: pb::RunStatus) -> bool {
    matches!(
        status,
        pb::RunStatus::Completed | pb::RunStatus::Failed | pb::RunStatus::Cancelled
    )
}

fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// A run's status stream opened on `client`.
async fn open_stream(
    client: &mut WorkflowGatewayClient<Channel>,
    run_id: &str,
) -> Result<tonic::Streaming<pb::RunStatusEvent>, Status> {
    let mut request = Request::new(pb::StreamStatusRequest {
        run_id: run_id.to_owned(),
    });
    request.set_timeout(STREAM_DEADLINE);
    Ok(client.stream_status(request).await?.into_inner())
}

/// Every event of a run's stream on `client`, to its end.
async fn stream(
    client: &mut WorkflowGatewayClient<Channel>,
    run_id: &str,
) -> Result<Vec<pb::RunStatusEvent>, Status> {
    let mut events = open_stream(client, run_id).await?;
    let mut all = Vec::new();
    while let Some(event) = events.message().await? {
        all.push(event);
    }
    Ok(all)
}

/// Waits (bounded) until the emulator received `count` POSTs of `dialect`.
async fn wait_for_posts(trio: &Trio, dialect: Dialect, count: usize) {
    for _ in 0..500 {
        if trio.upstream_posts(dialect) >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the emulator never saw {count} {dialect:?} POSTs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_one_redis_behave_as_one_gateway() {
    let mut trio = start_trio().await;
    a_callback_landing_on_a_reaches_a_stream_on_b(&trio).await;
    an_ai_tutor_run_started_on_a_streams_from_c(&trio).await;
    a_ten_per_minute_limit_admits_ten_across_the_three(&trio).await;
    one_fetch_hive_run_slot_holds_across_replicas(&trio).await;
    a_delivery_accepted_on_a_is_replayed_on_b(&trio).await;
    one_idempotency_key_sent_to_a_and_b_starts_one_run(&trio).await;
    redis_down_is_the_documented_degraded_state_then_recovers(&mut trio).await;
}

/// A Fetch Hive async run started on C: the vendor calls back the public
/// ingress URL, which lands on A; B, following the run, sees it end.
async fn a_callback_landing_on_a_reaches_a_stream_on_b(trio: &Trio) {
    let started = trio
        .c()
        .invoke(fh_summary("fh", "callbacks", true))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !terminal(started.status()),
        "accepted, not finished: {started:?}"
    );
    let mut on_b = open_stream(&mut trio.b(), &started.run_id).await.unwrap();
    let first = on_b.message().await.unwrap().unwrap();
    assert!(
        !terminal(first.status()),
        "B follows the run before the callback: {first:?}"
    );

    // The callback the emulator delivers (after a second) lands on A. The
    // emulator records it once A has answered (A publishes the event
    // first), so B usually has the event before `delivered_at`; the bound
    // is from A's answer to B's event.
    let a_ingress = format!("http://{}/webhooks/fh", trio.replicas[0].ingress);
    let ended = async {
        let last = on_b.message().await.unwrap().unwrap();
        (Instant::now(), last)
    };
    let delivered = async {
        for _ in 0..1000 {
            let callbacks = trio.emulator.callbacks();
            if let Some(callback) = callbacks.iter().find(|c| c.url == a_ingress) {
                assert!(callback.delivered(), "A accepted it: {callback:?}");
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the emulator never called back {a_ingress}");
    };
    let ((ended_at, last), delivered_at) = tokio::join!(ended, delivered);
    assert_eq!(last.status(), pb::RunStatus::Completed, "{last:?}");
    assert_eq!(last.run_id, started.run_id);
    assert!(
        ended_at.saturating_duration_since(delivered_at) < CROSS_REPLICA_WITHIN,
        "B saw the end {:?} after A took the callback",
        ended_at.saturating_duration_since(delivered_at)
    );
    assert!(on_b.message().await.unwrap().is_none(), "the stream ends");
    // Nobody polled: the callback on A is what B saw.
    let polls = trio
        .emulator
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/fetchhive/v1/workflow_runs/"))
        .count();
    assert_eq!(polls, 0, "no status poll reached the vendor");
}

/// AI Tutor has no async mode: A runs the call in the background; C,
/// which never saw the run, streams it live to its end.
async fn an_ai_tutor_run_started_on_a_streams_from_c(trio: &Trio) {
    trio.emulator.inject_fault(
        Fault::delay(Dialect::AiTutor, Duration::from_millis(1500))
            .with_path("/run/wf_story")
            .with_times(1),
    );
    let started = trio
        .a()
        .invoke(story("tutor", "a lighthouse", true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.status(), pb::RunStatus::Running);
    let events = stream(&mut trio.c(), &started.run_id).await.unwrap();
    let statuses: Vec<_> = events.iter().map(|e| e.status()).collect();
    assert_eq!(
        statuses,
        vec![pb::RunStatus::Running, pb::RunStatus::Completed],
        "{events:?}"
    );
    let output = common::json(events.last().unwrap().output.clone());
    assert!(
        output.as_str().unwrap().contains("a lighthouse"),
        "{output}"
    );
}

/// 15 calls at once, five on each replica, to a provider allowing 10 a
/// minute: exactly 10 reach the vendor, 5 are refused by the gateway.
async fn a_ten_per_minute_limit_admits_ten_across_the_three(trio: &Trio) {
    let before = trio.upstream_posts(Dialect::AiTutor);
    let calls = (0..15).map(|call| {
        let mut client = trio.replicas[call % 3].client.clone();
        async move {
            client
                .invoke(story("tutor-limited", &format!("call {call}"), false))
                .await
        }
    });
    let answers = futures::future::join_all(calls).await;
    let mut admitted = 0;
    for answer in answers {
        match answer {
            Ok(response) => {
                assert_eq!(response.into_inner().status(), pb::RunStatus::Completed);
                admitted += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert_eq!(reason(&status), "LOCAL_RATE_LIMIT", "{status:?}");
                let details = status.get_error_details();
                assert!(details.retry_info().is_some(), "{status:?}");
                assert_eq!(
                    details.quota_failure().unwrap().violations[0].description,
                    "local request rate"
                );
            }
        }
    }
    assert_eq!(admitted, 10, "one budget for the three replicas");
    assert_eq!(trio.upstream_posts(Dialect::AiTutor) - before, 10);
}

/// `max_concurrent_runs = 1`: while A's run is in flight, B's call waits
/// `concurrency_wait` (200 ms) and is refused; with a longer wait, C's call
/// waits for A's run to end and then runs.
async fn one_fetch_hive_run_slot_holds_across_replicas(trio: &Trio) {
    let slow = || {
        Fault::delay(Dialect::FetchHive, Duration::from_millis(1500))
            .with_path("/workflow/invoke")
            .with_times(1)
    };

    // Refused on B.
    let before = trio.upstream_posts(Dialect::FetchHive);
    trio.emulator.inject_fault(slow());
    let mut a = trio.a();
    let first = tokio::spawn(async move { a.invoke(fh_summary("fh-one", "first", false)).await });
    wait_for_posts(trio, Dialect::FetchHive, before + 1).await;
    let refused = trio
        .b()
        .invoke(fh_summary("fh-one", "second", false))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason(&refused), "LOCAL_CONCURRENCY_LIMIT", "{refused:?}");
    let first = first.await.unwrap().unwrap().into_inner();
    assert_eq!(first.status(), pb::RunStatus::Completed);
    assert_eq!(trio.upstream_posts(Dialect::FetchHive) - before, 1);
    // The slot came back: B runs now.
    let after = trio
        .b()
        .invoke(fh_summary("fh-one", "third", false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.status(), pb::RunStatus::Completed);

    // Queued on C: it runs once A's run has ended, not beside it (the
    // vendor answers C's call at once; only the slot makes it wait for the
    // rest of A's 1.5 s).
    let before = trio.upstream_posts(Dialect::FetchHive);
    trio.emulator.inject_fault(slow());
    let mut a = trio.a();
    let first =
        tokio::spawn(async move { a.invoke(fh_summary("fh-one-waiting", "first", false)).await });
    wait_for_posts(trio, Dialect::FetchHive, before + 1).await;
    let asked = Instant::now();
    let waited = trio
        .c()
        .invoke(fh_summary("fh-one-waiting", "second", false))
        .await
        .unwrap()
        .into_inner();
    let waited_for = asked.elapsed();
    let first = first.await.unwrap().unwrap().into_inner();
    assert_eq!(first.status(), pb::RunStatus::Completed);
    assert_eq!(waited.status(), pb::RunStatus::Completed);
    assert!(
        waited_for >= Duration::from_secs(1),
        "C's run waited for A's slot: answered after {waited_for:?}"
    );
    assert_eq!(trio.upstream_posts(Dialect::FetchHive) - before, 2);
}

/// POSTs a Knouds-signed delivery to an ingress.
async fn post_knouds(ingress: SocketAddr, body: &str, signature: &str) -> (u16, serde_json::Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .post(format!("http://{ingress}/webhooks/kn"))
        .header("content-type", "application/json")
        .header("x-knouds-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// One Knouds delivery accepted by A's ingress is refused as replayed by
/// B's (and C's); one delivery verified by VerifyWebhook on A is REPLAYED
/// on B.
async fn a_delivery_accepted_on_a_is_replayed_on_b(trio: &Trio) {
    let body = json!({"event": "execution.completed", "executionId": "exec-replicas-1", "requestId": "q", "workflowSlug": "render-video", "status": "completed", "result": {"url": "u"}}).to_string();
    let signature = flowgate_webhook::sign_knouds(
        &SecretString::new(common::KNOUDS_WEBHOOK_SECRET),
        SystemTime::now(),
        body.as_bytes(),
    );
    let (status, answer) = post_knouds(trio.replicas[0].ingress, &body, &signature).await;
    assert_eq!(status, 200, "A accepts it: {answer}");
    for replica in &trio.replicas[1..] {
        let (status, answer) = post_knouds(replica.ingress, &body, &signature).await;
        assert_eq!(
            (status, answer["reason"].as_str()),
            (401, Some("replayed")),
            "{} refuses it again: {answer}",
            replica.process.name
        );
    }

    let secret = "replicas-verify-secret";
    let body = json!({"event": "execution.completed", "executionId": "exec-replicas-2", "status": "completed", "result": 1}).to_string();
    let signature = flowgate_webhook::sign_knouds(
        &SecretString::new(secret),
        SystemTime::now(),
        body.as_bytes(),
    );
    let request = pb::VerifyWebhookRequest {
        scheme: pb::WebhookScheme::Knouds.into(),
        body: body.into_bytes(),
        headers: [("X-Knouds-Signature".to_owned(), signature)]
            .into_iter()
            .collect(),
        key: Some(pb::verify_webhook_request::Key::Secret(secret.to_owned())),
        ..Default::default()
    };
    let first = trio
        .a()
        .verify_webhook(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(first.valid, "{first:?}");
    let again = trio.b().verify_webhook(request).await.unwrap().into_inner();
    assert_eq!(
        (again.valid, again.reason()),
        (false, pb::WebhookFailureReason::Replayed)
    );
}

/// The same key on A and B at the same moment (the vendor answers slowly,
/// so both are in flight together): one Knouds run, one run id; C later
/// replays it.
async fn one_idempotency_key_sent_to_a_and_b_starts_one_run(trio: &Trio) {
    let request = pb::InvokeRequest {
        target: target("kn", slug("summarize-text")),
        inputs: inputs(json!({"text": "replicas"})),
        idempotency_key: "order-replicas-1".into(),
        ..Default::default()
    };
    trio.emulator.inject_fault(
        Fault::delay(Dialect::Knouds, Duration::from_millis(500))
            .with_path("/run")
            .with_times(2),
    );
    let before = trio.upstream_posts(Dialect::Knouds);
    let (mut a, mut b) = (trio.a(), trio.b());
    let (on_a, on_b) = tokio::join!(a.invoke(request.clone()), b.invoke(request.clone()));
    let (on_a, on_b) = (on_a.unwrap(), on_b.unwrap());
    assert_eq!(trio.upstream_posts(Dialect::Knouds) - before, 1, "one run");
    assert!(!on_a.get_ref().run_id.is_empty());
    assert_eq!(on_a.get_ref().run_id, on_b.get_ref().run_id);
    assert_eq!(on_a.get_ref(), on_b.get_ref(), "one answer");
    let replayed = [&on_a, &on_b]
        .iter()
        .filter(|r| r.metadata().get(REPLAYED_HEADER).is_some())
        .count();
    assert_eq!(replayed, 1, "exactly one of them is the replay");

    let later = trio.c().invoke(request).await.unwrap();
    assert_eq!(later.metadata().get(REPLAYED_HEADER).unwrap(), "true");
    assert_eq!(later.get_ref(), on_a.get_ref());
    assert_eq!(trio.upstream_posts(Dialect::Knouds) - before, 1);
}

fn assert_store_unavailable(status: &Status, what: &str) {
    assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
    assert_eq!(
        reason(status),
        "STATE_STORE_UNAVAILABLE",
        "{what}: {status:?}"
    );
    assert!(
        status.get_error_details().retry_info().is_some(),
        "{what}: {status:?}"
    );
}

/// Redis stopped: on every replica a synchronous Invoke works, an async
/// Invoke and a StreamStatus are UNAVAILABLE (STATE_STORE_UNAVAILABLE,
/// RetryInfo) before any upstream call, Health stays SERVING. Redis back
/// (empty) on the same port: every replica starts async runs again and
/// streams the others' runs, without a restart.
async fn redis_down_is_the_documented_degraded_state_then_recovers(trio: &mut Trio) {
    let known = trio
        .a()
        .invoke(story("tutor", "before the outage", true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stream(&mut trio.b(), &known.run_id)
            .await
            .unwrap()
            .last()
            .unwrap()
            .status(),
        pb::RunStatus::Completed
    );

    trio.redis.stop();
    for replica in &trio.replicas {
        let name = &replica.process.name;
        let mut client = replica.client.clone();
        let before = trio.upstream_posts(Dialect::AiTutor);
        let refused = client
            .invoke(story("tutor", "during the outage", true))
            .await
            .unwrap_err();
        assert_store_unavailable(&refused, &format!("async Invoke on {name}"));
        assert_eq!(
            trio.upstream_posts(Dialect::AiTutor),
            before,
            "no upstream call"
        );
        let refused = stream(&mut client, &known.run_id).await.unwrap_err();
        assert_store_unavailable(&refused, &format!("StreamStatus on {name}"));
        let sync = client
            .invoke(story("tutor", "during the outage", false))
            .await
            .unwrap_or_else(|status| panic!("sync Invoke on {name}: {status:?}"))
            .into_inner();
        assert_eq!(sync.status(), pb::RunStatus::Completed);
        assert_eq!(
            health(replica.process.channel().await).await.unwrap(),
            ServingStatus::Serving,
            "{name} stays SERVING"
        );
    }

    trio.redis.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut started = Vec::new();
    for replica in &trio.replicas {
        let mut client = replica.client.clone();
        let run = loop {
            match client
                .invoke(story("tutor", "after the outage", true))
                .await
            {
                Ok(response) => break response.into_inner(),
                Err(status) => {
                    assert_store_unavailable(&status, "async Invoke while recovering");
                    assert!(
                        Instant::now() < deadline,
                        "{} did not recover: {status:?}",
                        replica.process.name
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        started.push(run);
    }
    // Each run streamed from the next replica (A's from B, B's from C, C's
    // from A): every replica reads and subscribes again.
    for (index, run) in started.iter().enumerate() {
        let follower = &trio.replicas[(index + 1) % 3];
        let mut client = follower.client.clone();
        let events = loop {
            match stream(&mut client, &run.run_id).await {
                Ok(events) => break events,
                Err(status) => {
                    assert_store_unavailable(&status, "StreamStatus while recovering");
                    assert!(
                        Instant::now() < deadline,
                        "{} did not recover: {status:?}",
                        follower.process.name
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        assert_eq!(
            events.last().unwrap().status(),
            pb::RunStatus::Completed,
            "{}: {events:?}",
            follower.process.name
        );
    }
}
