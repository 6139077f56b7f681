//! Protobuf ⇄ domain. The edge's only translation layer: everything past it
//! is `flowgate-core` types.

use std::time::{Duration, SystemTime};

use flowgate_core::{
    AsyncDelivery, FieldViolation, GatewayError, Invocation, Invoked, RateLimitInfo, RunError,
    RunIdSigner, RunStatus, Usage, ValueType, Violations, WorkflowRef, WorkflowSchema,
    WorkflowTarget,
};
use prost_types::value::Kind;
use serde_json::{Map, Number, Value};

use crate::{
    proto::pb,
    status::{MAX_ECHOED_CHARS, cap, echo},
};

/// Largest integer a JSON consumer reads exactly from a double (2⁵³).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;

/// Decodes an `InvokeRequest`, collecting every bad field.
pub fn invoke_request(
    request: pb::InvokeRequest,
) -> Result<(WorkflowTarget, Invocation), GatewayError> {
    let mut violations = Violations::new();
    let target = target(request.target, &mut violations);
    let inputs = request
        .inputs
        .map(|inputs| struct_to_json(inputs, "inputs", &mut violations))
        .unwrap_or_default();
    let mut metadata = Map::new();
    for (key, value) in request.metadata {
        let path = FieldPath::Key(&FieldPath::Root("metadata"), &key);
        let json = to_json(value, &path, &mut violations);
        metadata.insert(key, json);
    }
    let async_delivery = request
        .async_options
        .filter(|options| options.enabled)
        .map(|options| AsyncDelivery {
            callback_url: non_empty(options.callback_url),
        });
    match target {
        Some(target) if violations.is_empty() => {
            let invocation = Invocation {
                workflow: target.workflow.clone(),
                inputs,
                metadata,
                user: non_empty(request.user),
                async_delivery,
                idempotency_key: non_empty(request.idempotency_key),
            };
            Ok((target, invocation))
        }
        _ => Err(GatewayError::invalid_argument(violations)),
    }
}

/// Decodes a target; `None` (with a violation) when unusable.
pub fn target(
    target: Option<pb::WorkflowTarget>,
    violations: &mut Violations,
) -> Option<WorkflowTarget> {
    let Some(target) = target else {
        violations.push(FieldViolation::new("target", "required"));
        return None;
    };
    let workflow = match target.workflow {
        Some(pb::workflow_target::Workflow::Deployment(deployment)) => WorkflowRef::Deployment {
            name: deployment.name,
            variant: non_empty(deployment.variant),
        },
        Some(pb::workflow_target::Workflow::WorkflowId(id)) => WorkflowRef::WorkflowId(id),
        Some(pb::workflow_target::Workflow::Slug(slug)) => WorkflowRef::Slug(slug),
        None => {
            violations.push(FieldViolation::new(
                "target.workflow",
                "required: one of deployment (Fetch Hive), workflow_id (AI Tutor) or slug (Knouds)",
            ));
            return None;
        }
    };
    Some(WorkflowTarget {
        provider: non_empty(target.provider),
        workflow,
    })
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// `google.protobuf.Struct` → JSON object.
pub fn struct_to_json(
    object: prost_types::Struct,
    field: &str,
    violations: &mut Violations,
) -> Map<String, Value> {
    object_to_json(object, &FieldPath::Root(field), violations)
}

/// `google.protobuf.Value` → JSON. Integral numbers become JSON integers
/// (so `5` stays `5`, not `5.0`); non-finite numbers are violations.
pub fn value_to_json(value: prost_types::Value, field: &str, violations: &mut Violations) -> Value {
    to_json(value, &FieldPath::Root(field), violations)
}

/// Where a value sits in the request, written out only when it is named
/// in a violation (no path string per key on the hot path). Keys come from
/// the caller: each is capped (see [`crate::status::cap`]).
#[derive(Debug, Clone, Copy)]
enum FieldPath<'a> {
    /// The top-level field (`inputs`, `metadata.key`).
    Root(&'a str),
    /// A key of an object.
    Key(&'a FieldPath<'a>, &'a str),
    /// An item of a list.
    Index(&'a FieldPath<'a>, usize),
}

impl FieldPath<'_> {
    fn render(&self) -> String {
        let mut text = match self {
            Self::Root(field) => return echo(field),
            Self::Key(parent, key) => {
                let mut text = parent.render();
                text.push('.');
                text.push_str(&cap(key, MAX_ECHOED_CHARS));
                text
            }
            Self::Index(parent, index) => format!("{}[{index}]", parent.render()),
        };
        if text.chars().count() > MAX_ECHOED_CHARS {
            text = echo(&text);
        }
        text
    }
}

fn object_to_json(
    object: prost_types::Struct,
    path: &FieldPath<'_>,
    violations: &mut Violations,
) -> Map<String, Value> {
    object
        .fields
        .into_iter()
        .map(|(key, value)| {
            let json = to_json(value, &FieldPath::Key(path, &key), violations);
            (key, json)
        })
        .collect()
}

fn to_json(value: prost_types::Value, path: &FieldPath<'_>, violations: &mut Violations) -> Value {
    match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(flag)) => Value::Bool(flag),
        Some(Kind::StringValue(text)) => Value::String(text),
        Some(Kind::NumberValue(number)) => {
            if number.fract() == 0.0 && number.abs() <= MAX_SAFE_INTEGER {
                Value::Number(Number::from(number as i64))
            } else if let Some(number) = Number::from_f64(number) {
                Value::Number(number)
            } else {
                violations
                    .push_with(|| FieldViolation::new(path.render(), "numbers must be finite"));
                Value::Null
            }
        }
        Some(Kind::StructValue(object)) => Value::Object(object_to_json(object, path, violations)),
        Some(Kind::ListValue(list)) => Value::Array(
            list.values
                .into_iter()
                .enumerate()
                .map(|(index, item)| to_json(item, &FieldPath::Index(path, index), violations))
                .collect(),
        ),
    }
}

