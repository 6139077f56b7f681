//! InvokeStream through a real gRPC client against an in-process gateway
//! and the emulator: AI Tutor text arrives as it is generated (and whole,
//! even when a character is split across upstream chunks), the other
//! dialects answer with the first and final events, errors are typed before
//! and during the stream, the caller's cancellation and deadline reach the
//! upstream connection, and the single-use token never shows.

#![expect(clippy::expect_used, reason = "test helpers fail loudly")]

mod common;

use std::time::Duration;

use common::{captured_logs::CapturedLogs, deployment, inputs, json, slug, target, workflow_id};
use flowgate::{auth::KeyHash, pb};
use flowgate_emulator::{Dialect, EmulatorConfig, Fault};
use pb::invoke_stream_event::Event;
use serde_json::json;
use tonic::{Code, Request, Status, Streaming};
use tonic_types::StatusExt as _;

fn logs() -> &'static CapturedLogs {
    common::captured_logs::global()
}

async fn start() -> common::Harness {
    logs();
    common::start().await
}

fn story(provider: &str, story: &str) -> pb::InvokeRequest {
    pb::InvokeRequest {
        target: target(provider, workflow_id("wf_story")),
        inputs: inputs(json!({ "story": story })),
        ..Default::default()
    }
}

/// Opens a stream (the first event already arrived at the gateway).
async fn open(
    h: &mut common::Harness,
    request: impl tonic::IntoRequest<pb::InvokeRequest>,
) -> Result<tonic::Response<Streaming<pb::InvokeStreamEvent>>, Status> {
    h.client.invoke_stream(request).await
}

async fn next(events: &mut Streaming<pb::InvokeStreamEvent>) -> Result<Option<Event>, Status> {
    Ok(events
        .message()
        .await?
        .map(|event| event.event.expect("an event")))
}

/// Every event until the end (or the error that ended the stream).
async fn rest(events: &mut Streaming<pb::InvokeStreamEvent>) -> (Vec<Event>, Option<Status>) {
    let mut all = Vec::new();
    for _ in 0..10_000 {
        match next(events).await {
            Ok(Some(event)) => all.push(event),
            Ok(None) => return (all, None),
            Err(status) => return (all, Some(status)),
        }
    }
    panic!("the stream did not end");
}

fn deltas(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::OutputDelta(delta) => Some(delta.text.clone()),
            _ => None,
        })
        .collect()
}

fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .expect("ErrorInfo")
        .reason
        .clone()
}

/// Waits (bounded) until the emulator saw `n` dropped streams.
async fn dropped_streams(h: &common::Harness, n: u64) {
    for _ in 0..200 {
        if h.emulator.dropped_streams() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the emulator saw {} dropped streams, not {n}",
        h.emulator.dropped_streams()
    );
}

#[tokio::test]
async fn aitutor_text_arrives_before_the_upstream_finished_and_joins_into_the_unary_output() {
    let mut h = start().await;
    let unary = h
        .client
        .invoke(story("tutor", "a fox met a crow"))
        .await
        .expect("unary invoke")
        .into_inner();
    // The emulator holds each stream's last chunk until released.
    h.emulator.hold_stream_tails(true);
    let response = open(&mut h, story("tutor", "a fox met a crow"))
        .await
        .expect("stream opens");
    assert!(
        response.metadata().get("x-ratelimit-limit").is_some(),
        "rate-limit headers"
    );
    let mut events = response.into_inner();
    let Some(Event::Started(started)) = next(&mut events).await.expect("started") else {
        panic!("the first event is `started`");
    };
    assert_eq!(started.provider, "tutor");
    assert!(started.rate_limit.and_then(|r| r.limit).is_some());
    let Some(Event::OutputDelta(first)) = next(&mut events).await.expect("a delta") else {
        panic!("then deltas");
    };
    // Seen while the upstream still holds its last chunk: not buffered.
    assert!(!first.text.is_empty());
    h.emulator.hold_stream_tails(false);
    let (tail, error) = rest(&mut events).await;
    assert!(error.is_none(), "{error:?}");
    let Some(Event::Completed(completed)) = tail.last() else {
        panic!("the last event is `completed`: {tail:?}");
    };
    assert_eq!(completed.status(), pb::RunStatus::Completed);
    assert_eq!(completed.run_id, started.run_id);
    assert!(completed.output.is_none(), "the deltas carried the output");
    let text = std::iter::once(first.text)
        .chain(deltas(&tail))
        .collect::<String>();
    assert_eq!(serde_json::Value::String(text), json(unary.output));
    // One token per call, then the stream request.
    let paths: Vec<String> = h
        .emulator
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(
        paths.ends_with(&[
            "/aitutor/api/v1/token".into(),
            "/aitutor/api/v1/run/wf_story/stream".into()
        ]),
        "{paths:?}"
    );
}

