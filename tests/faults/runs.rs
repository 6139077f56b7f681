//! Runs that cannot make progress, shared schema fetches, and shutdown.
//!
//! Each case goes through real gRPC against the emulator and asserts the
//! exact code and ErrorInfo reason, and that the gateway still serves.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers outside #[test] fns: a failure there fails the test"
)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use flowgate::pb;
use flowgate_emulator::{Dialect, Emulator, EmulatorConfig, Fault};
use serde_json::json;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_types::StatusExt as _;

use crate::common::{
    self, Harness, inputs,
    process::{GatewayProcess, free_addr},
    slug, target, workflow_id,
};

/// Knouds executions stay RUNNING for the whole test.
fn long_runs() -> EmulatorConfig {
    EmulatorConfig {
        async_completion_delay: Duration::from_secs(600),
        ..EmulatorConfig::default()
    }
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// Starts a Knouds async run (no callback) and returns its run id.
async fn start_long_run(h: &mut Harness) -> String {
    let response = h
        .client
        .invoke(pb::InvokeRequest {
            target: target("kn", slug("render-video")),
            inputs: inputs(json!({"prompt": "a fox"})),
            async_options: Some(pb::AsyncOptions {
                enabled: true,
                callback_url: String::new(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.status(), pb::RunStatus::Running);
    response.run_id
}

/// The first event of a run's stream, then how the stream ended.
async fn first_event_then_end(
    h: &mut Harness,
    run_id: &str,
) -> (
    pb::RunStatusEvent,
    Result<Option<pb::RunStatusEvent>, tonic::Status>,
) {
    let mut request = tonic::Request::new(pb::StreamStatusRequest {
        run_id: run_id.to_owned(),
    });
    request.set_timeout(Duration::from_secs(60));
    let mut events = h.client.stream_status(request).await.unwrap().into_inner();
    let first = events.message().await.unwrap().unwrap();
    (first, events.message().await)
}

/// A synchronous call on another provider still answers.
async fn still_serves(h: &mut Harness) {
    let response = h
        .client
        .invoke(pb::InvokeRequest {
            target: target("tutor", workflow_id("wf_story")),
            inputs: inputs(json!({"story": "a dragon"})),
            ..Default::default()
        })
        .await
        .expect("the gateway still serves")
        .into_inner();
    assert_eq!(response.status(), pb::RunStatus::Completed);
}

#[tokio::test]
async fn a_stream_whose_polls_keep_failing_ends_with_run_poll_gave_up() {
    let mut h = common::start_with(long_runs(), |text| text).await;
    let run_id = start_long_run(&mut h).await;
    h.emulator.inject_fault(
        Fault::status(Dialect::Knouds, 503, r#"{"error":{"code":"unavailable"}}"#)
            .with_path("/api/executions/"),
    );
    let (first, end) = first_event_then_end(&mut h, &run_id).await;
    assert_eq!(first.status(), pb::RunStatus::Running);
    let status = end.expect_err("the stream ends with an error, not a hang");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "RUN_POLL_GAVE_UP");

    // Reopening polls again: once the status endpoint recovers the run is
    // followed as before.
    h.emulator.clear_faults();
    let mut events = h
        .client
        .stream_status(pb::StreamStatusRequest {
            run_id: run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let again = events.message().await.unwrap().unwrap();
    assert_eq!(again.status(), pb::RunStatus::Running);
    drop(events);
    still_serves(&mut h).await;
}

#[tokio::test]
async fn one_short_deadline_does_not_turn_schema_validation_off_for_others() {
    let mut h = common::start().await;
    h.emulator.inject_fault(
        Fault::delay(Dialect::Knouds, Duration::from_millis(600))
            .with_path("/schema")
            .with_times(1),
    );
    let invalid = || pb::InvokeRequest {
        target: target("kn", slug("summarize-text")),
        inputs: inputs(json!({"max_words": "ten"})),
        ..Default::default()
    };
    let runs = |h: &Harness| {
        h.emulator
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/run"))
            .count()
    };
    // Caller A gives up while the schema is being fetched.
    let mut impatient = tonic::Request::new(invalid());
    impatient.set_timeout(Duration::from_millis(100));
    let status = h.client.invoke(impatient).await.unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    let runs_before = runs(&h);

    // Caller B, with a normal deadline, is validated before anything runs.
    let status = h.client.invoke(invalid()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(reason(&status), "INVALID_REQUEST");
    let fields: Vec<_> = status
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert!(fields.contains(&"inputs.text".to_owned()), "{fields:?}");
    assert_eq!(
        runs(&h),
        runs_before,
        "caller B's invalid call was not sent"
    );
    let fetches = h
        .emulator
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/schema"))
        .count();
    assert_eq!(fetches, 1, "one shared fetch served both callers");
    assert_eq!(h.schemas.stats().fetch_failures, 0);
    still_serves(&mut h).await;
}

#[tokio::test]
async fn shutdown_ends_open_streams_with_shutting_down_without_waiting_out_the_grace() {
    let mut h = common::start_with(long_runs(), |text| {
        text.replace(r#"shutdown_grace = "2s""#, r#"shutdown_grace = "60s""#)
    })
    .await;
    let run_id = start_long_run(&mut h).await;
    let mut events = h
        .client
        .stream_status(pb::StreamStatusRequest { run_id })
        .await
        .unwrap()
        .into_inner();
    let first = events.message().await.unwrap().unwrap();
    assert_eq!(first.status(), pb::RunStatus::Running);
    let mut health = HealthClient::new(h.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let serving = watch.message().await.unwrap().unwrap();
    assert_eq!(serving.status, 1, "SERVING");

    let Harness {
        server, emulator, ..
    } = h;
    let shutdown = tokio::spawn(server.shutdown());

    let status = events
        .message()
        .await
        .expect_err("the stream ends with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "SHUTTING_DOWN");

    // Health.Watch: NOT_SERVING, then the stream ends with UNAVAILABLE and
    // reason SHUTTING_DOWN (not a plain end of stream).
    let mut last = None;
    let mut ended = None;
    for _ in 0..4 {
        match watch.message().await {
            Ok(Some(update)) => last = Some(update.status),
            Ok(None) => break,
            Err(status) => {
                ended = Some(status);
                break;
            }
        }
    }
    assert_eq!(last, Some(2), "NOT_SERVING was sent before the end");
    let ended = ended.expect("Health.Watch ends with an error status, not OK");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert_eq!(reason(&ended), "SHUTTING_DOWN");

    // The replica exits without waiting out its 60 s grace: nothing is in
    // flight any more. 5 s is generous for a loaded machine and far below
    // the grace, so holding for much of it fails here.
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown does not wait for the grace")
        .unwrap()
        .unwrap();
    emulator.shutdown().await;
}

/// Every attempt a [`slow_receiver`] got: when, and its `webhook-id`.
type Attempts = Arc<Mutex<Vec<(Instant, String)>>>;

/// A receiver on 127.0.0.1 that turns the first attempt away (503,
/// `Retry-After: 2`) and accepts the next: the delivery is queued behind
/// its backoff for two seconds.
async fn slow_receiver() -> (String, Attempts) {
    use axum::{Router, extract::State, http::HeaderMap, http::StatusCode, routing::post};
    async fn hook(
        State(attempts): State<Attempts>,
        headers: HeaderMap,
    ) -> (StatusCode, [(&'static str, &'static str); 1]) {
        let id = headers
            .get("webhook-id")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut attempts = attempts.lock().unwrap();
        attempts.push((Instant::now(), id));
        if attempts.len() == 1 {
            (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "2")])
        } else {
            (StatusCode::OK, [("retry-after", "0")])
        }
    }
    let attempts = Attempts::default();
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(Arc::clone(&attempts));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, attempts)
}

#[tokio::test]
async fn sigterm_delivers_a_queued_callback_forward_within_the_grace() {
    let emulator = Emulator::start(EmulatorConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // A free port may be taken by a parallel test before the process
    // binds it: another port, then.
    let mut tries = 0;
    let mut gateway = loop {
        let addr = free_addr();
        let config = common::config_text(&emulator)
            .replace(
                r#"listen = "127.0.0.1:0""#,
                &format!(r#"listen = "{addr}""#),
            )
            .replace(r#"shutdown_grace = "2s""#, r#"shutdown_grace = "20s""#);
        let mut gateway = GatewayProcess::spawn("drain", addr, &config);
        tries += 1;
        match gateway.serving_or_exited().await {
            Ok(()) => break gateway,
            Err(exited) if tries < 3 => eprintln!("{exited}"),
            Err(exited) => panic!("{exited}"),
        }
    };
    let (url, attempts) = slow_receiver().await;
    // An AI Tutor async run: the gateway runs it and forwards its end.
    let response = gateway
        .client()
        .await
        .invoke(pb::InvokeRequest {
            target: target("tutor", workflow_id("wf_story")),
            inputs: inputs(json!({"story": "a dragon"})),
            async_options: Some(pb::AsyncOptions {
                enabled: true,
                callback_url: url,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.status(), pb::RunStatus::Running);
    for _ in 0..400 {
        if !attempts.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(attempts.lock().unwrap().len(), 1, "the first attempt came");

    // SIGTERM while the retry waits out its backoff: the replica delivers
    // it before it exits, well within its 20 s grace.
    let signalled = Instant::now();
    let exit = gateway.terminate(Duration::from_secs(15)).await;
    let exit = exit.unwrap_or_else(|| panic!("exited within the grace:\n{}", gateway.output()));
    assert!(exit.success(), "{exit}:\n{}", gateway.output());
    let all = attempts.lock().unwrap().clone();
    assert_eq!(all.len(), 2, "the queued forward was delivered: {all:?}");
    assert!(all[1].0 > signalled, "the delivery came after SIGTERM");
    assert_eq!(all[0].1, all[1].1, "the same webhook-id");
    assert!(all[0].1.starts_with("msg_"), "{all:?}");
    emulator.shutdown().await;
}
