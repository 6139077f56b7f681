use super::*;
use crate::HttpClient;
use bytes::Bytes;
use flowgate_core::Provider as _;
use http::{HeaderMap, HeaderValue};
use serde_json::json;

fn provider() -> FetchHive {
    let mut settings = ProviderSettings::new(
        "fh",
        ProviderKind::FetchHive,
        SecretString::new("fhk_test_key"),
    );
    settings.base_url = "http://127.0.0.1:9/v1".into();
    FetchHive::new(settings, HttpClient::new().unwrap())
}

fn deployment(variant: Option<&str>) -> WorkflowRef {
    WorkflowRef::Deployment {
        name: "summarize".into(),
        variant: variant.map(str::to_owned),
    }
}

fn decode(status: u16, body: Value) -> Result<RunOutcome, GatewayError> {
    provider().decode(
        status,
        HeaderMap::new(),
        Bytes::from(body.to_string()),
        &deployment(Some("default")),
    )
}

#[test]
fn request_body_has_the_documented_shape() {
    let mut invocation = Invocation::new(deployment(Some("default")));
    invocation.inputs = json!({"topic": "AI", "companies": [{"name": "Fetch Hive"}]})
        .as_object()
        .unwrap()
        .clone();
    invocation.user = Some("u-1".into());
    invocation.async_delivery = Some(flowgate_core::AsyncDelivery {
        callback_url: Some("https://example.com/cb".into()),
    });
    let body: Value = serde_json::from_slice(
        &provider()
            .invoke_request(&invocation)
            .unwrap()
            .body
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        body,
        json!({
            "deployment": "summarize", "variant": "default",
            "inputs": {"topic": "AI", "companies": [{"name": "Fetch Hive"}]},
            "user": "u-1",
            "async": {"enabled": true, "callback_url": "https://example.com/cb"}
        })
    );
}

#[test]
fn both_success_shapes_decode() {
    let docs = decode(
        200,
        json!({"request_id": "req_1", "run_status": "completed", "output": "{\"a\":1}"}),
    )
    .unwrap();
    assert_eq!(docs.status, Some(RunStatus::Completed));
    assert_eq!(docs.output, Some(json!({"a": 1})));
    assert_eq!(docs.upstream_run_id.as_deref(), Some("req_1"));
    let sdk = decode(
        202,
        json!({"request_id": "req_2", "run_id": 77, "status": "queued"}),
    )
    .unwrap();
    assert_eq!(sdk.status, Some(RunStatus::Queued));
    assert_eq!(sdk.upstream_run_id.as_deref(), Some("77"));
    assert_eq!(sdk.upstream_request_id.as_deref(), Some("req_2"));
}

#[test]
fn async_answer_carries_the_webhook_secret() {
    let outcome = decode(
        200,
        json!({"request_id": "req_3", "run_status": "running", "webhook_secret": "whsec_1"}),
    )
    .unwrap();
    assert_eq!(outcome.status, Some(RunStatus::Running));
    assert_eq!(outcome.webhook_secret.unwrap().expose(), "whsec_1");
}

#[test]
fn failed_run_is_an_outcome_not_an_error() {
    let outcome = decode(
        200,
        json!({"request_id": "r", "run_status": "failed", "error": "step 2 failed"}),
    )
    .unwrap();
    assert_eq!(outcome.status, Some(RunStatus::Failed));
    assert_eq!(outcome.error.unwrap().message, "step 2 failed");
}

#[test]
fn documented_errors_map_to_classes() {
    let cases = [
        (
            401,
            json!({"error": "Invalid API key"}),
            ErrorClass::UpstreamCredentialRejected,
        ),
        (
            402,
            json!({"error": "Insufficient credits"}),
            ErrorClass::QuotaExhausted,
        ),
        (
            404,
            json!({"error": "Deployment not found"}),
            ErrorClass::NotFound,
        ),
        (
            422,
            json!({"error": "Missing required field: deployment or variant"}),
            ErrorClass::InvalidArgument,
        ),
        (
            422,
            json!({"error": "Human in the Loop workflows must use callback delivery"}),
            ErrorClass::FailedPrecondition,
        ),
        (
            429,
            json!({"error": "Daily limit", "error_code": "api_rate_limit_exceeded"}),
            ErrorClass::RateLimited,
        ),
        (
            502,
            json!({"error": "Model provider failed"}),
            ErrorClass::Unavailable,
        ),
        (
            500,
            json!({"error": "boom", "error_code": "internal_server_error"}),
            ErrorClass::UpstreamFailure,
        ),
    ];
    for (status, body, class) in cases {
        let error = decode(status, body.clone()).unwrap_err();
        assert_eq!(error.class, class, "{status} {body}");
        assert_eq!(error.upstream.as_ref().unwrap().http_status, Some(status));
    }
}

