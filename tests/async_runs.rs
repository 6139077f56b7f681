//! Async runs end to end: async Invoke, StreamStatus for every dialect,
//! the callback ingress, forwarding re-signed with Standard Webhooks
//! (verified with the official `standardwebhooks` crate), and VerifyWebhook.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod common;

use std::time::{Duration, SystemTime};

use common::{Harness, deployment, inputs, receiver::receiver, slug, target, workflow_id};
use flowgate::pb;
use flowgate_core::{RunId, SecretString};
use flowgate_emulator::{EmulatorConfig, KnoudsWebhook};
use serde_json::json;
use tonic::Code;

/// A free loopback port for the ingress (bound then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The test gateway with the callback ingress listening on `port` and
/// advertised as its public URL.
async fn start_with_ingress(emulator: EmulatorConfig, port: u16) -> Harness {
    common::start_with(emulator, move |text| {
        text.replace(
            "[webhooks]\n",
            &format!("[webhooks]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n"),
        )
    })
    .await
}

fn async_request(
    target: Option<pb::WorkflowTarget>,
    input: serde_json::Value,
    callback_url: &str,
) -> pb::InvokeRequest {
    pb::InvokeRequest {
        target,
        inputs: inputs(input),
        async_options: Some(pb::AsyncOptions {
            enabled: true,
            callback_url: callback_url.to_owned(),
        }),
        ..Default::default()
    }
}

/// Invokes asynchronously and expects the run to be accepted.
async fn submit(
    h: &mut Harness,
    target: Option<pb::WorkflowTarget>,
    input: serde_json::Value,
    callback_url: &str,
) -> pb::InvokeResponse {
    h.client
        .invoke(async_request(target, input, callback_url))
        .await
        .unwrap()
        .into_inner()
}

/// Every event of a run's status stream, to its end (bounded by a deadline).
async fn stream(h: &mut Harness, run_id: &str) -> Result<Vec<pb::RunStatusEvent>, tonic::Status> {
    let mut request = tonic::Request::new(pb::StreamStatusRequest {
        run_id: run_id.to_owned(),
    });
    request.set_timeout(Duration::from_secs(15));
    let mut events = h.client.stream_status(request).await?.into_inner();
    let mut all = Vec::new();
    while let Some(event) = events.message().await? {
        all.push(event);
    }
    Ok(all)
}

fn statuses(events: &[pb::RunStatusEvent]) -> Vec<pb::RunStatus> {
    events.iter().map(|event| event.status()).collect()
}

fn executions_polled(h: &Harness) -> usize {
    h.emulator
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/knouds/api/executions/"))
        .count()
}

#[tokio::test]
async fn knouds_async_run_streams_running_then_completed() {
    let mut h = common::start().await;
    let response = submit(
        &mut h,
        target("kn", slug("render-video")),
        json!({"prompt": "a fox"}),
        "",
    )
    .await;
    assert_eq!(response.status(), pb::RunStatus::Running);
    let events = stream(&mut h, &response.run_id).await.unwrap();
    assert_eq!(
        statuses(&events),
        vec![pb::RunStatus::Running, pb::RunStatus::Completed]
    );
    let last = events.last().unwrap();
    assert_eq!(last.run_id, response.run_id);
    let output = common::json(last.output.clone());
    assert!(
        output["url"].as_str().unwrap().ends_with(".mp4"),
        "{output}"
    );
}

#[tokio::test]
async fn knouds_failing_async_run_ends_failed_with_a_typed_error() {
    let mut h = common::start().await;
    let response = submit(
        &mut h,
        target("kn", slug("flaky-pipeline")),
        json!({"input": "x"}),
        "",
    )
    .await;
    let events = stream(&mut h, &response.run_id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.status(), pb::RunStatus::Failed);
    assert_eq!(last.error.as_ref().unwrap().code, "EXECUTION_FAILED");
}

#[tokio::test]
async fn aitutor_async_runs_in_the_background_and_streams() {
    let mut h = common::start().await;
    let response = submit(
        &mut h,
        target("tutor", workflow_id("wf_story")),
        json!({"story": "a dragon"}),
        "",
    )
    .await;
    assert_eq!(response.status(), pb::RunStatus::Running);
    assert!(
        common::run_ids()
            .verify(&response.run_id)
            .unwrap()
            .is_local()
    );
    let events = stream(&mut h, &response.run_id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.status(), pb::RunStatus::Completed);
    assert!(
        common::json(last.output.clone())
            .as_str()
            .unwrap()
            .contains("a dragon")
    );

    let failing = submit(
        &mut h,
        target("tutor", workflow_id("wf_broken")),
        json!({}),
        "",
    )
    .await;
    let events = stream(&mut h, &failing.run_id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.status(), pb::RunStatus::Failed);
    assert_eq!(last.error.as_ref().unwrap().code, "workflow_run_failed");
}