#[tokio::test]
async fn a_character_split_across_upstream_chunks_arrives_whole() {
    let mut h = start().await;
    let input = "🦀 crabs über 日本";
    let unary = h
        .client
        .invoke(story("tutor", input))
        .await
        .expect("unary")
        .into_inner();
    // One byte per upstream chunk: every multi-byte character is cut.
    h.emulator.set_stream_chunk_bytes(Some(1));
    let mut events = open(&mut h, story("tutor", input))
        .await
        .expect("opens")
        .into_inner();
    let (events, error) = rest(&mut events).await;
    assert!(error.is_none(), "{error:?}");
    let deltas = deltas(&events);
    assert!(deltas.len() > 10, "many small deltas: {deltas:?}");
    assert!(
        deltas
            .iter()
            .all(|d| !d.is_empty() && !d.contains('\u{fffd}'))
    );
    assert_eq!(
        serde_json::Value::String(deltas.concat()),
        json(unary.output)
    );
}

#[tokio::test]
async fn fetchhive_and_knouds_answer_with_the_first_and_final_events() {
    let mut h = start().await;
    let requests = [
        pb::InvokeRequest {
            target: target("fh", deployment("summarize", "default")),
            inputs: inputs(json!({ "topic": "otters" })),
            ..Default::default()
        },
        pb::InvokeRequest {
            target: target("kn", slug("summarize-text")),
            inputs: inputs(json!({ "text": "Otters hold hands while sleeping." })),
            ..Default::default()
        },
    ];
    for request in requests {
        let unary = h
            .client
            .invoke(request.clone())
            .await
            .expect("unary")
            .into_inner();
        let mut events = open(&mut h, request).await.expect("opens").into_inner();
        let (events, error) = rest(&mut events).await;
        assert!(error.is_none(), "{error:?}");
        let [Event::Started(started), Event::Completed(completed)] = &events[..] else {
            panic!("started + completed: {events:?}");
        };
        assert_eq!(started.run_id, completed.run_id);
        assert_eq!(started.provider, unary.provider);
        assert_eq!(completed.status(), pb::RunStatus::Completed);
        assert_eq!(json(completed.output.clone()), json(unary.output));
    }
}

#[tokio::test]
async fn async_options_are_invalid_and_nothing_is_sent() {
    let mut h = start().await;
    let mut request = story("tutor", "x");
    request.async_options = Some(pb::AsyncOptions {
        enabled: true,
        callback_url: String::new(),
    });
    let status = open(&mut h, request).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let violations = status
        .get_error_details()
        .bad_request()
        .expect("BadRequest")
        .field_violations
        .clone();
    assert_eq!(violations[0].field, "async_options.enabled");
    assert!(h.emulator.requests().is_empty());
}

#[tokio::test]
async fn a_cancelled_call_drops_the_upstream_stream() {
    let mut h = start().await;
    h.emulator.hold_stream_tails(true);
    let mut events = open(&mut h, story("tutor", "a long tale"))
        .await
        .expect("opens")
        .into_inner();
    assert!(matches!(
        next(&mut events).await,
        Ok(Some(Event::Started(_)))
    ));
    assert!(matches!(
        next(&mut events).await,
        Ok(Some(Event::OutputDelta(_)))
    ));
    drop(events);
    dropped_streams(&h, 1).await;
    h.emulator.hold_stream_tails(false);
}

#[tokio::test]
async fn the_callers_deadline_ends_the_stream_and_the_upstream_read() {
    let mut h = start().await;
    h.emulator.hold_stream_tails(true);
    let mut request = Request::new(story("tutor", "a long tale"));
    request.set_timeout(Duration::from_millis(500));
    let mut events = open(&mut h, request).await.expect("opens").into_inner();
    let (events, error) = rest(&mut events).await;
    assert!(!deltas(&events).is_empty(), "output before the deadline");
    let status = error.expect("the stream ends with an error");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(reason(&status), "DEADLINE_EXCEEDED");
    dropped_streams(&h, 1).await;
    h.emulator.hold_stream_tails(false);
}

#[tokio::test]
async fn a_vendor_failure_mid_stream_ends_it_with_a_typed_status_and_no_retry() {
    let mut h = start().await;
    h.emulator.fail_streams_after(Some(3));
    let mut events = open(&mut h, story("tutor", "a tale cut short"))
        .await
        .expect("opens")
        .into_inner();
    let (events, error) = rest(&mut events).await;
    // The emulator cut the connection after three chunks.
    let sent = deltas(&events);
    assert!((1..=3).contains(&sent.len()), "{events:?}");
    assert!("Once upon a time, a tale cut short.".starts_with(&sent.concat()));
    let status = error.expect("the stream ends with an error");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(reason(&status), "UPSTREAM_PROTOCOL_ERROR");
    let streams = h
        .emulator
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/stream"))
        .count();
    assert_eq!(streams, 1, "output was sent: never retried");
}