#[test]
fn daily_cap_without_headers_waits_until_midnight() {
    let error = decode(429, json!({"error_code": "api_rate_limit_exceeded"})).unwrap_err();
    let wait = error.retry_after.unwrap();
    assert!(wait > Duration::ZERO && wait <= Duration::from_secs(86_400));
}

#[test]
fn the_daily_cap_never_waits_past_midnight_utc() {
    let mut headers = HeaderMap::new();
    headers.insert("retry-after", HeaderValue::from_static("1e300"));
    let error = provider()
        .decode(
            429,
            headers,
            Bytes::from(json!({"error_code": "api_rate_limit_exceeded"}).to_string()),
            &deployment(Some("default")),
        )
        .unwrap_err();
    let wait = error.retry_after.unwrap();
    assert!(wait <= until_midnight_utc(SystemTime::now()), "{wait:?}");
}

#[test]
fn usage_fields_take_numbers_or_numeric_strings_and_never_fail_the_run() {
    let fh = provider();
    let decode = |run: Value| {
        fh.decode_run_status(
            200,
            HeaderMap::new(),
            Bytes::from(json!({ "workflow_run": run }).to_string()),
            "req_1",
        )
        .unwrap()
    };
    let strings = decode(json!({"run_status": "completed", "output_content": "x",
        "total_charge": "0.0021", "duration": "1.5", "total_tokens": "500"}));
    assert_eq!(strings.usage.credits, Some(0.0021));
    assert_eq!(strings.usage.duration, Some(Duration::from_millis(1500)));
    assert_eq!(strings.usage.tokens, Some(500));
    let unreadable = decode(json!({"run_status": "completed", "output_content": "x",
        "total_charge": "lots", "duration": {"s": 1}, "total_tokens": -3}));
    assert_eq!(unreadable.status, Some(RunStatus::Completed));
    assert_eq!(unreadable.usage, flowgate_core::Usage::default());
}

#[test]
fn rejected_key_never_appears() {
    let error = decode(401, json!({"error": "bad key fhk_test_key"})).unwrap_err();
    assert!(!format!("{error:?}").contains("fhk_test_key"));
    assert_eq!(error.reason, "UPSTREAM_CREDENTIAL_REJECTED");
}

#[test]
fn variant_falls_back_to_the_default() {
    let mut settings = ProviderSettings::new("fh", ProviderKind::FetchHive, SecretString::new("k"));
    settings.default_variant = Some("default".into());
    let provider = FetchHive::new(settings, HttpClient::new().unwrap());
    let invocation = Invocation::new(deployment(None));
    assert!(provider.validate(&invocation).is_empty());
    let body: Value =
        serde_json::from_slice(&provider.invoke_request(&invocation).unwrap().body.unwrap())
            .unwrap();
    assert_eq!(body["variant"], "default");
    let strict = self::provider();
    assert_eq!(
        strict.validate(&invocation)[0].field,
        "target.deployment.variant"
    );
}

#[test]
fn workflow_runs_decode() {
    let fh = provider();
    let decode = |body: Value| {
        fh.decode_run_status(
            200,
            HeaderMap::new(),
            Bytes::from(body.to_string()),
            "req_1",
        )
    };
    let running = decode(
        json!({"workflow_run": {"id": "req_1", "run_status": "running", "output_content": null}}),
    )
    .unwrap();
    assert_eq!(running.status, Some(RunStatus::Running));
    assert_eq!(running.output, None);
    let done = decode(json!({"workflow_run": {"id": "req_1", "run_status": "completed", "output_content": "{\"a\":1}", "duration": 1.5, "total_charge": 0.01, "total_tokens": 500}})).unwrap();
    assert_eq!(done.output, Some(json!({"a": 1})));
    assert_eq!(done.usage.tokens, Some(500));
    assert_eq!(done.usage.duration, Some(Duration::from_millis(1500)));
    let failed =
        decode(json!({"workflow_run": {"run_status": "failed", "error_message": "boom"}})).unwrap();
    assert_eq!(failed.error.unwrap().message, "boom");
}
