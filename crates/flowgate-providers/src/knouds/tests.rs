use super::*;
use crate::HttpClient;
use bytes::Bytes;
use flowgate_core::SecretString;
use flowgate_core::ValueType;
use http::HeaderMap;
use serde_json::json;

fn knouds() -> Knouds {
    let settings = ProviderSettings::new(
        "kn",
        ProviderKind::Knouds,
        SecretString::new("knouds_live_x"),
    );
    Knouds::new(settings, HttpClient::new().unwrap())
}

fn decode(status: u16, body: Value) -> Result<RunOutcome, GatewayError> {
    knouds().decode(
        status,
        HeaderMap::new(),
        Bytes::from(body.to_string()),
        &WorkflowRef::Slug("my-flow".into()),
    )
}

fn decode_schema(status: u16, body: Value) -> Result<WorkflowSchema, GatewayError> {
    knouds().decode_schema(
        status,
        HeaderMap::new(),
        Bytes::from(body.to_string()),
        &WorkflowRef::Slug("my-flow".into()),
    )
}

#[test]
fn schema_fields_types_and_defaults_are_normalized() {
    let schema = decode_schema(
        200,
        json!({
            "name": "Summarize", "description": "",
            "fields": [
                {"name": "text", "type": "string", "required": true, "description": "Text"},
                {"name": "max_words", "type": "number", "default": 50},
                {"name": "style", "type": "string"},
                {"name": "upload", "type": "file"}
            ],
            "values": {"style": "short", "max_words": 99}
        }),
    )
    .unwrap();
    assert_eq!(schema.name.as_deref(), Some("Summarize"));
    assert_eq!(schema.description, None);
    let text = schema.field("text").unwrap();
    assert!(text.required && text.value_type == ValueType::String);
    assert_eq!(text.description.as_deref(), Some("Text"));
    assert_eq!(schema.field("max_words").unwrap().default, Some(json!(50)));
    assert_eq!(schema.field("style").unwrap().default, Some(json!("short")));
    let upload = schema.field("upload").unwrap();
    assert_eq!(
        (upload.value_type, upload.upstream_type.as_str()),
        (ValueType::Any, "file")
    );
    let empty = decode_schema(200, json!({"fields": []})).unwrap();
    assert!(empty.fields.is_empty());
}

#[test]
fn schema_errors_are_typed() {
    let missing = decode_schema(404, json!({"error": "Workflow not found"})).unwrap_err();
    assert_eq!(missing.class, ErrorClass::NotFound);
    assert_eq!(
        missing.resource.as_ref().unwrap().resource_type,
        "knouds.workflow"
    );
    let denied = decode_schema(
        403,
        json!({"error": "no", "code": "CAPABILITY_DENIED", "required": "workflow:read"}),
    )
    .unwrap_err();
    assert_eq!(denied.class, ErrorClass::PermissionDenied);
    let garbled = decode_schema(200, json!({"fields": "nope"})).unwrap_err();
    assert_eq!(garbled.class, ErrorClass::ProtocolError);
}

#[test]
fn slugs() {
    for ok in ["a", "my-thumbnail-pipeline", "v2-render"] {
        assert!(is_valid_slug(ok), "{ok}");
    }
    for bad in ["", "My-Flow", "a--b", "-a", "a-", "a_b", "a/b", "á"] {
        assert!(!is_valid_slug(bad), "{bad}");
    }
}

#[test]
fn sync_result_cost_and_ms() {
    let outcome = decode(
        200,
        json!({"success": true, "result": {"summary": "s"}, "cost": 0, "ms": 1500}),
    )
    .unwrap();
    assert_eq!(outcome.output, Some(json!({"summary": "s"})));
    assert_eq!(outcome.usage.credits, Some(0.0));
    assert_eq!(outcome.usage.duration, Some(Duration::from_millis(1500)));
}

#[test]
fn async_submission_is_running() {
    let outcome = decode(202, json!({"_async": true, "executionId": "e-1", "requestId": "q-1", "status": "processing", "pollUrl": "/api/executions/e-1"})).unwrap();
    assert_eq!(outcome.status, Some(RunStatus::Running));
    assert_eq!(outcome.upstream_run_id.as_deref(), Some("e-1"));
}

