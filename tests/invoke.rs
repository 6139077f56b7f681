//! Invoke through a real gRPC client against the gateway and the emulator:
//! success, async submission and each error class, per dialect, plus the
//! exact upstream request each dialect receives.

#![expect(clippy::expect_used, reason = "test helpers fail loudly")]

mod common;

use std::time::{Duration, Instant};

use common::{deployment, inputs, json, slug, start, target, workflow_id};
use flowgate::pb;
use flowgate_core::RunId;
use flowgate_emulator::{Dialect, Fault, keys};
use serde_json::json;
use tonic::{Code, Request};
use tonic_types::StatusExt;

fn invoke_request(
    target: Option<pb::WorkflowTarget>,
    input: serde_json::Value,
) -> pb::InvokeRequest {
    pb::InvokeRequest {
        target,
        inputs: inputs(input),
        ..Default::default()
    }
}

/// The BadRequest field violations of a status (empty when it has none).
fn violations(status: &tonic::Status) -> Vec<tonic_types::FieldViolation> {
    status
        .get_error_details()
        .bad_request()
        .map(|bad| bad.field_violations.clone())
        .unwrap_or_default()
}

/// Invokes and expects an error status.
async fn fails(
    h: &mut common::Harness,
    target: Option<pb::WorkflowTarget>,
    input: serde_json::Value,
) -> tonic::Status {
    h.client
        .invoke(invoke_request(target, input))
        .await
        .expect_err("the call fails")
}

/// Invokes and expects a response.
async fn succeeds(
    h: &mut common::Harness,
    target: Option<pb::WorkflowTarget>,
    input: serde_json::Value,
) -> pb::InvokeResponse {
    h.client
        .invoke(invoke_request(target, input))
        .await
        .expect("the call succeeds")
        .into_inner()
}

/// The Knouds run request the emulator received (a schema GET precedes it).
fn knouds_run_request(h: &common::Harness) -> flowgate_emulator::RecordedRequest {
    h.emulator
        .requests()
        .into_iter()
        .find(|sent| sent.path.ends_with("/run"))
        .expect("a run request reached the emulator")
}

fn async_options(callback_url: &str) -> Option<pb::AsyncOptions> {
    Some(pb::AsyncOptions {
        enabled: true,
        callback_url: callback_url.to_owned(),
    })
}

// ---------------------------------------------------------------- Fetch Hive

#[tokio::test]
async fn fetchhive_sync_run_completes_with_output_and_rate_limit() {
    let mut h = start().await;
    let response = h
        .client
        .invoke(invoke_request(
            target("fh", deployment("summarize", "default")),
            json!({"topic": "enterprise AI"}),
        ))
        .await
        .unwrap();
    let metadata = response.metadata().clone();
    let response = response.into_inner();
    assert_eq!(response.status(), pb::RunStatus::Completed);
    assert_eq!(response.provider, "fh");
    let output = json(response.output);
    assert!(
        output.as_str().unwrap().contains("enterprise AI"),
        "{output}"
    );
    assert!(response.upstream_run_id.starts_with("req_"));
    let run_id = common::run_ids().verify(&response.run_id).unwrap();
    assert_eq!(run_id, RunId::new("fh", response.upstream_run_id.clone()));
    let rate_limit = response
        .rate_limit
        .expect("fetch hive sends rate-limit headers");
    assert!(rate_limit.limit.is_some() && rate_limit.remaining.is_some());
    assert_eq!(
        metadata
            .get("x-ratelimit-remaining")
            .unwrap()
            .to_str()
            .unwrap(),
        rate_limit.remaining.unwrap().to_string()
    );
}

#[tokio::test]
async fn fetchhive_upstream_request_is_exactly_the_documented_one() {
    let mut h = start().await;
    let mut request = invoke_request(
        target("fh", deployment("summarize", "concise")),
        json!({"topic": "AI", "depth": 2}),
    );
    request.metadata = [
        (
            "customer_id".to_owned(),
            flowgate::convert::json_to_value(json!("cus_123")),
        ),
        (
            "seats".to_owned(),
            flowgate::convert::json_to_value(json!(5)),
        ),
    ]
    .into_iter()
    .collect();
    request.user = "user-42".into();
    h.client.invoke(request).await.unwrap();
    let sent = h.emulator.requests();
    assert_eq!(sent.len(), 1);
    let sent = &sent[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/fetchhive/v1/workflow/invoke");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {}", keys::FETCHHIVE_KEY).as_str())
    );
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(
        sent.json().unwrap(),
        json!({
            "deployment": "summarize",
            "variant": "concise",
            "inputs": {"topic": "AI", "depth": 2},
            "metadata": {"customer_id": "cus_123", "seats": 5},
            "user": "user-42"
        })
    );
}