#[tokio::test]
async fn aitutor_async_invalid_input_is_refused_before_running() {
    let mut h = common::start().await;
    let status = h
        .client
        .invoke(async_request(
            target("tutor", workflow_id("wf/../x")),
            json!({}),
            "",
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(h.emulator.requests().is_empty());
}

#[tokio::test]
async fn fetchhive_async_without_ingress_passes_the_callback_through_and_polls() {
    let mut h = common::start().await;
    let (url, received) = receiver().await;
    let response = submit(
        &mut h,
        target("fh", deployment("summarize", "default")),
        json!({"topic": "polling"}),
        &url,
    )
    .await;
    assert!(
        response.webhook_secret.starts_with("whsec_"),
        "the caller verifies Fetch Hive's callback"
    );
    let sent = h.emulator.requests()[0].json().unwrap();
    assert_eq!(
        sent["async"]["callback_url"],
        json!(url),
        "passed through as given"
    );
    let events = stream(&mut h, &response.run_id).await.unwrap();
    assert_eq!(events.last().unwrap().status(), pb::RunStatus::Completed);
    assert!(
        h.emulator
            .requests()
            .iter()
            .any(|r| r.path.contains("/workflow_runs/"))
    );

    // The caller's receiver got Fetch Hive's own signed callback; VerifyWebhook
    // checks it with the secret the gateway holds for the run.
    let (headers, body) = received.wait_for(1).await.remove(0);
    let verdict = h
        .client
        .verify_webhook(pb::VerifyWebhookRequest {
            provider: "fh".into(),
            body: body.to_vec(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                .collect(),
            key: Some(pb::verify_webhook_request::Key::RunId(
                response.run_id.clone(),
            )),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(verdict.valid, "{verdict:?}");
    let event = verdict.event.unwrap();
    assert_eq!(event.run_id, response.run_id);
    assert_eq!(event.status(), pb::RunStatus::Completed);
}

#[tokio::test]
async fn fetchhive_failing_async_run_ends_failed_with_a_typed_error() {
    let mut h = common::start().await;
    let (url, _received) = receiver().await;
    let response = submit(
        &mut h,
        target("fh", deployment("failing-flow", "default")),
        json!({}),
        &url,
    )
    .await;
    let events = stream(&mut h, &response.run_id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.status(), pb::RunStatus::Failed);
    let error = last.error.as_ref().unwrap();
    assert_eq!(error.code, "RUN_FAILED");
    assert!(!error.message.is_empty());
}

#[tokio::test]
async fn fetchhive_callbacks_through_the_ingress_are_forwarded_resigned() {
    let port = free_port();
    let mut h = start_with_ingress(EmulatorConfig::default(), port).await;
    assert_eq!(h.server.ingress_addr.unwrap().port(), port);
    let (url, received) = receiver().await;
    let response = submit(
        &mut h,
        target("fh", deployment("summarize", "default")),
        json!({"topic": "ingress"}),
        &url,
    )
    .await;
    assert!(
        response.webhook_secret.is_empty(),
        "the callback is the gateway's business"
    );
    let sent = h.emulator.requests()[0].json().unwrap();
    assert_eq!(
        sent["async"]["callback_url"],
        json!(format!("http://127.0.0.1:{port}/webhooks/fh"))
    );
    let events = stream(&mut h, &response.run_id).await.unwrap();
    assert_eq!(events.last().unwrap().status(), pb::RunStatus::Completed);

    let deliveries = received.wait_for(1).await;
    assert_eq!(deliveries.len(), 1, "delivered once");
    let (headers, body) = &deliveries[0];
    // The official library accepts flowgate's signature.
    standardwebhooks::Webhook::new(common::SIGNING_SECRET)
        .unwrap()
        .verify(body, headers)
        .unwrap();
    let event: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(event["type"], "run.completed");
    assert_eq!(event["data"]["run_id"], json!(response.run_id));
    assert!(
        !String::from_utf8_lossy(body).contains("whsec_"),
        "no secret in the body"
    );

    // VerifyWebhook with the gateway's configured Standard secrets agrees.
    let verdict = h
        .client
        .verify_webhook(pb::VerifyWebhookRequest {
            scheme: pb::WebhookScheme::StandardWebhooks.into(),
            body: body.to_vec(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(verdict.valid);
    assert_eq!(verdict.event.unwrap().run_id, response.run_id);
}

#[tokio::test]
async fn knouds_webhooks_reach_streams_and_forwarding_through_the_ingress() {
    let port = free_port();
    let emulator = EmulatorConfig {
        knouds_webhook: Some(KnoudsWebhook {
            url: format!("http://127.0.0.1:{port}/webhooks/kn"),
            secret: common::KNOUDS_WEBHOOK_SECRET.into(),
        }),
        async_completion_delay: Duration::from_millis(200),
        ..Default::default()
    };
    let mut h = start_with_ingress(emulator, port).await;
    let (url, received) = receiver().await;
    let response = submit(
        &mut h,
        target("kn", slug("render-video")),
        json!({"prompt": "x"}),
        &url,
    )
    .await;
    let events = stream(&mut h, &response.run_id).await.unwrap();
    assert_eq!(events.last().unwrap().status(), pb::RunStatus::Completed);
    let deliveries = received.wait_for(1).await;
    assert_eq!(
        deliveries.len(),
        1,
        "forwarded once, whether the poll or the webhook saw it first"
    );
    standardwebhooks::Webhook::new(common::SIGNING_SECRET)
        .unwrap()
        .verify(&deliveries[0].1, &deliveries[0].0)
        .unwrap();
    let callbacks = h.emulator.callbacks();
    assert!(
        callbacks.iter().any(|c| c.delivered()),
        "the emulator's webhook was accepted: {callbacks:?}"
    );
}

/// POSTs a Knouds-signed delivery to the ingress.
async fn post_knouds(
    port: u16,
    body: &str,
    signed_at: SystemTime,
    secret: &str,
) -> (u16, serde_json::Value) {
    let signature =
        flowgate_webhook::sign_knouds(&SecretString::new(secret), signed_at, body.as_bytes());
    post_raw(port, body, &signature).await
}

async fn post_raw(port: u16, body: &str, signature: &str) -> (u16, serde_json::Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/webhooks/kn"))
        .header("content-type", "application/json")
        .header("x-knouds-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn the_ingress_refuses_tampered_expired_and_replayed_deliveries() {
    let port = free_port();
    let h = start_with_ingress(EmulatorConfig::default(), port).await;
    let body = json!({"event": "execution.completed", "executionId": "exec-77", "requestId": "q", "workflowSlug": "render-video", "status": "completed", "result": {"url": "u"}}).to_string();
    let now = SystemTime::now();
    let secret = common::KNOUDS_WEBHOOK_SECRET;

    let (status, _) = post_knouds(port, &body, now, secret).await;
    assert_eq!(status, 200);
    let (status, answer) = post_knouds(port, &body, now, secret).await;
    assert_eq!((status, answer["reason"].as_str()), (401, Some("replayed")));

    let tampered_signature =
        flowgate_webhook::sign_knouds(&SecretString::new(secret), now, body.as_bytes());
    let tampered = body.replace("\"u\"", "\"evil\"");
    let (status, answer) = post_raw(port, &tampered, &tampered_signature).await;
    assert_eq!((status, answer["reason"].as_str()), (401, Some("mismatch")));

    let stale = now - Duration::from_secs(3600);
    let fresh_body = body.replace("exec-77", "exec-78");
    let (status, answer) = post_knouds(port, &fresh_body, stale, secret).await;
    assert_eq!((status, answer["reason"].as_str()), (401, Some("expired")));

    let (status, answer) = post_knouds(port, &fresh_body, now, "wrong-secret").await;
    assert_eq!((status, answer["reason"].as_str()), (401, Some("mismatch")));

    let (status, answer) = post_raw(port, &fresh_body, "").await;
    assert_eq!(status, 401, "{answer}");

    let huge = "x".repeat(2 * 1024 * 1024);
    let (status, _) = post_raw(port, &huge, "t=1,v1=00").await;
    assert_eq!(status, 413);

    // Only the valid delivery became a run.
    let run = common::sign_run_id(&RunId::new("kn", "exec-77"));
    let mut client = h.client.clone();
    let events = client
        .stream_status(pb::StreamStatusRequest { run_id: run })
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(events.status(), pb::RunStatus::Completed);
}

#[tokio::test]
async fn verify_webhook_names_every_failure() {
    let mut h = common::start().await;
    let secret = "rpc-secret-1";
    let body = json!({"event": "execution.completed", "executionId": "e-5", "status": "completed", "result": 1}).to_string();
    let verify = |body: String, signature: String, secret: &str| pb::VerifyWebhookRequest {
        scheme: pb::WebhookScheme::Knouds.into(),
        body: body.into_bytes(),
        headers: [("X-Knouds-Signature".to_owned(), signature)]
            .into_iter()
            .collect(),
        key: Some(pb::verify_webhook_request::Key::Secret(secret.to_owned())),
        ..Default::default()
    };
    let now = SystemTime::now();
    let signed = |at: SystemTime, body: &str| {
        flowgate_webhook::sign_knouds(&SecretString::new(secret), at, body.as_bytes())
    };
    let cases = [
        (
            verify(body.clone(), signed(now, &body), secret),
            pb::WebhookFailureReason::Unspecified,
            true,
        ),
        (
            verify(body.clone(), signed(now, &body), secret),
            pb::WebhookFailureReason::Replayed,
            false,
        ),
        (
            verify(body.replace("e-5", "e-6"), signed(now, &body), secret),
            pb::WebhookFailureReason::Mismatch,
            false,
        ),
        (
            verify(
                body.clone(),
                signed(now - Duration::from_secs(900), &body),
                secret,
            ),
            pb::WebhookFailureReason::Expired,
            false,
        ),
        (
            verify(body.clone(), "garbage".into(), secret),
            pb::WebhookFailureReason::Malformed,
            false,
        ),
        (
            pb::VerifyWebhookRequest {
                headers: Default::default(),
                ..verify(body.clone(), String::new(), secret)
            },
            pb::WebhookFailureReason::MissingSignature,
            false,
        ),
    ];
    for (request, reason, valid) in cases {
        let verdict = h.client.verify_webhook(request).await.unwrap().into_inner();
        assert_eq!((verdict.valid, verdict.reason()), (valid, reason));
        assert_eq!(verdict.event.is_some(), valid);
    }
    let status = h
        .client
        .verify_webhook(pb::VerifyWebhookRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn unknown_runs_are_not_found() {
    let mut h = common::start().await;
    for run_id in [
        "not-a-run".to_owned(),
        common::sign_run_id(&RunId::local("tutor")),
        common::sign_run_id(&RunId::new("kn", "00000000-0000-4000-8000-000000000000")),
        common::sign_run_id(&RunId::new("nope", "x")),
    ] {
        let status = stream(&mut h, &run_id).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{run_id}");
    }
}

#[tokio::test]
async fn many_subscribers_share_one_upstream_poll() {
    let emulator = EmulatorConfig {
        async_completion_delay: Duration::from_millis(400),
        ..Default::default()
    };
    let mut h = common::start_with(emulator, |text| text).await;
    let response = submit(
        &mut h,
        target("kn", slug("render-video")),
        json!({"prompt": "x"}),
        "",
    )
    .await;
    let mut streams = Vec::new();
    for _ in 0..20 {
        let mut client = h.client.clone();
        let run_id = response.run_id.clone();
        streams.push(tokio::spawn(async move {
            let mut events = client
                .stream_status(pb::StreamStatusRequest { run_id })
                .await
                .unwrap()
                .into_inner();
            let mut last = None;
            while let Some(event) = events.message().await.unwrap() {
                last = Some(event.status());
            }
            last
        }));
    }
    for stream in streams {
        assert_eq!(stream.await.unwrap(), Some(pb::RunStatus::Completed));
    }
    let polls = executions_polled(&h);
    assert!(
        polls < 20,
        "{polls} polls for 20 subscribers: they must share one poller"
    );
}

#[tokio::test]
async fn a_subscriber_that_leaves_stops_the_polling() {
    let emulator = EmulatorConfig {
        async_completion_delay: Duration::from_secs(30),
        ..Default::default()
    };
    let mut h = common::start_with(emulator, |text| text).await;
    let response = submit(
        &mut h,
        target("kn", slug("render-video")),
        json!({"prompt": "x"}),
        "",
    )
    .await;
    let mut events = h
        .client
        .stream_status(pb::StreamStatusRequest {
            run_id: response.run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        events.message().await.unwrap().unwrap().status(),
        pb::RunStatus::Running
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(executions_polled(&h) > 0, "polled while watched");
    drop(events);
    // The poller notices within one interval (≤ 200 ms here).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_leaving = executions_polled(&h);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        executions_polled(&h),
        after_leaving,
        "nobody watches: no more polls"
    );
}

#[tokio::test]
async fn any_replica_can_stream_a_pollable_run() {
    let mut first = common::start().await;
    let response = first
        .client
        .invoke(async_request(
            target("kn", slug("render-video")),
            json!({"prompt": "x"}),
            "",
        ))
        .await
        .unwrap()
        .into_inner();
    // A second gateway that never saw the run, in front of the same upstream
    // and sharing the run id secret.
    let emulator_url = first.emulator.knouds_base_url();
    let mut second = common::start_with_config(EmulatorConfig::default(), |_| {
        format!(
            "[providers.kn]\nkind = \"knouds\"\nbase_url = \"{emulator_url}\"\napi_key_env = \"KN_KEY\"\n[server]\nlisten = \"127.0.0.1:0\"\n[runs]\npoll_initial = \"50ms\"\nid_secret_env = \"FLOWGATE_SIGNING_SECRET\"\n"
        )
    })
    .await;
    let events = stream(&mut second, &response.run_id).await.unwrap();
    assert_eq!(events.last().unwrap().status(), pb::RunStatus::Completed);
}
