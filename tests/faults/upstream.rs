//! A vendor's bytes: absurd numbers, loose number shapes, over-deep output.
//!
//! Each case injects one misbehaving answer through the emulator and asserts
//! the exact gRPC code and ErrorInfo reason (or the readable outcome), then
//! that the gateway still serves a normal Invoke.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::time::Duration;

use flowgate::pb;
use flowgate_emulator::{Dialect, EmulatorConfig, Fault};
use serde_json::{Value, json};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::common::{self, Harness, deployment, inputs, slug, target};

/// The longest wait the gateway believes (Retry-After, window resets).
const CEILING: Duration = Duration::from_secs(24 * 60 * 60);

/// The deepest output nesting the gateway delivers.
const MAX_OUTPUT_DEPTH: usize = 32;

fn summarize(provider: &str) -> pb::InvokeRequest {
    pb::InvokeRequest {
        target: target(provider, slug("summarize-text")),
        inputs: inputs(json!({"text": "a vendor's bytes"})),
        ..Default::default()
    }
}

fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

fn retry_delay(status: &Status) -> Option<Duration> {
    status
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay)
}

/// A Knouds sync run answer with `result` and raw JSON `extra` fields.
fn knouds_success(result: &Value, extra: &str) -> String {
    format!(r#"{{"success": true, "result": {result}{extra}}}"#)
}

/// Invokes `provider` and expects a completed run.
async fn completes(h: &mut Harness, provider: &str) -> pb::InvokeResponse {
    let response = h
        .client
        .invoke(summarize(provider))
        .await
        .unwrap_or_else(|status| panic!("{provider}: {status:?}"))
        .into_inner();
    assert_eq!(response.status(), pb::RunStatus::Completed);
    response
}

/// The gateway still serves a normal Invoke (on `provider`, after the
/// faults are gone).
async fn still_serves(h: &mut Harness, provider: &str) {
    h.emulator.clear_faults();
    completes(h, provider).await;
}

fn nested(levels: usize) -> Value {
    (0..levels).fold(json!("leaf"), |inner, _| json!({ "a": inner }))
}

#[tokio::test]
async fn absurd_retry_after_on_a_success_is_harmless() {
    let mut h = common::start().await;
    for value in ["1e300", "99999999999999999999", "18446744073709551615"] {
        h.emulator.inject_fault(
            Fault::status(Dialect::Knouds, 200, knouds_success(&json!("ok"), ""))
                .with_path("/run")
                .with_header("Retry-After", value)
                .with_times(1),
        );
        let response = completes(&mut h, "kn").await;
        let retry = response
            .rate_limit
            .and_then(|limit| limit.retry_after)
            .map(|wait| Duration::from_secs(wait.seconds.max(0) as u64));
        assert!(
            retry.is_none_or(|wait| wait <= CEILING),
            "{value}: {retry:?}"
        );
    }
    still_serves(&mut h, "kn").await;
}

#[tokio::test]
async fn absurd_retry_after_on_an_outage_is_clamped() {
    let mut h = common::start().await;
    h.emulator.inject_fault(
        Fault::status(Dialect::Knouds, 503, "")
            .with_path("/run")
            .with_header("Retry-After", "1e300")
            .with_times(1),
    );
    let status = h.client.invoke(summarize("kn")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "UPSTREAM_UNAVAILABLE");
    assert!(retry_delay(&status).is_some_and(|wait| wait <= CEILING));
    still_serves(&mut h, "kn").await;
}

#[tokio::test]
async fn a_429_with_a_u64_max_retry_after_is_clamped() {
    let mut h = common::start().await;
    h.emulator.inject_fault(
        Fault::status(
            Dialect::Knouds,
            429,
            r#"{"error":"Rate limit exceeded","code":"RATE_LIMIT_EXCEEDED"}"#,
        )
        .with_path("/run")
        .with_header("Retry-After", "18446744073709551615")
        .with_times(1),
    );
    let status = h.client.invoke(summarize("kn")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "RATE_LIMIT_EXCEEDED");
    let wait = retry_delay(&status).expect("RetryInfo");
    assert!(wait <= CEILING, "{wait:?}");
    // The window is remembered for at most the ceiling; another provider
    // of the same vendor is unaffected.
    let remembered = h.client.invoke(summarize("kn")).await.unwrap_err();
    assert_eq!(reason(&remembered), "RATE_LIMIT_WINDOW_EXHAUSTED");
    assert!(retry_delay(&remembered).is_some_and(|wait| wait <= CEILING));
    still_serves(&mut h, "kn-pro").await;
}

#[tokio::test]
async fn a_far_reset_on_a_429_is_clamped() {
    let mut h = common::start().await;
    h.emulator.inject_fault(
        Fault::status(
            Dialect::Knouds,
            429,
            r#"{"error":"Rate limit exceeded","code":"RATE_LIMIT_EXCEEDED"}"#,
        )
        .with_path("/run")
        .with_header("X-RateLimit-Reset", "99999999999")
        .with_times(1),
    );
    let status = h.client.invoke(summarize("kn")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "RATE_LIMIT_EXCEEDED");
    let wait = retry_delay(&status).expect("RetryInfo");
    assert!(wait <= CEILING, "{wait:?}");
    still_serves(&mut h, "kn-pro").await;
}

#[tokio::test]
async fn remaining_zero_with_an_absurd_reset_blocks_at_most_the_ceiling() {
    let mut h = common::start().await;
    h.emulator.inject_fault(
        Fault::status(Dialect::Knouds, 200, knouds_success(&json!("ok"), ""))
            .with_path("/run")
            .with_header("X-RateLimit-Limit", "100")
            .with_header("X-RateLimit-Remaining", "0")
            .with_header("X-RateLimit-Reset", "9223372036854775807")
            .with_times(1),
    );
    completes(&mut h, "kn").await;
    let status = h.client.invoke(summarize("kn")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "RATE_LIMIT_WINDOW_EXHAUSTED");
    let wait = retry_delay(&status).expect("RetryInfo");
    assert!(wait <= CEILING, "the window outlives the ceiling: {wait:?}");
    still_serves(&mut h, "kn-pro").await;
}

#[tokio::test]
async fn knouds_absurd_ms_is_clamped_usage() {
    let mut h = common::start().await;
    h.emulator.inject_fault(
        Fault::status(
            Dialect::Knouds,
            200,
            knouds_success(&json!({"summary": "ok"}), r#", "cost": 2, "ms": 1e300"#),
        )
        .with_path("/run")
        .with_times(1),
    );
    let response = completes(&mut h, "kn").await;
    let usage = response.usage.expect("usage");
    assert_eq!(usage.credits, Some(2.0));
    let duration = usage.duration.expect("a clamped duration");
    assert!(duration.seconds <= 30 * 24 * 60 * 60, "{duration:?}");
    still_serves(&mut h, "kn").await;
}

#[tokio::test]
async fn knouds_usage_as_numeric_strings_is_read() {
    let mut h = common::start_with(
        EmulatorConfig {
            usage_as_strings: true,
            ..EmulatorConfig::default()
        },
        |text| text,
    )
    .await;
    let response = completes(&mut h, "kn").await;
    let usage = response.usage.expect("cost and ms as strings are usage");
    assert!(
        usage.credits.is_some() && usage.duration.is_some(),
        "{usage:?}"
    );
}

/// Submits a Fetch Hive async run (its callback goes nowhere) and answers
/// its run id.
async fn submit_fetchhive(h: &mut Harness) -> String {
    h.client
        .invoke(pb::InvokeRequest {
            target: target("fh", deployment("summarize", "default")),
            inputs: inputs(json!({"topic": "numbers"})),
            async_options: Some(pb::AsyncOptions {
                enabled: true,
                callback_url: "http://127.0.0.1:9/callback".into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .run_id
}

/// Every event of a run's status stream to its end, bounded on the client
/// side too (a run that never ends fails the test instead of hanging it).
async fn stream_events(
    mut client: pb::workflow_gateway_client::WorkflowGatewayClient<tonic::transport::Channel>,
    run_id: String,
) -> Vec<pb::RunStatusEvent> {
    let collect = async move {
        let mut request = tonic::Request::new(pb::StreamStatusRequest { run_id });
        request.set_timeout(Duration::from_secs(10));
        let mut events = client.stream_status(request).await?.into_inner();
        let mut all = Vec::new();
        while let Some(event) = events.message().await? {
            all.push(event);
        }
        Ok::<_, Status>(all)
    };
    match tokio::time::timeout(Duration::from_secs(15), collect).await {
        Ok(Ok(events)) => events,
        Ok(Err(status)) => panic!("the stream failed: {status:?}"),
        Err(_) => panic!("the run never ended"),
    }
}

/// Submits a Fetch Hive async run and streams it to its end.
async fn fetchhive_run_events(h: &mut Harness) -> Vec<pb::RunStatusEvent> {
    let run_id = submit_fetchhive(h).await;
    stream_events(h.client.clone(), run_id).await
}

#[tokio::test]
async fn fetchhive_total_charge_as_a_decimal_string_completes_with_usage() {
    let mut h = common::start_with(
        EmulatorConfig {
            usage_as_strings: true,
            ..EmulatorConfig::default()
        },
        |text| text,
    )
    .await;
    let events = fetchhive_run_events(&mut h).await;
    let last = events.last().expect("events");
    assert_eq!(last.status(), pb::RunStatus::Completed);
    let usage = last.usage.expect("usage");
    assert!(
        usage.credits.is_some_and(|credits| credits > 0.0),
        "{usage:?}"
    );
    assert!(usage.tokens.is_some_and(|tokens| tokens > 0), "{usage:?}");
    still_serves(&mut h, "kn").await;
}

#[tokio::test]
async fn fetchhive_absurd_run_duration_is_clamped_usage() {
    let mut h = common::start().await;
    h.emulator.inject_fault(
        Fault::status(
            Dialect::FetchHive,
            200,
            json!({"workflow_run": {"id": "x", "run_status": "completed",
                "output_content": "{\"a\":1}", "duration": 1e300,
                "total_charge": "0.0021", "total_tokens": "12"}})
            .to_string(),
        )
        .with_path("/workflow_runs/"),
    );
    let events = fetchhive_run_events(&mut h).await;
    let last = events.last().expect("events");
    assert_eq!(last.status(), pb::RunStatus::Completed);
    let usage = last.usage.expect("usage");
    assert_eq!(usage.credits, Some(0.0021));
    assert_eq!(usage.tokens, Some(12));
    assert!(usage.duration.expect("clamped").seconds <= 30 * 24 * 60 * 60);
    still_serves(&mut h, "kn").await;
}

#[tokio::test]
async fn usage_numbers_beyond_f64_are_dropped_not_fatal() {
    let mut h = common::start().await;
    // More answers than the circuit's threshold (5): had any been a
    // protocol error, the last ones would be CIRCUIT_OPEN.
    for (cost, ms) in [("1e400", "-1e400"), ("-1e400", "1e400")].repeat(4) {
        h.emulator.inject_fault(
            Fault::status(
                Dialect::Knouds,
                200,
                knouds_success(
                    &json!({"summary": "ok"}),
                    &format!(r#", "cost": {cost}, "ms": {ms}, "executionId": {ms}"#),
                ),
            )
            .with_path("/run")
            .with_times(1),
        );
        let response = completes(&mut h, "kn").await;
        assert_eq!(common::json(response.output), json!({"summary": "ok"}));
        let usage = response.usage.unwrap_or_default();
        assert_eq!((usage.credits, usage.duration), (None, None), "{cost} {ms}");
    }
    // A Fetch Hive poll whose usage no f64 holds still completes the run.
    h.emulator.inject_fault(
        Fault::status(
            Dialect::FetchHive,
            200,
            r#"{"workflow_run": {"id": "x", "run_status": "completed",
                "output_content": "{\"a\":1}", "duration": 1e400,
                "total_charge": 1e400, "total_tokens": -1e400}}"#,
        )
        .with_path("/workflow_runs/"),
    );
    let events = fetchhive_run_events(&mut h).await;
    let last = events.last().expect("events");
    assert_eq!(last.status(), pb::RunStatus::Completed);
    assert_eq!(common::json(last.output.clone()), json!({"a": 1}));
    let usage = last.usage.unwrap_or_default();
    assert_eq!((usage.credits, usage.tokens), (None, None), "{usage:?}");
    still_serves(&mut h, "kn").await;
}

#[tokio::test]
async fn failed_polls_do_not_open_the_circuit_for_invokes() {
    let mut h = common::start().await;
    h.emulator.inject_fault(
        Fault::status(
            Dialect::FetchHive,
            500,
            r#"{"error":"boom","error_code":"internal_server_error"}"#,
        )
        .with_path("/workflow_runs/"),
    );
    let run_id = submit_fetchhive(&mut h).await;
    // A subscriber keeps the run polled; every poll fails.
    let mut request = tonic::Request::new(pb::StreamStatusRequest { run_id });
    request.set_timeout(Duration::from_secs(10));
    let mut client = h.client.clone();
    let subscriber = tokio::spawn(async move {
        if let Ok(events) = client.stream_status(request).await {
            let mut events = events.into_inner();
            while let Ok(Some(_)) = events.message().await {}
        }
    });
    // More failed polls than the circuit's threshold (5); bounded wait.
    let polls = |h: &Harness| {
        h.emulator
            .requests()
            .iter()
            .filter(|r| r.path.contains("/workflow_runs/"))
            .count()
    };
    for _ in 0..100 {
        if polls(&h) > 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    subscriber.abort();
    let failed_polls = polls(&h);
    h.emulator.clear_faults();
    let outcome = h
        .client
        .invoke(pb::InvokeRequest {
            target: target("fh", deployment("summarize", "default")),
            inputs: inputs(json!({"topic": "after polls"})),
            ..Default::default()
        })
        .await;
    match outcome {
        Ok(response) => assert_eq!(response.into_inner().status(), pb::RunStatus::Completed),
        Err(status) => panic!("{} {status:?}", reason(&status)),
    }
    assert!(failed_polls > 5, "only {failed_polls} polls: not exercised");
}

#[tokio::test]
async fn over_deep_output_is_a_protocol_error() {
    let mut h = common::start().await;
    for levels in [120, MAX_OUTPUT_DEPTH + 1] {
        h.emulator.inject_fault(
            Fault::status(Dialect::Knouds, 200, knouds_success(&nested(levels), ""))
                .with_path("/run")
                .with_times(1),
        );
        let status = h.client.invoke(summarize("kn")).await.unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{levels}: {status:?}");
        assert_eq!(reason(&status), "UPSTREAM_PROTOCOL_ERROR", "{levels}");
    }
    // The deepest output delivered still decodes in a protobuf client.
    h.emulator.inject_fault(
        Fault::status(
            Dialect::Knouds,
            200,
            knouds_success(&nested(MAX_OUTPUT_DEPTH), ""),
        )
        .with_path("/run")
        .with_times(1),
    );
    let response = completes(&mut h, "kn").await;
    assert_eq!(common::json(response.output), nested(MAX_OUTPUT_DEPTH));
    still_serves(&mut h, "kn").await;
}