#[tokio::test]
async fn fetchhive_json_string_output_is_decoded() {
    let mut h = start().await;
    let response = succeeds(
        &mut h,
        target("fh", deployment("company-extractor", "default")),
        json!({"companies": [{"name": "Fetch Hive"}, {"name": "Knouds"}]}),
    )
    .await;
    let output = json(response.output);
    assert!(output.is_object(), "decoded into an object: {output}");
    assert_eq!(output["count"], json!(2));
    let sent = h.emulator.requests();
    assert_eq!(
        sent[0].json().unwrap()["inputs"]["companies"],
        json!([{"name": "Fetch Hive"}, {"name": "Knouds"}]),
        "arrays stay native arrays"
    );
}

#[tokio::test]
async fn fetchhive_async_returns_running_with_webhook_secret() {
    let mut h = start().await;
    let mut request = invoke_request(
        target("fh", deployment("summarize", "default")),
        json!({"topic": "async"}),
    );
    request.async_options = async_options("https://hooks.example.com/flowgate");
    let response = h.client.invoke(request).await.unwrap().into_inner();
    assert!(
        matches!(
            response.status(),
            pb::RunStatus::Running | pb::RunStatus::Queued
        ),
        "{:?}",
        response.status()
    );
    assert!(response.webhook_secret.starts_with("whsec_"));
    assert!(response.output.is_none());
    let body = h.emulator.requests()[0].json().unwrap();
    assert_eq!(
        body["async"],
        json!({"enabled": true, "callback_url": "https://hooks.example.com/flowgate"})
    );
}