#[test]
fn capability_denied_carries_the_required_capability() {
    let error = decode(
        403,
        json!({"error": "denied", "code": "CAPABILITY_DENIED", "required": "workflow:my-flow:run"}),
    )
    .unwrap_err();
    assert_eq!(error.class, ErrorClass::PermissionDenied);
    assert_eq!(
        error.metadata,
        vec![(
            "required_capability".to_owned(),
            "workflow:my-flow:run".to_owned()
        )]
    );
}

#[test]
fn invalid_inputs_details_become_violations() {
    let error = decode(400, json!({"error": "bad", "code": "INVALID_INPUTS", "details": [{"field": "text", "message": "required"}]})).unwrap_err();
    assert_eq!(
        error.violations,
        vec![FieldViolation::new("inputs.text", "required")]
    );
}

#[test]
fn execution_failed_is_a_failed_outcome() {
    let outcome = decode(
        500,
        json!({"error": "model timed out", "code": "EXECUTION_FAILED"}),
    )
    .unwrap();
    assert_eq!(outcome.status, Some(RunStatus::Failed));
    assert_eq!(outcome.error.unwrap().message, "model timed out");
}

#[test]
fn every_documented_code_has_its_class() {
    let cases = [
        (400, "ASYNC_NOT_SUPPORTED", ErrorClass::FailedPrecondition),
        (400, "INVALID_SLUG", ErrorClass::InvalidArgument),
        (400, "INVALID_BODY", ErrorClass::InvalidArgument),
        (400, "INVALID_CAPABILITY", ErrorClass::PermissionDenied),
        (
            401,
            "LEGACY_KEY_RETIRED",
            ErrorClass::UpstreamCredentialRejected,
        ),
        (402, "INSUFFICIENT_CREDITS", ErrorClass::QuotaExhausted),
        (402, "grant_exhausted", ErrorClass::FailedPrecondition),
        (
            403,
            "CAPABILITY_ABOVE_CEILING",
            ErrorClass::PermissionDenied,
        ),
        (403, "API_KEY_ACCESS_DENIED", ErrorClass::PermissionDenied),
        (403, "MODEL_TIER_REQUIRED", ErrorClass::FailedPrecondition),
        (404, "MODEL_NOT_FOUND", ErrorClass::NotFound),
        (429, "RATE_LIMIT_EXCEEDED", ErrorClass::RateLimited),
    ];
    for (status, code, class) in cases {
        let error = decode(status, json!({"error": "e", "code": code})).unwrap_err();
        assert_eq!(error.class, class, "{code}");
    }
    let unknown_slug = decode(404, json!({"error": "Workflow not found"})).unwrap_err();
    assert_eq!(unknown_slug.class, ErrorClass::NotFound);
    assert_eq!(unknown_slug.resource.as_ref().unwrap().name, "my-flow");
}

#[test]
fn executions_decode_every_state() {
    let settings = ProviderSettings::new("kn", ProviderKind::Knouds, SecretString::new("k"));
    let knouds = Knouds::new(settings, HttpClient::new().unwrap());
    let decode = |body: Value| {
        knouds.decode_run_status(200, HeaderMap::new(), Bytes::from(body.to_string()), "e-1")
    };
    let running = decode(json!({"executionId": "e-1", "status": "processing"})).unwrap();
    assert_eq!(running.status, Some(RunStatus::Running));
    let done = decode(json!({"executionId": "e-1", "status": "completed", "result": {"url": "u"}}))
        .unwrap();
    assert_eq!(done.output, Some(json!({"url": "u"})));
    let failed =
        decode(json!({"status": "failed", "error": {"code": "EXECUTION_FAILED", "message": "m"}}))
            .unwrap();
    assert_eq!(failed.error.unwrap().code, "EXECUTION_FAILED");
    assert_eq!(
        decode(json!({"status": "cancelled"})).unwrap().status,
        Some(RunStatus::Cancelled)
    );
    let missing = knouds
        .decode_run_status(404, HeaderMap::new(), Bytes::from_static(b"{}"), "e-9")
        .unwrap_err();
    assert_eq!(
        missing.resource.as_ref().unwrap().resource_type,
        "knouds.execution"
    );
}
