//! Idempotent Invoke through real gRPC against the emulator: one upstream
//! run per key and request, replays identical to the first answer, reused
//! keys refused, async starts shared, and a caller that timed out getting
//! the first run's answer on retry.

mod common;

use std::time::Duration;

use common::{Harness, inputs, slug, target, workflow_id};
use flowgate::{pb, recorded::REPLAYED_HEADER};
use flowgate_emulator::{Dialect, Fault};
use serde_json::json;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;

fn summarize(key: &str, text: &str) -> pb::InvokeRequest {
    pb::InvokeRequest {
        target: target("kn", slug("summarize-text")),
        inputs: inputs(json!({"text": text})),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

fn with_deadline(request: pb::InvokeRequest, deadline: Duration) -> Request<pb::InvokeRequest> {
    let mut request = Request::new(request);
    request.set_timeout(deadline);
    request
}

/// Knouds run starts the emulator received (schema fetches and status
/// polls excluded).
fn run_starts(h: &Harness) -> usize {
    h.emulator
        .requests()
        .iter()
        .filter(|r| r.dialect == Dialect::Knouds && r.method == "POST")
        .count()
}

fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_same_key_twice_runs_once_and_answers_the_same() {
    let mut h = common::start().await;
    let first = h
        .client
        .invoke(summarize("order-1", "hello"))
        .await
        .unwrap();
    assert!(first.metadata().get(REPLAYED_HEADER).is_none());
    let second = h
        .client
        .invoke(summarize("order-1", "hello"))
        .await
        .unwrap();
    assert_eq!(
        second.metadata().get(REPLAYED_HEADER).unwrap(),
        "true",
        "a replay says so"
    );
    assert_eq!(first.get_ref(), second.get_ref(), "identical responses");
    assert_eq!(first.get_ref().status(), pb::RunStatus::Completed);
    assert!(!first.get_ref().run_id.is_empty());
    assert_eq!(run_starts(&h), 1);

    // Another key is another run.
    let third = h
        .client
        .invoke(summarize("order-2", "hello"))
        .await
        .unwrap();
    assert_ne!(third.get_ref().run_id, first.get_ref().run_id);
    assert_eq!(run_starts(&h), 2);
}

#[tokio::test]
async fn concurrent_calls_with_one_key_start_one_run() {
    let h = common::start().await;
    h.emulator.inject_fault(
        Fault::delay(Dialect::Knouds, Duration::from_millis(300))
            .with_path("/run")
            .with_times(5),
    );
    let calls = (0..4).map(|_| {
        let mut client = h.client.clone();
        async move {
            client
                .invoke(summarize("order-concurrent", "hello"))
                .await
                .unwrap()
                .into_inner()
        }
    });
    let answers = futures::future::join_all(calls).await;
    assert_eq!(run_starts(&h), 1);
    for answer in &answers[1..] {
        assert_eq!(answer, &answers[0]);
    }
}

#[tokio::test]
async fn a_reused_key_with_another_request_is_refused() {
    let mut h = common::start().await;
    h.client
        .invoke(summarize("order-3", "hello"))
        .await
        .unwrap();
    let status = h
        .client
        .invoke(summarize("order-3", "something else"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");
    let details = status.get_error_details();
    assert_eq!(
        details.precondition_failure().unwrap().violations[0].r#type,
        "IDEMPOTENCY"
    );
    // Options count too: the same inputs, asynchronously, are another request.
    let mut asynchronous = summarize("order-3", "hello");
    asynchronous.async_options = Some(pb::AsyncOptions {
        enabled: true,
        callback_url: String::new(),
    });
    let status = h.client.invoke(asynchronous).await.unwrap_err();
    assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(run_starts(&h), 1);
}

#[tokio::test]
async fn an_async_start_with_one_key_gives_one_run_id() {
    let h = common::start().await;
    let request = pb::InvokeRequest {
        target: target("kn", slug("render-video")),
        inputs: inputs(json!({"prompt": "a fox"})),
        async_options: Some(pb::AsyncOptions {
            enabled: true,
            callback_url: String::new(),
        }),
        idempotency_key: "video-1".into(),
        ..Default::default()
    };
    let calls = (0..3).map(|_| {
        let mut client = h.client.clone();
        let request = request.clone();
        async move { client.invoke(request).await.unwrap().into_inner() }
    });
    let answers = futures::future::join_all(calls).await;
    let mut client = h.client.clone();
    let later = client.invoke(request).await.unwrap().into_inner();
    assert_eq!(answers[0].status(), pb::RunStatus::Running);
    for answer in answers.iter().chain([&later]) {
        assert_eq!(answer.run_id, answers[0].run_id);
    }
    assert_eq!(run_starts(&h), 1);
}

#[tokio::test]
async fn a_gateway_run_async_start_with_one_key_gives_one_run_id() {
    // AI Tutor has no async mode: the gateway runs the call in the
    // background. A retry must not start a second background call.
    let h = common::start().await;
    let request = pb::InvokeRequest {
        target: target("tutor", workflow_id("wf_story")),
        inputs: inputs(json!({"story": "otters"})),
        async_options: Some(pb::AsyncOptions {
            enabled: true,
            callback_url: String::new(),
        }),
        idempotency_key: "story-1".into(),
        ..Default::default()
    };
    let calls = (0..3).map(|_| {
        let mut client = h.client.clone();
        let request = request.clone();
        async move { client.invoke(request).await.unwrap().into_inner() }
    });
    let answers = futures::future::join_all(calls).await;
    for answer in &answers {
        assert_eq!(answer.run_id, answers[0].run_id);
    }
    // The background call ends (bounded wait), and it was the only one.
    let tutor_runs = || {
        h.emulator
            .requests()
            .iter()
            .filter(|r| r.dialect == Dialect::AiTutor && r.method == "POST")
            .count()
    };
    for _ in 0..100 {
        if tutor_runs() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(tutor_runs(), 1);
}

#[tokio::test]
async fn a_caller_that_timed_out_gets_the_first_runs_answer_on_retry() {
    let mut h = common::start().await;
    h.emulator.inject_fault(
        Fault::delay(Dialect::Knouds, Duration::from_millis(800))
            .with_path("/run")
            .with_times(1),
    );
    let status = h
        .client
        .invoke(with_deadline(
            summarize("order-slow", "hello"),
            Duration::from_millis(300),
        ))
        .await
        .unwrap_err();
    // The gateway answers just before the deadline; on a loaded machine the
    // client's own timer may win and cancel the call instead.
    match status.code() {
        Code::DeadlineExceeded => assert_eq!(reason(&status), "IDEMPOTENT_REQUEST_IN_FLIGHT"),
        code => assert_eq!(code, Code::Cancelled, "{status:?}"),
    }
    // The retry waits for the run the first call started, not a new one.
    let retry = h
        .client
        .invoke(with_deadline(
            summarize("order-slow", "hello"),
            Duration::from_secs(10),
        ))
        .await
        .unwrap();
    assert_eq!(retry.get_ref().status(), pb::RunStatus::Completed);
    assert_eq!(run_starts(&h), 1);
}

#[tokio::test]
async fn a_refusal_that_started_no_run_is_not_recorded() {
    let mut h = common::start().await;
    h.emulator.inject_fault(
        Fault::status(
            Dialect::Knouds,
            429,
            r#"{"error":"Rate limit exceeded","code":"RATE_LIMIT_EXCEEDED"}"#,
        )
        .with_path("/run")
        .with_times(1),
    );
    // No Retry-After: the 429 comes back to the caller.
    let status = h
        .client
        .invoke(summarize("order-429", "hello"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    let retry = h
        .client
        .invoke(summarize("order-429", "hello"))
        .await
        .unwrap();
    assert!(retry.metadata().get(REPLAYED_HEADER).is_none());
    assert_eq!(retry.get_ref().status(), pb::RunStatus::Completed);
    assert_eq!(run_starts(&h), 2);
}

#[tokio::test]
async fn a_failure_that_may_have_started_a_run_is_replayed() {
    let mut h = common::start().await;
    h.emulator
        .inject_fault(Fault::status(Dialect::Knouds, 500, r#"{"error":"boom"}"#).with_path("/run"));
    let status = h
        .client
        .invoke(summarize("order-500", "hello"))
        .await
        .unwrap_err();
    let starts = run_starts(&h);
    assert!(starts >= 1);
    h.emulator.clear_faults();
    let replay = h
        .client
        .invoke(summarize("order-500", "hello"))
        .await
        .unwrap_err();
    assert_eq!(replay.code(), status.code());
    assert_eq!(replay.message(), status.message());
    assert_eq!(replay.details(), status.details());
    assert_eq!(replay.metadata().get(REPLAYED_HEADER).unwrap(), "true");
    assert_eq!(run_starts(&h), starts, "no second run");
}

#[tokio::test]
async fn an_overlong_key_is_invalid() {
    let mut h = common::start().await;
    let status = h
        .client
        .invoke(summarize(&"k".repeat(256), "hello"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_error_details();
    assert_eq!(
        details.bad_request().unwrap().field_violations[0].field,
        "idempotency_key"
    );
    assert_eq!(run_starts(&h), 0);
    h.client
        .invoke(summarize(&"k".repeat(255), "hello"))
        .await
        .unwrap();
}

#[tokio::test]
async fn one_key_sent_to_two_replicas_sharing_redis_starts_one_run() {
    use std::sync::Arc;

    use flowgate::{config::Config, server};
    use flowgate_redis::{
        RedisConfig, RedisConnection, RedisIdempotencyStore, testing::RedisServer,
    };
    use flowgate_state::Idempotency;

    let redis = RedisServer::start().unwrap();
    let h = common::start().await;
    h.emulator.inject_fault(
        Fault::delay(Dialect::Knouds, Duration::from_millis(300))
            .with_path("/run")
            .with_times(5),
    );
    // Two more replicas of the same configuration (same run id secret),
    // both keeping idempotency records on the one Redis.
    let config = Config::parse(&common::config_text(&h.emulator), Vec::new()).unwrap();
    let connection = RedisConnection::open(&RedisConfig::node(redis.url())).unwrap();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let mut app = server::build(&config, |var| h.keys.get(var).cloned()).unwrap();
        app.idempotency = Idempotency::new(Arc::new(RedisIdempotencyStore::new(
            connection.clone(),
            Duration::from_secs(60),
        )));
        replicas.push(server::spawn(app).await.unwrap());
    }
    let calls = replicas.iter().map(|replica| {
        let addr = replica.addr;
        async move {
            let mut client = pb::workflow_gateway_client::WorkflowGatewayClient::connect(format!(
                "http://{addr}"
            ))
            .await
            .unwrap();
            client
                .invoke(summarize("order-replicas", "hello"))
                .await
                .unwrap()
                .into_inner()
        }
    });
    let answers = futures::future::join_all(calls).await;
    assert_eq!(run_starts(&h), 1);
    assert_eq!(answers[0], answers[1]);
    for replica in replicas {
        replica.shutdown().await.unwrap();
    }
}