#[tokio::test]
async fn fetchhive_async_without_callback_url_is_rejected_locally() {
    let mut h = start().await;
    let mut request = invoke_request(
        target("fh", deployment("summarize", "default")),
        json!({"topic": "x"}),
    );
    request.async_options = async_options("");
    let status = h.client.invoke(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let violations = violations(&status);
    assert_eq!(violations[0].field, "async_options.callback_url");
    assert!(h.emulator.requests().is_empty(), "nothing sent upstream");
}

#[tokio::test]
async fn fetchhive_human_in_the_loop_needs_callback_delivery() {
    let mut h = start().await;
    let status = fails(
        &mut h,
        target("fh", deployment("approval-flow", "default")),
        json!({}),
    )
    .await;
    assert_eq!(status.code(), Code::FailedPrecondition);
    let details = status.get_error_details();
    let precondition = &details.precondition_failure().unwrap().violations[0];
    assert_eq!(precondition.r#type, "MODE");
    let info = details.error_info().unwrap();
    assert_eq!(info.domain, "fetchhive");
    assert_eq!(info.metadata["provider"], "fh");
    assert_eq!(info.metadata["http_status"], "422");
}

#[tokio::test]
async fn fetchhive_failed_run_is_ok_with_status_failed() {
    let mut h = start().await;
    let response = succeeds(
        &mut h,
        target("fh", deployment("failing-flow", "default")),
        json!({}),
    )
    .await;
    assert_eq!(response.status(), pb::RunStatus::Failed);
    let error = response.error.unwrap();
    assert!(!error.message.is_empty());
}

#[tokio::test]
async fn fetchhive_unknown_deployment_is_not_found_with_resource_info() {
    let mut h = start().await;
    let status = fails(
        &mut h,
        target("fh", deployment("no-such-deployment", "default")),
        json!({}),
    )
    .await;
    assert_eq!(status.code(), Code::NotFound);
    let resource = status.get_error_details().resource_info().cloned().unwrap();
    assert_eq!(resource.resource_type, "fetchhive.deployment");
    assert_eq!(resource.resource_name, "no-such-deployment/default");
    assert_eq!(resource.owner, "fh");
}

#[tokio::test]
async fn fetchhive_credits_exhausted_is_resource_exhausted_with_quota_failure() {
    let mut h = start().await;
    let status = fails(
        &mut h,
        target("fh-broke", deployment("summarize", "default")),
        json!({"topic": "x"}),
    )
    .await;
    assert_eq!(status.code(), Code::ResourceExhausted);
    let details = status.get_error_details();
    assert_eq!(
        details.quota_failure().unwrap().violations[0].description,
        "upstream credits"
    );
    assert_eq!(details.error_info().unwrap().reason, "insufficient_credits");
}

// ------------------------------------------------------------------ AI Tutor

#[tokio::test]
async fn aitutor_run_returns_result_and_citations_with_the_provider_inferred() {
    let mut h = common::start_minimal().await;
    let response = succeeds(
        &mut h,
        target("", workflow_id("wf_research")),
        json!({"topic": "gRPC gateways"}),
    )
    .await;
    assert_eq!(response.status(), pb::RunStatus::Completed);
    assert_eq!(response.provider, "tutor");
    let output = json(response.output);
    assert!(output.is_object(), "JSON result string decoded: {output}");
    assert!(!response.citations.is_empty());
    assert!(response.citations.iter().all(|c| c.starts_with("https://")));
    // A gateway-local run: no upstream id (the run id is signed with this
    // gateway's random secret, so it is not decoded here).
    assert!(response.run_id.starts_with("fgr_") && response.upstream_run_id.is_empty());
}

#[tokio::test]
async fn aitutor_upstream_request_is_the_flat_variables_body() {
    let mut h = start().await;
    h.client
        .invoke(invoke_request(
            target("tutor", workflow_id("wf_story")),
            json!({"story": "a dragon learns Rust"}),
        ))
        .await
        .unwrap();
    let sent = &h.emulator.requests()[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/aitutor/api/v1/run/wf_story");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {}", keys::AITUTOR_KEY).as_str())
    );
    assert_eq!(
        sent.json().unwrap(),
        json!({"story": "a dragon learns Rust"})
    );
}

#[tokio::test]
async fn aitutor_missing_input_names_the_field() {
    let mut h = start().await;
    let status = fails(&mut h, target("tutor", workflow_id("wf_story")), json!({})).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_error_details();
    assert_eq!(
        details.bad_request().unwrap().field_violations[0].field,
        "inputs.story"
    );
    assert_eq!(details.error_info().unwrap().reason, "missing_input");
}

#[tokio::test]
async fn aitutor_unpublished_workflow_is_not_found() {
    let mut h = start().await;
    let status = fails(
        &mut h,
        target("tutor", workflow_id("wf_unpublished")),
        json!({}),
    )
    .await;
    assert_eq!(status.code(), Code::NotFound);
    let details = status.get_error_details();
    assert_eq!(details.error_info().unwrap().reason, "workflow_not_found");
    assert_eq!(
        details.resource_info().unwrap().resource_name,
        "wf_unpublished"
    );
}

// -------------------------------------------------------------------- Knouds

#[tokio::test]
async fn knouds_sync_run_reports_result_cost_and_duration() {
    let mut h = start().await;
    let response = succeeds(
        &mut h,
        target("kn", slug("summarize-text")),
        json!({"text": "flowgate translates gRPC to REST"}),
    )
    .await;
    assert_eq!(response.status(), pb::RunStatus::Completed);
    assert!(json(response.output)["summary"].is_string());
    let usage = response.usage.unwrap();
    assert!(usage.credits.is_some());
    assert!(usage.duration.is_some());
}

