//! Rate-limit memory, local limits, circuit breaking, safe retries and
//! cancellation, through real gRPC against the emulator's fault knobs.
//! Knouds faults match `/run`: the schema request before a workflow's first
//! run is answered normally.

mod common;

use std::time::Duration;

use common::{Harness, inputs, slug, target};
use flowgate::pb;
use flowgate_emulator::{Dialect, EmulatorConfig, Fault};
use serde_json::json;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// The test config plus one Knouds provider `guarded` with extra sections.
async fn start_guarded(emulator: EmulatorConfig, sections: &str) -> Harness {
    common::start_with_config(emulator, |emulator| {
        format!(
            "{}\n[providers.guarded]\nkind = \"knouds\"\nbase_url = \"{}\"\napi_key_env = \"KN_KEY\"\n{sections}\n",
            common::config_text(emulator),
            emulator.knouds_base_url()
        )
    })
    .await
}

fn summarize(provider: &str) -> pb::InvokeRequest {
    pb::InvokeRequest {
        target: target(provider, slug("summarize-text")),
        inputs: inputs(json!({"text": "resilience"})),
        ..Default::default()
    }
}

fn with_deadline(request: pb::InvokeRequest, deadline: Duration) -> Request<pb::InvokeRequest> {
    let mut request = Request::new(request);
    request.set_timeout(deadline);
    request
}

/// The ErrorInfo reason ("" when absent, which no assertion expects).
fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// Knouds run requests (the free schema requests the gateway makes before
/// a workflow's first run are not what these protections guard).
fn upstream_calls(h: &Harness) -> usize {
    h.emulator
        .requests()
        .iter()
        .filter(|r| r.dialect == Dialect::Knouds && !r.path.ends_with("/schema"))
        .count()
}

const RATE_LIMITED: &str = r#"{"error":"Rate limit exceeded","code":"RATE_LIMIT_EXCEEDED"}"#;