#[tokio::test]
async fn token_endpoint_failures_map_through_the_error_table_before_any_event() {
    let mut h = start().await;
    let status = open(&mut h, story("tutor-badkey", "x"))
        .await
        .expect_err("401");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(reason(&status), "UPSTREAM_CREDENTIAL_REJECTED");
    h.emulator.inject_fault(
        Fault::status(
            Dialect::AiTutor,
            429,
            r#"{"success":false,"error":"Rate limit exceeded","code":"rate_limited"}"#,
        )
        .with_path("/token")
        .with_header("retry-after", "30")
        .with_times(1),
    );
    let status = open(&mut h, story("tutor", "x")).await.expect_err("429");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.get_error_details().retry_info().is_some());
    assert!(
        !h.emulator
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/stream")),
        "no stream request"
    );
}

#[tokio::test]
async fn the_token_never_appears_in_logs_or_errors() {
    let mut h = start().await;
    let mut events = open(&mut h, story("tutor", "secret tale"))
        .await
        .expect("opens")
        .into_inner();
    let (_, error) = rest(&mut events).await;
    assert!(error.is_none());
    // A failing stream request (its error decoded and logged).
    h.emulator.inject_fault(
        Fault::status(Dialect::AiTutor, 500, r#"{"success":false,"error":"boom"}"#)
            .with_path("/stream")
            .with_times(1),
    );
    let status = open(&mut h, story("tutor", "secret tale"))
        .await
        .expect_err("500");
    let tokens: Vec<String> = h
        .emulator
        .requests()
        .iter()
        .filter_map(|r| r.query.clone())
        .filter_map(|query| query.strip_prefix("token=").map(str::to_owned))
        .collect();
    assert_eq!(tokens.len(), 2, "two stream requests with tokens");
    let logged = logs().text();
    assert!(
        logged.contains("/aitutor/api/v1/run/wf_story/stream"),
        "the path is logged"
    );
    for token in tokens {
        assert!(token.starts_with("pub_tok_"));
        assert!(!logged.contains(&token), "the token in the logs");
        assert!(
            !format!("{status:?}").contains(&token),
            "the token in an error"
        );
    }
    assert!(!logged.contains("token="), "no query string in the logs");
}

#[tokio::test]
async fn a_caller_without_the_capability_is_denied_before_any_upstream_call() {
    const KEY: &str = "fgk_stream_key_0123456789abcdefghijklmnopqrstu";
    logs();
    let callers = format!(
        "\n[callers.ci]\nkey_hashes = [\"{}\"]\ncapabilities = [\"invoke:kn/*\"]\n",
        KeyHash::of(KEY.as_bytes()).to_config()
    );
    let mut h = common::start_with(EmulatorConfig::default(), move |text| text + &callers).await;
    let mut request = Request::new(story("tutor", "x"));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {KEY}").parse().expect("header"),
    );
    let status = open(&mut h, request).await.expect_err("denied");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "CALLER_CAPABILITY_DENIED");
    assert_eq!(
        info.metadata["required_capability"],
        "invoke:tutor/wf_story"
    );
    assert!(h.emulator.requests().is_empty());
}

#[tokio::test]
async fn the_callers_quota_balance_is_in_the_stream_headers_and_refusals_come_first() {
    const KEY: &str = "fgk_stream_quota_0123456789abcdefghijklmnopqrs";
    logs();
    let callers = format!(
        "\n[callers.ci]\nkey_hashes = [\"{}\"]\ncapabilities = [\"invoke:*/*\"]\n\
         [callers.ci.quota]\nrequests_per_window = 1\nwindow = \"24h\"\n",
        KeyHash::of(KEY.as_bytes()).to_config()
    );
    let mut h = common::start_with(EmulatorConfig::default(), move |text| text + &callers).await;
    let as_ci = || {
        let mut request = Request::new(story("tutor", "x"));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {KEY}").parse().expect("header"),
        );
        request
    };
    let response = open(&mut h, as_ci()).await.expect("within the quota");
    let remaining = response
        .metadata()
        .get(flowgate::auth::quota::REQUESTS_REMAINING);
    assert_eq!(remaining.and_then(|v| v.to_str().ok()), Some("0"));
    let (_, error) = rest(&mut response.into_inner()).await;
    assert!(error.is_none(), "{error:?}");
    let upstream = h.emulator.requests().len();
    let status = open(&mut h, as_ci()).await.expect_err("over the quota");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "CALLER_QUOTA_EXCEEDED");
    assert_eq!(
        h.emulator.requests().len(),
        upstream,
        "nothing sent upstream"
    );
}
