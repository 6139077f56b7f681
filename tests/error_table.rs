//! Every documented upstream error of every dialect, and the undocumented
//! shapes, each through real gRPC against the emulator: the gRPC code, the
//! ErrorInfo reason and domain, and the detail a caller acts on. Rows the
//! emulator produces by itself use its seeded keys and workflows; the rest
//! inject the documented body with a fault. Each row gets a fresh gateway so
//! one row's remembered rate window or circuit cannot colour the next.
//!
//! Knouds rows are about the run endpoint: their faults match `/run` only,
//! their inputs satisfy the workflow's schema (which the gateway fetches,
//! for free, before the run), and the request count leaves those schema
//! requests out.

mod common;

use common::{deployment, inputs, slug, target, workflow_id};
use flowgate::pb::{self, workflow_target::Workflow};
use flowgate_emulator::{Dialect, Fault};
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;

/// What a caller must be able to read off the answer.
#[derive(Debug, Clone, Copy)]
enum Detail {
    /// `BadRequest` with a violation whose field starts with this.
    BadRequest(&'static str),
    /// `RetryInfo` and `QuotaFailure`.
    RetryAndQuota,
    /// `QuotaFailure` only.
    Quota,
    /// `PreconditionFailure` of this type.
    Precondition(&'static str),
    /// `ResourceInfo` of this type.
    Resource(&'static str),
    /// `ErrorInfo.metadata[key]`.
    Metadata(&'static str, &'static str),
    /// Nothing beyond ErrorInfo.
    Info,
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    Status(Code, &'static str, Detail),
    /// An OK answer with status FAILED and this error code.
    RunFailed(&'static str),
}

struct Row {
    name: &'static str,
    provider: &'static str,
    workflow: Workflow,
    inputs: serde_json::Value,
    asynchronous: bool,
    fault: Option<Fault>,
    expect: Expect,
    /// Upstream run requests the call makes (schema requests not counted).
    runs: usize,
}

fn row(
    name: &'static str,
    provider: &'static str,
    workflow: Workflow,
    inputs: serde_json::Value,
    expect: Expect,
) -> Row {
    Row {
        name,
        provider,
        workflow,
        inputs,
        asynchronous: false,
        fault: None,
        expect,
        runs: 1,
    }
}

fn faulted(
    name: &'static str,
    provider: &'static str,
    workflow: Workflow,
    fault: Fault,
    expect: Expect,
) -> Row {
    // Knouds checks inputs against the workflow's schema before the run.
    let inputs = match workflow {
        Workflow::Slug(_) => json!({"text": "x"}),
        _ => json!({}),
    };
    Row {
        fault: Some(fault),
        ..row(name, provider, workflow, inputs, expect)
    }
}

fn status(code: Code, reason: &'static str, detail: Detail) -> Expect {
    Expect::Status(code, reason, detail)
}

fn rows() -> Vec<Row> {
    use Code::*;
    use Detail::*;
    let summarize = || deployment("summarize", "default");
    let fh = |status: u16, body: &str| Fault::status(Dialect::FetchHive, status, body);
    let at = |status: u16, body: &str| Fault::status(Dialect::AiTutor, status, body);
    let kn =
        |status: u16, body: &str| Fault::status(Dialect::Knouds, status, body).with_path("/run");
    let text = json!({"text": "x"});
    vec![
        // Fetch Hive
        row(
            "fh 401 invalid key",
            "fh-badkey",
            summarize(),
            json!({"topic": "x"}),
            status(
                Unauthenticated,
                "UPSTREAM_CREDENTIAL_REJECTED",
                Metadata("provider", "fh-badkey"),
            ),
        ),
        row(
            "fh 402 credits",
            "fh-broke",
            summarize(),
            json!({"topic": "x"}),
            status(ResourceExhausted, "insufficient_credits", Quota),
        ),
        row(
            "fh 404 deployment",
            "fh",
            deployment("nope", "default"),
            json!({}),
            status(NotFound, "not_found", Resource("fetchhive.deployment")),
        ),
        row(
            "fh 422 missing input",
            "fh",
            summarize(),
            json!({}),
            status(InvalidArgument, "invalid_request", BadRequest("inputs")),
        ),
        row(
            "fh 422 human in the loop",
            "fh",
            deployment("approval-flow", "default"),
            json!({}),
            status(
                FailedPrecondition,
                "callback_required",
                Precondition("MODE"),
            ),
        ),
        faulted(
            "fh 422 plan limit",
            "fh",
            summarize(),
            fh(
                422,
                r#"{"error":"Plan limit reached","error_code":"plan_limit_reached"}"#,
            ),
            status(
                FailedPrecondition,
                "plan_limit_reached",
                Precondition("PLAN"),
            ),
        ),
        faulted(
            "fh 429 daily cap",
            "fh",
            summarize(),
            fh(
                429,
                r#"{"error":"Daily API rate limit exceeded","error_code":"api_rate_limit_exceeded"}"#,
            ),
            status(ResourceExhausted, "api_rate_limit_exceeded", RetryAndQuota),
        ),
        faulted(
            "fh 429 concurrency cap",
            "fh",
            summarize(),
            fh(
                429,
                r#"{"error":"Concurrent run limit reached. Use async mode.","error_code":"concurrency_limit_exceeded"}"#,
            ),
            status(ResourceExhausted, "concurrency_limit_exceeded", Quota),
        ),
        row(
            "fh 502 model provider",
            "fh",
            deployment("model-outage", "default"),
            json!({}),
            status(Unavailable, "model_provider_error", Info),
        ),
        faulted(
            "fh 500",
            "fh",
            summarize(),
            fh(
                500,
                r#"{"error":"Internal server error","error_code":"internal_server_error"}"#,
            ),
            status(Internal, "internal_server_error", Info),
        ),
        row(
            "fh run failed",
            "fh",
            deployment("failing-flow", "default"),
            json!({}),
            Expect::RunFailed("RUN_FAILED"),
        ),
        // AI Tutor
        row(
            "at 401",
            "tutor-badkey",
            workflow_id("wf_story"),
            json!({"story": "x"}),
            status(Unauthenticated, "UPSTREAM_CREDENTIAL_REJECTED", Info),
        ),
        row(
            "at 402 invalid_billing",
            "tutor-broke",
            workflow_id("wf_story"),
            json!({"story": "x"}),
            status(ResourceExhausted, "invalid_billing", Quota),
        ),
        row(
            "at 404 workflow_not_found",
            "tutor",
            workflow_id("wf_unpublished"),
            json!({}),
            status(NotFound, "workflow_not_found", Resource("aitutor.workflow")),
        ),
        row(
            "at 400 missing_input",
            "tutor",
            workflow_id("wf_story"),
            json!({}),
            status(InvalidArgument, "missing_input", BadRequest("inputs.story")),
        ),
        row(
            "at request_blocked",
            "tutor",
            workflow_id("wf_blocked"),
            json!({"prompt": "x"}),
            status(PermissionDenied, "request_blocked", Info),
        ),
        faulted(
            "at 429",
            "tutor",
            workflow_id("wf_story"),
            at(
                429,
                r#"{"success":false,"error":"Rate limit exceeded","code":"rate_limited"}"#,
            )
            .with_header("Retry-After", "120"),
            status(ResourceExhausted, "rate_limited", RetryAndQuota),
        ),
        row(
            "at 500 workflow_run_failed",
            "tutor",
            workflow_id("wf_broken"),
            json!({}),
            Expect::RunFailed("workflow_run_failed"),
        ),
        faulted(
            "at 500 internal",
            "tutor",
            workflow_id("wf_story"),
            at(
                500,
                r#"{"success":false,"error":"boom","code":"internal_server_error"}"#,
            ),
            status(Internal, "internal_server_error", Info),
        ),
        // Knouds
        // Inputs that break the schema never reach Knouds (tests/schemas.rs);
        // this is Knouds refusing inputs the cached schema accepted.
        faulted(
            "kn 400 INVALID_INPUTS",
            "kn",
            slug("summarize-text"),
            kn(
                400,
                r#"{"error":"Invalid inputs","code":"INVALID_INPUTS","details":[{"field":"text","message":"Too short"}]}"#,
            ),
            status(InvalidArgument, "INVALID_INPUTS", BadRequest("inputs.text")),
        ),
        faulted(
            "kn 400 INVALID_SLUG",
            "kn",
            slug("summarize-text"),
            kn(400, r#"{"error":"Invalid slug","code":"INVALID_SLUG"}"#),
            status(InvalidArgument, "INVALID_SLUG", BadRequest("target.slug")),
        ),
        faulted(
            "kn 400 INVALID_BODY",
            "kn",
            slug("summarize-text"),
            kn(
                400,
                r#"{"error":"Body must be JSON","code":"INVALID_BODY"}"#,
            ),
            status(InvalidArgument, "INVALID_BODY", BadRequest("inputs")),
        ),
        faulted(
            "kn 400 INVALID_CAPABILITY",
            "kn",
            slug("summarize-text"),
            kn(
                400,
                r#"{"error":"Bad capability","code":"INVALID_CAPABILITY"}"#,
            ),
            status(PermissionDenied, "INVALID_CAPABILITY", Info),
        ),
        Row {
            asynchronous: true,
            ..row(
                "kn 400 ASYNC_NOT_SUPPORTED",
                "kn",
                slug("summarize-text"),
                text.clone(),
                status(
                    FailedPrecondition,
                    "ASYNC_NOT_SUPPORTED",
                    Precondition("MODE"),
                ),
            )
        },
        row(
            "kn 401",
            "kn-badkey",
            slug("summarize-text"),
            text.clone(),
            status(Unauthenticated, "UPSTREAM_CREDENTIAL_REJECTED", Info),
        ),
        row(
            "kn 401 LEGACY_KEY_RETIRED",
            "kn-legacy",
            slug("summarize-text"),
            text.clone(),
            status(
                Unauthenticated,
                "UPSTREAM_CREDENTIAL_REJECTED",
                Metadata("upstream_code", "LEGACY_KEY_RETIRED"),
            ),
        ),
        row(
            "kn 402 INSUFFICIENT_CREDITS",
            "kn-broke",
            slug("summarize-text"),
            text.clone(),
            status(ResourceExhausted, "INSUFFICIENT_CREDITS", Quota),
        ),
        row(
            "kn 402 grant_exhausted",
            "kn-trial",
            slug("summarize-text"),
            text.clone(),
            status(FailedPrecondition, "grant_exhausted", Precondition("PLAN")),
        ),
        row(
            "kn 403 CAPABILITY_DENIED",
            "kn-scoped",
            slug("render-video"),
            json!({"prompt": "x"}),
            status(
                PermissionDenied,
                "CAPABILITY_DENIED",
                Metadata("required_capability", "workflow:render-video:run"),
            ),
        ),
        faulted(
            "kn 403 CAPABILITY_ABOVE_CEILING",
            "kn",
            slug("summarize-text"),
            kn(
                403,
                r#"{"error":"Above ceiling","code":"CAPABILITY_ABOVE_CEILING","attempted":"workflow:*:admin"}"#,
            ),
            status(
                PermissionDenied,
                "CAPABILITY_ABOVE_CEILING",
                Metadata("attempted_capability", "workflow:*:admin"),
            ),
        ),
        faulted(
            "kn 403 API_KEY_ACCESS_DENIED",
            "kn",
            slug("summarize-text"),
            kn(
                403,
                r#"{"error":"Key denied","code":"API_KEY_ACCESS_DENIED"}"#,
            ),
            status(PermissionDenied, "API_KEY_ACCESS_DENIED", Info),
        ),
        row(
            "kn 403 MODEL_TIER_REQUIRED",
            "kn-pro",
            slug("premium-model"),
            json!({"prompt": "x"}),
            status(
                FailedPrecondition,
                "MODEL_TIER_REQUIRED",
                Precondition("TIER"),
            ),
        ),
        // The schema endpoint's 404 answers it, before any run.
        Row {
            runs: 0,
            ..row(
                "kn 404 unknown slug",
                "kn",
                slug("no-such-flow"),
                json!({}),
                status(NotFound, "WORKFLOW_NOT_FOUND", Resource("knouds.workflow")),
            )
        },
        faulted(
            "kn 404 MODEL_NOT_FOUND",
            "kn",
            slug("summarize-text"),
            kn(404, r#"{"error":"Model gone","code":"MODEL_NOT_FOUND"}"#),
            status(NotFound, "MODEL_NOT_FOUND", Resource("knouds.model")),
        ),
        faulted(
            "kn 429 RATE_LIMIT_EXCEEDED",
            "kn",
            slug("summarize-text"),
            kn(429, r#"{"error":"Slow down","code":"RATE_LIMIT_EXCEEDED"}"#)
                .with_header("Retry-After", "60"),
            status(ResourceExhausted, "RATE_LIMIT_EXCEEDED", RetryAndQuota),
        ),
        row(
            "kn 500 EXECUTION_FAILED",
            "kn",
            slug("flaky-pipeline"),
            json!({"input": "x"}),
            Expect::RunFailed("EXECUTION_FAILED"),
        ),
        // Undocumented shapes
        faulted(
            "html 502 page",
            "kn",
            slug("summarize-text"),
            kn(502, "<html><body>Bad gateway</body></html>").with_content_type("text/html"),
            status(Unavailable, "UPSTREAM_UNAVAILABLE", Info),
        ),
        faulted(
            "empty 500",
            "kn",
            slug("summarize-text"),
            kn(500, ""),
            status(Internal, "UPSTREAM_PROTOCOL_ERROR", Info),
        ),
        faulted(
            "truncated json 200",
            "kn",
            slug("summarize-text"),
            kn(200, r#"{"success": true, "resu"#),
            status(Internal, "UPSTREAM_PROTOCOL_ERROR", Info),
        ),
        faulted(
            "unknown code 418",
            "kn",
            slug("summarize-text"),
            kn(418, r#"{"error":"teapot","code":"I_AM_A_TEAPOT"}"#),
            status(Internal, "I_AM_A_TEAPOT", Info),
        ),
        faulted(
            "200 with success false",
            "tutor",
            workflow_id("wf_story"),
            at(200, r#"{"success":false}"#),
            status(Internal, "UPSTREAM_PROTOCOL_ERROR", Info),
        ),
    ]
}

#[tokio::test]
async fn every_documented_error_maps_to_its_grpc_answer() {
    let mut failures = Vec::new();
    for row in rows() {
        let mut h = common::start().await;
        if let Some(fault) = row.fault.clone() {
            h.emulator.inject_fault(fault.with_times(1));
        }
        let request = pb::InvokeRequest {
            target: target(row.provider, row.workflow.clone()),
            inputs: inputs(row.inputs.clone()),
            async_options: row.asynchronous.then(|| pb::AsyncOptions {
                enabled: true,
                callback_url: String::new(),
            }),
            ..Default::default()
        };
        let result = h.client.invoke(request).await;
        if let Err(problem) = check(&row, result) {
            failures.push(format!("{}: {problem}", row.name));
        }
        let sent = h
            .emulator
            .requests()
            .iter()
            .filter(|request| !request.path.ends_with("/schema"))
            .count();
        if sent != row.runs {
            failures.push(format!(
                "{}: {sent} upstream run requests, expected exactly {}",
                row.name, row.runs
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn check(
    row: &Row,
    result: Result<tonic::Response<pb::InvokeResponse>, tonic::Status>,
) -> Result<(), String> {
    match (row.expect, result) {
        (Expect::RunFailed(code), Ok(response)) => {
            let response = response.into_inner();
            if response.status() != pb::RunStatus::Failed {
                return Err(format!("status {:?}, expected FAILED", response.status()));
            }
            let got = response.error.map(|e| e.code).unwrap_or_default();
            (got == code)
                .then_some(())
                .ok_or(format!("run error {got}, expected {code}"))
        }
        (Expect::RunFailed(_), Err(status)) => {
            Err(format!("got {:?} {}", status.code(), status.message()))
        }
        (Expect::Status(..), Ok(response)) => {
            Err(format!("got OK {:?}", response.into_inner().status()))
        }
        (Expect::Status(code, reason, detail), Err(status)) => {
            if status.code() != code {
                return Err(format!(
                    "code {:?} ({}), expected {code:?}",
                    status.code(),
                    status.message()
                ));
            }
            let details = status.get_error_details();
            let info = details.error_info().ok_or("no ErrorInfo")?;
            if info.reason != reason {
                return Err(format!("reason {}, expected {reason}", info.reason));
            }
            let domain = match row.provider.split('-').next().unwrap_or_default() {
                "fh" => "fetchhive",
                "tutor" => "aitutor",
                _ => "knouds",
            };
            if info.domain != domain
                || info.metadata.get("provider").map(String::as_str) != Some(row.provider)
            {
                return Err(format!(
                    "ErrorInfo domain/provider {} {:?}",
                    info.domain, info.metadata
                ));
            }
            match detail {
                Detail::BadRequest(prefix) => {
                    let bad = details.bad_request().ok_or("no BadRequest")?;
                    bad.field_violations
                        .iter()
                        .any(|v| v.field.starts_with(prefix))
                        .then_some(())
                        .ok_or(format!("violations {:?}", bad.field_violations))
                }
                Detail::RetryAndQuota => {
                    details
                        .retry_info()
                        .and_then(|r| r.retry_delay)
                        .ok_or("no RetryInfo")?;
                    details
                        .quota_failure()
                        .map(|_| ())
                        .ok_or("no QuotaFailure".into())
                }
                Detail::Quota => details
                    .quota_failure()
                    .map(|_| ())
                    .ok_or("no QuotaFailure".into()),
                Detail::Precondition(kind) => {
                    let failure = details
                        .precondition_failure()
                        .ok_or("no PreconditionFailure")?;
                    (failure.violations[0].r#type == kind)
                        .then_some(())
                        .ok_or(format!("{failure:?}"))
                }
                Detail::Resource(kind) => {
                    let resource = details.resource_info().ok_or("no ResourceInfo")?;
                    (resource.resource_type == kind)
                        .then_some(())
                        .ok_or(format!("{resource:?}"))
                }
                Detail::Metadata(key, value) => (info.metadata.get(key).map(String::as_str)
                    == Some(value))
                .then_some(())
                .ok_or(format!("metadata {:?}", info.metadata)),
                Detail::Info => Ok(()),
            }
        }
    }
}