#[tokio::test]
async fn knouds_upstream_request_uses_x_api_key_and_inputs_wrapper() {
    let mut h = start().await;
    h.client
        .invoke(invoke_request(
            target("kn", slug("summarize-text")),
            json!({"text": "hello", "max_words": 10}),
        ))
        .await
        .unwrap();
    let schema = &h.emulator.requests()[0];
    assert_eq!(
        (schema.method.as_str(), schema.path.as_str()),
        ("GET", "/knouds/api/workflows/summarize-text/schema")
    );
    assert_eq!(schema.header("x-api-key"), Some(keys::KNOUDS_KEY));
    let sent = &knouds_run_request(&h);
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/knouds/api/workflows/summarize-text/run");
    assert_eq!(sent.query, None);
    assert_eq!(sent.header("x-api-key"), Some(keys::KNOUDS_KEY));
    assert_eq!(sent.header("authorization"), None, "Knouds is not Bearer");
    assert_eq!(
        sent.json().unwrap(),
        json!({"inputs": {"text": "hello", "max_words": 10}})
    );
}

#[tokio::test]
async fn knouds_async_submission_is_running_with_the_execution_id() {
    let mut h = start().await;
    let mut request = invoke_request(
        target("kn", slug("render-video")),
        json!({"prompt": "a fox"}),
    );
    request.async_options = Some(pb::AsyncOptions {
        enabled: true,
        callback_url: String::new(),
    });
    let response = h.client.invoke(request).await.unwrap().into_inner();
    assert_eq!(response.status(), pb::RunStatus::Running);
    assert!(!response.upstream_run_id.is_empty());
    let sent = &knouds_run_request(&h);
    assert_eq!(sent.path, "/knouds/api/workflows/render-video/run");
    assert_eq!(sent.query.as_deref(), Some("async=true"));
}

#[tokio::test]
async fn knouds_async_not_supported_is_failed_precondition() {
    let mut h = start().await;
    let mut request = invoke_request(target("kn", slug("summarize-text")), json!({"text": "x"}));
    request.async_options = async_options("");
    let status = h.client.invoke(request).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let details = status.get_error_details();
    assert_eq!(details.error_info().unwrap().reason, "ASYNC_NOT_SUPPORTED");
    assert_eq!(
        details.precondition_failure().unwrap().violations[0].r#type,
        "MODE"
    );
}

#[tokio::test]
async fn knouds_capability_denied_names_the_required_capability() {
    let mut h = start().await;
    let status = fails(
        &mut h,
        target("kn-scoped", slug("render-video")),
        json!({"prompt": "x"}),
    )
    .await;
    assert_eq!(status.code(), Code::PermissionDenied);
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "CAPABILITY_DENIED");
    assert_eq!(
        info.metadata["required_capability"],
        "workflow:render-video:run"
    );
}

#[tokio::test]
async fn knouds_plan_and_credit_limits_are_told_apart() {
    let mut h = start().await;
    let broke = fails(
        &mut h,
        target("kn-broke", slug("summarize-text")),
        json!({"text": "x"}),
    )
    .await;
    assert_eq!(broke.code(), Code::ResourceExhausted);
    assert!(broke.get_error_details().quota_failure().is_some());

    let trial = fails(
        &mut h,
        target("kn-trial", slug("summarize-text")),
        json!({"text": "x"}),
    )
    .await;
    assert_eq!(trial.code(), Code::FailedPrecondition);
    let details = trial.get_error_details();
    assert_eq!(details.error_info().unwrap().reason, "grant_exhausted");
    assert_eq!(
        details.precondition_failure().unwrap().violations[0].r#type,
        "PLAN"
    );

    let tier = fails(
        &mut h,
        target("kn-pro", slug("premium-model")),
        json!({"prompt": "x"}),
    )
    .await;
    assert_eq!(tier.code(), Code::FailedPrecondition);
    assert_eq!(
        tier.get_error_details()
            .precondition_failure()
            .unwrap()
            .violations[0]
            .r#type,
        "TIER"
    );
}

#[tokio::test]
async fn knouds_invalid_inputs_become_field_violations() {
    let mut h = start().await;
    let status = fails(
        &mut h,
        target("kn", slug("summarize-text")),
        json!({"max_words": "ten"}),
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument);
    let violations = violations(&status);
    assert!(
        violations.iter().all(|v| v.field.starts_with("inputs")),
        "{violations:?}"
    );
    assert!(!violations.is_empty());
}

#[tokio::test]
async fn knouds_failed_execution_is_ok_with_status_failed() {
    let mut h = start().await;
    let response = succeeds(
        &mut h,
        target("kn", slug("flaky-pipeline")),
        json!({"input": "x"}),
    )
    .await;
    assert_eq!(response.status(), pb::RunStatus::Failed);
    assert_eq!(response.error.unwrap().code, "EXECUTION_FAILED");
}