#[tokio::test]
async fn a_429_whose_retry_after_fits_the_deadline_is_retried() {
    let mut h = common::start().await;
    h.emulator.inject_fault(
        Fault::status(Dialect::Knouds, 429, RATE_LIMITED)
            .with_path("/run")
            .with_header("Retry-After", "1")
            .with_times(1),
    );
    let response = h
        .client
        .invoke(with_deadline(summarize("kn"), Duration::from_secs(10)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.status(), pb::RunStatus::Completed);
    assert_eq!(upstream_calls(&h), 2);
}

#[tokio::test]
async fn a_429_storm_does_not_multiply_upstream_traffic() {
    let mut h = common::start().await;
    h.emulator.inject_fault(
        Fault::status(Dialect::Knouds, 429, RATE_LIMITED)
            .with_path("/run")
            .with_header("Retry-After", "30"),
    );
    for call in 0..25 {
        let status = h
            .client
            .invoke(with_deadline(summarize("kn"), Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        let retry = status
            .get_error_details()
            .retry_info()
            .unwrap()
            .retry_delay
            .unwrap();
        assert!(retry > Duration::from_secs(20) && retry <= Duration::from_secs(30));
        let expected = if call == 0 {
            "RATE_LIMIT_EXCEEDED"
        } else {
            "RATE_LIMIT_WINDOW_EXHAUSTED"
        };
        assert_eq!(reason(&status), expected);
    }
    assert_eq!(
        upstream_calls(&h),
        1,
        "one upstream call for 25 gateway calls"
    );
}

#[tokio::test]
async fn a_spent_daily_cap_is_known_before_calling_upstream() {
    // The only call of the day leaves `remaining: 0` until midnight UTC:
    // the gateway answers the next call itself.
    let config = EmulatorConfig {
        fetchhive_daily_limit: 1,
        ..Default::default()
    };
    let mut h = common::start_with(config, |text| text).await;
    let request = || pb::InvokeRequest {
        target: target("fh", common::deployment("summarize", "default")),
        inputs: inputs(json!({"topic": "cap"})),
        ..Default::default()
    };
    let first = h.client.invoke(request()).await.unwrap().into_inner();
    assert_eq!(first.rate_limit.unwrap().remaining, Some(0));
    let remembered = h.client.invoke(request()).await.unwrap_err();
    assert_eq!(remembered.code(), Code::ResourceExhausted);
    assert_eq!(reason(&remembered), "RATE_LIMIT_WINDOW_EXHAUSTED");
    let retry = remembered
        .get_error_details()
        .retry_info()
        .unwrap()
        .retry_delay
        .unwrap();
    assert!(retry <= Duration::from_secs(86_400));
    assert_eq!(
        remembered.metadata().get("x-ratelimit-remaining").unwrap(),
        "0"
    );
    assert_eq!(
        h.emulator.requests().len(),
        1,
        "the second call never left the gateway"
    );
}

#[tokio::test]
async fn the_circuit_opens_fails_fast_and_a_probe_closes_it() {
    let mut h = start_guarded(
        EmulatorConfig::default(),
        "[providers.guarded.circuit_breaker]\nfailure_threshold = 3\nopen_for = \"500ms\"",
    )
    .await;
    h.emulator.inject_fault(
        Fault::status(Dialect::Knouds, 503, r#"{"error":"Service unavailable"}"#).with_path("/run"),
    );
    for _ in 0..3 {
        let status = h.client.invoke(summarize("guarded")).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
    }
    let open = h.client.invoke(summarize("guarded")).await.unwrap_err();
    assert_eq!(open.code(), Code::Unavailable);
    assert_eq!(reason(&open), "CIRCUIT_OPEN");
    assert!(open.get_error_details().retry_info().is_some());
    assert_eq!(
        upstream_calls(&h),
        3,
        "the open circuit spent no upstream call"
    );

    h.emulator.clear_faults();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let probe = h
        .client
        .invoke(summarize("guarded"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe.status(), pb::RunStatus::Completed);
    h.client.invoke(summarize("guarded")).await.unwrap();
    assert_eq!(upstream_calls(&h), 5);
}

#[tokio::test]
async fn a_dropped_connection_is_not_retried_without_an_idempotency_key() {
    let mut h = common::start().await;
    h.emulator.inject_fault(
        Fault::dropped(Dialect::Knouds)
            .with_path("/run")
            .with_times(1),
    );
    let status = h.client.invoke(summarize("kn")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        upstream_calls(&h),
        1,
        "a paid run may have started: no blind retry"
    );
}

#[tokio::test]
async fn an_idempotency_key_makes_the_retry_safe() {
    let mut h = common::start().await;
    h.emulator.inject_fault(
        Fault::dropped(Dialect::Knouds)
            .with_path("/run")
            .with_times(1),
    );
    let mut request = summarize("kn");
    request.idempotency_key = "order-7-summary".into();
    let response = h.client.invoke(request).await.unwrap().into_inner();
    assert_eq!(response.status(), pb::RunStatus::Completed);
    assert_eq!(upstream_calls(&h), 2);
}

#[tokio::test]
async fn local_rate_limit_answers_without_calling_upstream() {
    let mut h = start_guarded(
        EmulatorConfig::default(),
        "[providers.guarded.limits]\nrequests_per_window = 2\nwindow = \"1m\"",
    )
    .await;
    h.client.invoke(summarize("guarded")).await.unwrap();
    h.client.invoke(summarize("guarded")).await.unwrap();
    let status = h.client.invoke(summarize("guarded")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason(&status), "LOCAL_RATE_LIMIT");
    let details = status.get_error_details();
    assert!(details.retry_info().unwrap().retry_delay.unwrap() <= Duration::from_secs(30));
    assert_eq!(
        details.quota_failure().unwrap().violations[0].description,
        "local request rate"
    );
    assert_eq!(upstream_calls(&h), 2);
}

#[tokio::test]
async fn local_concurrency_limit_caps_runs_in_flight() {
    let mut h = start_guarded(
        EmulatorConfig::default(),
        "[providers.guarded.limits]\nmax_concurrent_runs = 1\nconcurrency_wait = \"100ms\"",
    )
    .await;
    h.emulator.inject_fault(
        Fault::delay(Dialect::Knouds, Duration::from_millis(800))
            .with_path("/run")
            .with_times(1),
    );
    let mut first_client = h.client.clone();
    let first = tokio::spawn(async move { first_client.invoke(summarize("guarded")).await });
    for _ in 0..100 {
        if upstream_calls(&h) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = h.client.invoke(summarize("guarded")).await.unwrap_err();
    assert_eq!(second.code(), Code::ResourceExhausted);
    assert_eq!(reason(&second), "LOCAL_CONCURRENCY_LIMIT");
    assert!(first.await.unwrap().is_ok());
    assert_eq!(upstream_calls(&h), 1);
}

#[tokio::test]
async fn a_cancelled_call_cancels_the_upstream_request() {
    let h = common::start().await;
    h.emulator
        .inject_fault(Fault::delay(Dialect::Knouds, Duration::from_secs(10)).with_path("/run"));
    let mut client = h.client.clone();
    let call = tokio::spawn(async move { client.invoke(summarize("kn")).await });
    for _ in 0..200 {
        if upstream_calls(&h) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(upstream_calls(&h), 1);
    call.abort();
    for _ in 0..200 {
        if h.emulator.cancelled_requests() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        h.emulator.cancelled_requests(),
        1,
        "the emulator saw the connection drop"
    );
}