/// JSON → `google.protobuf.Value`.
pub fn json_to_value(value: Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(flag) => Kind::BoolValue(flag),
        Value::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or(f64::NAN)),
        Value::String(text) => Kind::StringValue(text),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(json_to_value).collect(),
        }),
        Value::Object(object) => Kind::StructValue(prost_types::Struct {
            fields: object
                .into_iter()
                .map(|(key, value)| (key, json_to_value(value)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// The wire enum of a status.
pub fn run_status(status: Option<RunStatus>) -> pb::RunStatus {
    match status {
        None => pb::RunStatus::Unspecified,
        Some(RunStatus::Queued) => pb::RunStatus::Queued,
        Some(RunStatus::Running) => pb::RunStatus::Running,
        Some(RunStatus::Completed) => pb::RunStatus::Completed,
        Some(RunStatus::Failed) => pb::RunStatus::Failed,
        Some(RunStatus::Cancelled) => pb::RunStatus::Cancelled,
    }
}

fn duration(duration: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(duration).ok()
}

fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

/// The wire form of a rate-limit window; `None` when nothing was reported.
pub fn rate_limit(info: &RateLimitInfo) -> Option<pb::RateLimit> {
    (!info.is_empty()).then(|| pb::RateLimit {
        limit: info.limit,
        remaining: info.remaining,
        reset_time: info.reset_at.map(timestamp),
        retry_after: info.retry_after.and_then(duration),
    })
}

fn usage(usage: &Usage) -> Option<pb::Usage> {
    (usage != &Usage::default()).then(|| pb::Usage {
        credits: usage.credits,
        duration: usage.duration.and_then(duration),
        tokens: usage.tokens,
    })
}

fn run_error(error: RunError) -> pb::RunError {
    pb::RunError {
        code: error.code,
        message: error.message,
    }
}

/// Decodes a `GetWorkflowSchemaRequest` into its target.
pub fn schema_request(
    request: pb::GetWorkflowSchemaRequest,
) -> Result<WorkflowTarget, GatewayError> {
    let mut violations = Violations::new();
    target(request.target, &mut violations)
        .ok_or_else(|| GatewayError::invalid_argument(violations))
}

/// The wire enum of a value type (`Any` is `VALUE_TYPE_UNSPECIFIED`).
pub fn value_type(value_type: ValueType) -> pb::ValueType {
    match value_type {
        ValueType::String => pb::ValueType::String,
        ValueType::Number => pb::ValueType::Number,
        ValueType::Boolean => pb::ValueType::Boolean,
        ValueType::Array => pb::ValueType::Array,
        ValueType::Object => pb::ValueType::Object,
        ValueType::Any => pb::ValueType::Unspecified,
    }
}

/// Builds the `GetWorkflowSchemaResponse` of a schema.
pub fn schema_response(schema: &WorkflowSchema) -> pb::GetWorkflowSchemaResponse {
    pb::GetWorkflowSchemaResponse {
        name: schema.name.clone().unwrap_or_default(),
        description: schema.description.clone().unwrap_or_default(),
        fields: schema
            .fields
            .iter()
            .map(|field| pb::SchemaField {
                name: field.name.clone(),
                r#type: value_type(field.value_type).into(),
                upstream_type: field.upstream_type.clone(),
                required: field.required,
                default_value: field.default.clone().map(json_to_value),
                description: field.description.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// Builds the `InvokeResponse` of a finished invocation.
/// The run id is signed for `owner`, the caller that started it (see
/// [`RunIdSigner::sign_owned`]).
pub fn invoke_response(
    invoked: Invoked,
    run_ids: &RunIdSigner,
    owner: Option<&str>,
) -> pb::InvokeResponse {
    let Invoked {
        provider,
        run_id,
        outcome,
    } = invoked;
    pb::InvokeResponse {
        run_id: run_ids.sign_owned(&run_id, owner),
        upstream_run_id: outcome.upstream_run_id.unwrap_or_default(),
        status: run_status(outcome.status).into(),
        output: outcome.output.map(json_to_value),
        citations: outcome.citations,
        usage: usage(&outcome.usage),
        webhook_secret: outcome
            .webhook_secret
            .map(|secret| secret.expose().to_owned())
            .unwrap_or_default(),
        rate_limit: rate_limit(&outcome.rate_limit),
        provider: provider.name().to_owned(),
        error: outcome.error.map(run_error),
    }
}

/// A run's state as a stream event.
pub fn run_event(record: flowgate_state::RunRecord, run_ids: &RunIdSigner) -> pb::RunStatusEvent {
    pb::RunStatusEvent {
        run_id: run_ids.sign(&record.run_id),
        status: run_status(Some(record.status)).into(),
        time: Some(timestamp(record.updated_at)),
        output: record.output.map(json_to_value),
        error: record.error.map(run_error),
        usage: usage(&record.usage),
    }
}

/// The wire scheme as the engine's; `None` for unspecified.
pub fn webhook_scheme(scheme: pb::WebhookScheme) -> Option<flowgate_webhook::WebhookScheme> {
    use flowgate_webhook::WebhookScheme;
    match scheme {
        pb::WebhookScheme::Unspecified => None,
        pb::WebhookScheme::Knouds => Some(WebhookScheme::Knouds),
        pb::WebhookScheme::Fetchhive => Some(WebhookScheme::FetchHive),
        pb::WebhookScheme::StandardWebhooks => Some(WebhookScheme::Standard),
    }
}

/// The wire form of a failure reason.
pub fn webhook_failure(reason: flowgate_webhook::FailureReason) -> pb::WebhookFailureReason {
    use flowgate_webhook::FailureReason;
    match reason {
        FailureReason::MissingSignature => pb::WebhookFailureReason::MissingSignature,
        FailureReason::Malformed => pb::WebhookFailureReason::Malformed,
        FailureReason::Mismatch => pb::WebhookFailureReason::Mismatch,
        FailureReason::Expired => pb::WebhookFailureReason::Expired,
        FailureReason::Replayed => pb::WebhookFailureReason::Replayed,
    }
}

/// The wire form of a verified event.
pub fn webhook_event(
    event: flowgate_webhook::WebhookEvent,
    run_id: Option<String>,
) -> pb::WebhookEvent {
    pb::WebhookEvent {
        event_id: event.event_id,
        event_type: event.event_type,
        run_id: run_id.unwrap_or_default(),
        upstream_run_id: event.upstream_run_id.unwrap_or_default(),
        status: run_status(event.status).into(),
        output: event.output.map(json_to_value),
        error: event.error.map(run_error),
        time: event.time.map(timestamp),
    }
}

/// Request headers as an HTTP header map; entries that are not valid HTTP
/// headers are dropped (the verifier then reports the signature missing or
/// malformed).
pub fn header_map(headers: std::collections::HashMap<String, String>) -> http::HeaderMap {
    let mut map = http::HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.trim().as_bytes()),
            http::HeaderValue::from_str(value.trim()),
        ) {
            map.append(name, value);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roundtrip(value: Value) -> Value {
        let mut violations = Violations::new();
        let back = value_to_json(json_to_value(value), "x", &mut violations);
        assert!(violations.is_empty());
        back
    }

    #[test]
    fn json_survives_the_wire() {
        let value = json!({"n": 5, "f": 2.5, "s": "t", "b": true, "z": null, "a": [1, {"k": "v"}]});
        assert_eq!(roundtrip(value.clone()), value);
    }

    #[test]
    fn non_finite_numbers_are_violations() {
        let mut violations = Violations::new();
        let value = prost_types::Value {
            kind: Some(Kind::NumberValue(f64::INFINITY)),
        };
        value_to_json(value, "inputs.n", &mut violations);
        assert_eq!(violations.listed()[0].field, "inputs.n");
    }

    #[test]
    fn violation_paths_name_nested_fields_and_cap_caller_keys() {
        let bad = || prost_types::Value {
            kind: Some(Kind::NumberValue(f64::NAN)),
        };
        let long_key = "k".repeat(100_000);
        let nested = prost_types::Struct {
            fields: [(
                "list".to_owned(),
                prost_types::Value {
                    kind: Some(Kind::ListValue(prost_types::ListValue {
                        values: vec![bad()],
                    })),
                },
            )]
            .into(),
        };
        let request = pb::InvokeRequest {
            target: Some(pb::WorkflowTarget {
                provider: String::new(),
                workflow: Some(pb::workflow_target::Workflow::Slug("s".into())),
            }),
            inputs: Some(prost_types::Struct {
                fields: [(
                    "a".to_owned(),
                    prost_types::Value {
                        kind: Some(Kind::StructValue(nested)),
                    },
                )]
                .into(),
            }),
            metadata: [(long_key, bad())].into(),
            ..Default::default()
        };
        let err = invoke_request(request).unwrap_err();
        let fields: Vec<&str> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert!(fields.contains(&"inputs.a.list[0]"), "{fields:?}");
        let long = fields.iter().find(|f| f.starts_with("metadata.")).unwrap();
        assert_eq!(long.chars().count(), MAX_ECHOED_CHARS + 1);
        assert!(long.ends_with(crate::status::CUT_MARK));
    }

    #[test]
    fn missing_target_and_workflow_are_named() {
        let err = invoke_request(pb::InvokeRequest::default()).unwrap_err();
        assert_eq!(err.violations[0].field, "target");
        let request = pb::InvokeRequest {
            target: Some(pb::WorkflowTarget::default()),
            ..Default::default()
        };
        let err = invoke_request(request).unwrap_err();
        assert_eq!(err.violations[0].field, "target.workflow");
    }

    #[test]
    fn disabled_async_is_sync() {
        let request = pb::InvokeRequest {
            target: Some(pb::WorkflowTarget {
                provider: String::new(),
                workflow: Some(pb::workflow_target::Workflow::Slug("s".into())),
            }),
            async_options: Some(pb::AsyncOptions {
                enabled: false,
                callback_url: "https://x".into(),
            }),
            ..Default::default()
        };
        let (_, invocation) = invoke_request(request).unwrap();
        assert_eq!(invocation.async_delivery, None);
    }
}