#[tokio::test]
async fn knouds_unknown_slug_is_not_found() {
    let mut h = start().await;
    let status = fails(&mut h, target("kn", slug("does-not-exist")), json!({})).await;
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status
            .get_error_details()
            .resource_info()
            .unwrap()
            .resource_type,
        "knouds.workflow"
    );
}

// ------------------------------------------------------- every dialect, edge

#[tokio::test]
async fn rejected_provider_key_is_a_config_fault_and_never_leaks() {
    let mut h = start().await;
    let status = fails(
        &mut h,
        target("kn-badkey", slug("summarize-text")),
        json!({"text": "x"}),
    )
    .await;
    assert_eq!(status.code(), Code::Unauthenticated);
    let details = status.get_error_details();
    assert_eq!(
        details.error_info().unwrap().reason,
        "UPSTREAM_CREDENTIAL_REJECTED"
    );
    let everything = format!("{status:?} {details:?}");
    assert!(!everything.contains(&h.keys["KN_BAD_KEY"]), "{everything}");
}

#[tokio::test]
async fn upstream_rate_limit_is_resource_exhausted_with_retry_info() {
    let mut h = start().await;
    h.emulator.inject_fault(
        Fault::status(
            Dialect::Knouds,
            429,
            r#"{"error":"Rate limit exceeded","code":"RATE_LIMIT_EXCEEDED"}"#,
        )
        .with_header("Retry-After", "17")
        .with_header("X-RateLimit-Limit", "100")
        .with_header("X-RateLimit-Remaining", "0")
        .with_path("/run")
        .with_times(1),
    );
    // A 5 s deadline: waiting out the 17 s Retry-After cannot help.
    let mut request = Request::new(invoke_request(
        target("kn", slug("summarize-text")),
        json!({"text": "x"}),
    ));
    request.set_timeout(Duration::from_secs(5));
    let status = h.client.invoke(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    let details = status.get_error_details();
    assert_eq!(
        details.retry_info().unwrap().retry_delay,
        Some(Duration::from_secs(17))
    );
    assert!(details.quota_failure().is_some());
    assert_eq!(status.metadata().get("x-ratelimit-remaining").unwrap(), "0");
    assert_eq!(status.metadata().get("x-ratelimit-limit").unwrap(), "100");
}

#[tokio::test]
async fn real_rate_window_exhaustion_is_reported() {
    let config = flowgate_emulator::EmulatorConfig {
        aitutor_per_second_limit: 2,
        ..Default::default()
    };
    let mut h = common::start_with(config, |text| text).await;
    let mut answers = Vec::new();
    for _ in 0..4 {
        // Short deadlines: the window's one-second wait does not fit, so the
        // gateway answers instead of retrying.
        let mut request = Request::new(invoke_request(
            target("tutor", workflow_id("wf_story")),
            json!({"story": "x"}),
        ));
        request.set_timeout(Duration::from_millis(500));
        let answer = match h.client.invoke(request).await {
            Ok(_) => "ok".to_owned(),
            Err(status) => {
                let details = status.get_error_details();
                assert!(details.retry_info().is_some(), "{status:?}");
                details.error_info().unwrap().reason.clone()
            }
        };
        answers.push(answer);
    }
    assert_eq!(
        answers,
        vec!["ok", "ok", "rate_limited", "RATE_LIMIT_WINDOW_EXHAUSTED"]
    );
    assert_eq!(
        h.emulator.requests().len(),
        3,
        "the fourth call was answered locally"
    );
}

#[tokio::test]
async fn invalid_requests_are_rejected_before_any_upstream_call() {
    let mut h = start().await;
    let mut nested = invoke_request(
        target("fh", deployment("summarize", "default")),
        json!({"topic": "x"}),
    );
    nested.metadata = [(
        "plan".to_owned(),
        flowgate::convert::json_to_value(json!({"tier": "pro"})),
    )]
    .into_iter()
    .collect();
    let cases = [
        (invoke_request(None, json!({})), "target"),
        (
            invoke_request(target("kn", slug("Not_A_Slug")), json!({})),
            "target.slug",
        ),
        (
            invoke_request(target("fh", slug("summarize-text")), json!({})),
            "target.slug",
        ),
        (
            invoke_request(target("fh", deployment("summarize", "")), json!({})),
            "target.deployment.variant",
        ),
        (
            invoke_request(target("tutor", workflow_id("wf/../x")), json!({})),
            "target.workflow_id",
        ),
        (nested, "metadata.plan"),
    ];
    for (request, field) in cases {
        let status = h.client.invoke(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        let violations = violations(&status);
        assert_eq!(violations[0].field, field);
    }
    let status = fails(&mut h, target("nope", slug("a")), json!({})).await;
    assert_eq!(status.code(), Code::NotFound);
    assert!(h.emulator.requests().is_empty(), "nothing reached upstream");
}

#[tokio::test]
async fn ambiguous_dialect_requires_a_provider_name() {
    let mut h = start().await;
    let status = fails(
        &mut h,
        target("", slug("summarize-text")),
        json!({"text": "x"}),
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument);
    let violation = violations(&status)[0].clone();
    assert_eq!(violation.field, "target.provider");
}

#[tokio::test]
async fn caller_deadline_bounds_the_upstream_call() {
    let mut h = start().await;
    h.emulator
        .inject_fault(Fault::delay(Dialect::Knouds, Duration::from_secs(10)).with_path("/run"));
    let mut request = Request::new(invoke_request(
        target("kn", slug("summarize-text")),
        json!({"text": "x"}),
    ));
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let status = h.client.invoke(request).await.unwrap_err();
    // The gateway answers DEADLINE_EXCEEDED at the deadline; on a loaded
    // machine the client's own timer (tonic: CANCELLED "Timeout expired")
    // can fire first. Either way nobody waited for the slow upstream.
    assert!(
        status.code() == Code::DeadlineExceeded
            || (status.code() == Code::Cancelled && status.message().contains("Timeout")),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "did not wait for the slow upstream"
    );
    // The upstream request was dropped, not left running.
    for _ in 0..50 {
        if h.emulator.cancelled_requests() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.emulator.cancelled_requests(), 1);
}

#[tokio::test]
async fn unreachable_upstream_is_unavailable() {
    // A port nothing listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut h = common::start_with(Default::default(), |text| {
        format!(
            "{text}\n[providers.gone]\nkind = \"knouds\"\nbase_url = \"http://127.0.0.1:{port}\"\napi_key_env = \"KN_KEY\"\n"
        )
    })
    .await;
    let status = fails(
        &mut h,
        target("gone", slug("summarize-text")),
        json!({"text": "x"}),
    )
    .await;
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.get_error_details().error_info().unwrap().reason,
        "UPSTREAM_UNREACHABLE"
    );
}

#[tokio::test]
async fn undecodable_answers_are_protocol_errors() {
    let mut h = start().await;
    h.emulator.inject_fault(
        Fault::status(Dialect::AiTutor, 200, "<html>maintenance</html>")
            .with_content_type("text/html")
            .with_times(1),
    );
    let status = fails(
        &mut h,
        target("tutor", workflow_id("wf_story")),
        json!({"story": "x"}),
    )
    .await;
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(
        status.get_error_details().error_info().unwrap().reason,
        "UPSTREAM_PROTOCOL_ERROR"
    );
    assert!(
        !status.message().contains("maintenance"),
        "raw bodies stay out of messages"
    );
}

// ---------------------------------------------------------------- telemetry

#[tokio::test]
async fn no_trace_context_is_sent_when_tracing_is_off() {
    // This test binary installs no telemetry: nothing is recorded, so
    // nothing is propagated, even when the caller sent a traceparent.
    let mut h = start().await;
    let mut request = tonic::Request::new(invoke_request(
        target("kn", slug("summarize-text")),
        json!({"text": "untraced"}),
    ));
    request.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    h.client.invoke(request).await.unwrap();
    let requests = h.emulator.requests();
    let sent = requests
        .iter()
        .find(|r| r.path.ends_with("/run"))
        .expect("the run request");
    assert_eq!(sent.header("traceparent"), None);
    assert_eq!(sent.header("tracestate"), None);
}
