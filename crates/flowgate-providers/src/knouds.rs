//! Knouds: workflows addressed by slug, keys scoped by capability.
//!
//! `POST {base}/api/workflows/{slug}/run[?async=true]` with
//! `x-api-key: knouds_live_…` (not Bearer) and `{"inputs": {…}}`. Sync
//! success is `{"success": true, "result", "cost", "ms"}`; async submission
//! is `{"_async": true, "executionId", "requestId", "status": "processing", …}`.
//! Errors are `{"error", "code", …context}` (`required` on
//! CAPABILITY_DENIED, `details` on INVALID_INPUTS). `EXECUTION_FAILED` is a
//! run that ran and failed: a FAILED outcome, not an error.
//!
//! Schemas: `GET {base}/api/workflows/{slug}/schema` (capability
//! `workflow:read`) answers `{"fields": [{name, type, required?,
//! description?, default?}], "values": {<defaults>}, "name", "description"}`;
//! a field's default is its own `default` or else its entry in `values`.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use flowgate_core::{
    Deadline, ErrorClass, FieldViolation, GatewayError, Invocation, Provider, ProviderKind,
    RunError, RunOutcome, RunStatus, SchemaField, Usage, ValueType, WorkflowRef, WorkflowSchema,
    decode_output,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    HttpClient, ProviderSettings,
    errors::{
        ErrorBody, credential_rejected, describe, fallback_error, id_text, protocol_error,
        run_error, run_not_found, safe_message, upstream_error,
    },
    http::{BaseUrl, UpstreamRequest, UpstreamResponse, auth_header, is_upstream_id},
    numbers::lenient,
};

/// Longest accepted slug.
const MAX_SLUG: usize = 128;

/// A configured Knouds provider.
#[derive(Debug)]
pub struct Knouds {
    settings: ProviderSettings,
    http: HttpClient,
    base: BaseUrl,
    auth: (HeaderName, HeaderValue),
}

#[derive(Serialize)]
struct RunRequest<'a> {
    inputs: &'a Map<String, Value>,
}

#[derive(Deserialize)]
struct RunBody {
    success: Option<bool>,
    #[serde(rename = "_async")]
    is_async: Option<bool>,
    #[serde(rename = "executionId")]
    execution_id: Option<Value>,
    #[serde(rename = "requestId")]
    request_id: Option<Value>,
    status: Option<String>,
    result: Option<Value>,
    /// Usage: numbers or numeric strings; unreadable ones are dropped.
    #[serde(default, deserialize_with = "lenient::credits")]
    cost: Option<f64>,
    #[serde(default, deserialize_with = "lenient::millis")]
    ms: Option<Duration>,
}

/// `GET /api/executions/{id}`.
#[derive(Deserialize)]
struct ExecutionBody {
    #[serde(rename = "executionId")]
    execution_id: Option<Value>,
    #[serde(rename = "requestId")]
    request_id: Option<Value>,
    status: Option<String>,
    result: Option<Value>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct SchemaBody {
    fields: Vec<SchemaFieldBody>,
    #[serde(default)]
    values: Map<String, Value>,
    name: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
struct SchemaFieldBody {
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    required: bool,
    description: Option<String>,
    default: Option<Value>,
}

impl SchemaBody {
    fn normalize(mut self) -> WorkflowSchema {
        let fields = self
            .fields
            .into_iter()
            .map(|field| {
                let upstream_type = field.kind.unwrap_or_default();
                SchemaField {
                    value_type: ValueType::from_upstream(&upstream_type),
                    upstream_type,
                    required: field.required,
                    default: field
                        .default
                        .filter(|value| !value.is_null())
                        .or_else(|| self.values.remove(&field.name))
                        .filter(|value| !value.is_null()),
                    description: field.description.filter(|text| !text.is_empty()),
                    name: field.name,
                }
            })
            .collect();
        WorkflowSchema {
            name: self.name.filter(|text| !text.is_empty()),
            description: self.description.filter(|text| !text.is_empty()),
            fields,
        }
    }
}

/// True for a well-formed slug: lowercase letters, digits and single
/// hyphens between them.
pub fn is_valid_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug.len() <= MAX_SLUG
        && slug.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

impl Knouds {
    /// A provider for `settings` (kind `knouds`).
    pub fn new(settings: ProviderSettings, http: HttpClient) -> Self {
        let auth = auth_header(HeaderName::from_static("x-api-key"), "", &settings);
        Self {
            base: BaseUrl::parse(&settings.base_url),
            settings,
            http,
            auth,
        }
    }

    /// The run URL for `slug` (public for request-shape tests).
    pub fn run_url(&self, slug: &str, asynchronous: bool) -> Result<reqwest::Url, GatewayError> {
        let query = asynchronous.then_some("async=true");
        self.base.join(&["api", "workflows", slug, "run"], query)
    }

    /// The schema URL for `slug` (public for request-shape tests).
    pub fn schema_url(&self, slug: &str) -> Result<reqwest::Url, GatewayError> {
        self.base.join(&["api", "workflows", slug, "schema"], None)
    }

    /// Decodes a schema answer (public for decoder tests).
    pub fn decode_schema(
        &self,
        status: u16,
        headers: HeaderMap,
        body: Bytes,
        workflow: &WorkflowRef,
    ) -> Result<WorkflowSchema, GatewayError> {
        self.decode_schema_response(&UpstreamResponse::new(status, headers, body), workflow)
    }

    fn decode_schema_response(
        &self,
        response: &UpstreamResponse,
        workflow: &WorkflowRef,
    ) -> Result<WorkflowSchema, GatewayError> {
        if response.status != 200 {
            // The run's error table covers the schema endpoint's answers too
            // (401, 403 CAPABILITY_DENIED, 404, 429, 5xx).
            return Err(self.error_of(response, workflow, "the schema endpoint"));
        }
        serde_json::from_slice::<SchemaBody>(&response.body)
            .map(SchemaBody::normalize)
            .map_err(|_| {
                protocol_error(
                    &self.settings,
                    response,
                    "a schema that is not {fields: [{name, type}]}",
                )
            })
    }

    /// Decodes an upstream answer (public for decoder tests).
    pub fn decode(
        &self,
        status: u16,
        headers: HeaderMap,
        body: Bytes,
        workflow: &WorkflowRef,
    ) -> Result<RunOutcome, GatewayError> {
        self.decode_response(&UpstreamResponse::new(status, headers, body), workflow)
    }

    fn decode_response(
        &self,
        response: &UpstreamResponse,
        workflow: &WorkflowRef,
    ) -> Result<RunOutcome, GatewayError> {
        if !matches!(response.status, 200..=202) {
            return self.decode_error(response, workflow);
        }
        let Ok(run) = serde_json::from_slice::<RunBody>(&response.body) else {
            return Err(protocol_error(
                &self.settings,
                response,
                "a body that is not a run object",
            ));
        };
        if run.success == Some(false) {
            return self.decode_error(response, workflow);
        }
        let request_id = run.request_id.as_ref().and_then(id_text);
        if run.is_async == Some(true) {
            let Some(execution_id) = run.execution_id.as_ref().and_then(id_text) else {
                return Err(protocol_error(
                    &self.settings,
                    response,
                    "an async answer without executionId",
                ));
            };
            let status = run
                .status
                .as_deref()
                .and_then(RunStatus::parse_upstream)
                .unwrap_or(RunStatus::Running);
            return Ok(RunOutcome {
                upstream_run_id: Some(execution_id),
                upstream_request_id: request_id.or_else(|| response.request_id()),
                status: Some(status),
                rate_limit: response.rate_limit.clone(),
                ..RunOutcome::default()
            });
        }
        if run.success != Some(true) && run.result.is_none() {
            return Err(protocol_error(
                &self.settings,
                response,
                "neither a result nor an async execution",
            ));
        }
        Ok(RunOutcome {
            upstream_run_id: run.execution_id.as_ref().and_then(id_text),
            upstream_request_id: request_id.or_else(|| response.request_id()),
            status: Some(RunStatus::Completed),
            output: Some(decode_output(run.result.unwrap_or(Value::Null))),
            usage: Usage {
                credits: run.cost,
                duration: run.ms,
                tokens: None,
            },
            rate_limit: response.rate_limit.clone(),
            ..RunOutcome::default()
        })
    }

    /// Decodes `GET /api/executions/{id}` (public for decoder tests).
    pub fn decode_execution(
        &self,
        status: u16,
        headers: HeaderMap,
        body: Bytes,
        execution_id: &str,
    ) -> Result<RunOutcome, GatewayError> {
        self.decode_execution_response(&UpstreamResponse::new(status, headers, body), execution_id)
    }

    fn decode_execution_response(
        &self,
        response: &UpstreamResponse,
        execution_id: &str,
    ) -> Result<RunOutcome, GatewayError> {
        if response.status == 404 {
            return Err(run_not_found(
                &self.settings,
                response,
                "EXECUTION_NOT_FOUND",
                "knouds.execution",
                execution_id,
            ));
        }
        if response.status != 200 {
            let workflow = WorkflowRef::Slug(execution_id.to_owned());
            return Err(self.error_of(response, &workflow, "the executions endpoint"));
        }
        let Ok(execution) = serde_json::from_slice::<ExecutionBody>(&response.body) else {
            return Err(protocol_error(
                &self.settings,
                response,
                "a body that is not an execution",
            ));
        };
        let Some(status) = execution
            .status
            .as_deref()
            .and_then(RunStatus::parse_upstream)
        else {
            return Err(protocol_error(
                &self.settings,
                response,
                "an unknown execution status",
            ));
        };
        let error = (status == RunStatus::Failed || status == RunStatus::Cancelled)
            .then(|| {
                execution
                    .error
                    .map(|error| run_error(Some(error), &self.settings))
            })
            .flatten();
        Ok(RunOutcome {
            upstream_run_id: execution
                .execution_id
                .as_ref()
                .and_then(id_text)
                .or_else(|| Some(execution_id.to_owned())),
            upstream_request_id: execution.request_id.as_ref().and_then(id_text),
            status: Some(status),
            output: execution
                .result
                .filter(|_| status == RunStatus::Completed)
                .map(decode_output),
            error,
            rate_limit: response.rate_limit.clone(),
            ..RunOutcome::default()
        })
    }

    /// The typed error of a non-run endpoint's failure answer, by the run
    /// error table; a "run failed" outcome there is itself a protocol error.
    fn error_of(
        &self,
        response: &UpstreamResponse,
        workflow: &WorkflowRef,
        endpoint: &str,
    ) -> GatewayError {
        match self.decode_error(response, workflow) {
            Err(error) => error,
            Ok(_) => protocol_error(
                &self.settings,
                response,
                &format!("a run outcome from {endpoint}"),
            ),
        }
    }

    /// Every code of Knouds' documented error table, then the fallback.
    fn decode_error(
        &self,
        response: &UpstreamResponse,
        workflow: &WorkflowRef,
    ) -> Result<RunOutcome, GatewayError> {
        let settings = &self.settings;
        let body = ErrorBody::parse(&response.body);
        let message = describe(settings, response, &body);
        let code = body.code.clone().unwrap_or_default();
        let fail = |class: ErrorClass| {
            upstream_error(settings, response, class, code.clone(), message.clone())
        };
        let error = match code.as_str() {
            "EXECUTION_FAILED" => {
                return Ok(RunOutcome {
                    upstream_request_id: response.request_id(),
                    status: Some(RunStatus::Failed),
                    error: Some(RunError {
                        code,
                        message: body
                            .message
                            .as_deref()
                            .map(|m| safe_message(settings, m))
                            .unwrap_or_else(|| "the execution failed".into()),
                    }),
                    rate_limit: response.rate_limit.clone(),
                    ..RunOutcome::default()
                });
            }
            "INVALID_INPUTS" | "INVALID_BODY" => {
                fail(ErrorClass::InvalidArgument).with_violations(input_violations(&body, settings))
            }
            "INVALID_SLUG" => fail(ErrorClass::InvalidArgument).with_violations(vec![FieldViolation::new(
                "target.slug",
                "Knouds rejected the slug",
            )]),
            "ASYNC_NOT_SUPPORTED" => fail(ErrorClass::FailedPrecondition).with_precondition(
                "MODE",
                workflow.label(),
                "this workflow's model provider cannot run asynchronously: invoke it synchronously",
            ),
            "INSUFFICIENT_CREDITS" => fail(ErrorClass::QuotaExhausted),
            "grant_exhausted" => fail(ErrorClass::FailedPrecondition).with_precondition(
                "PLAN",
                format!("provider:{}", settings.name),
                "the trial grant is used up: upgrade the Knouds plan (buying credits does not help)",
            ),
            "MODEL_TIER_REQUIRED" => fail(ErrorClass::FailedPrecondition).with_precondition(
                "TIER",
                workflow.label(),
                "the workflow uses a model that needs a higher Knouds plan tier",
            ),
            "CAPABILITY_DENIED" => with_context(settings, fail(ErrorClass::PermissionDenied), &body, "required", "required_capability"),
            "CAPABILITY_ABOVE_CEILING" => {
                with_context(settings, fail(ErrorClass::PermissionDenied), &body, "attempted", "attempted_capability")
            }
            "API_KEY_ACCESS_DENIED" | "INVALID_CAPABILITY" => fail(ErrorClass::PermissionDenied),
            "MODEL_NOT_FOUND" => fail(ErrorClass::NotFound).with_resource("knouds.model", workflow.label()),
            "RATE_LIMIT_EXCEEDED" => fail(ErrorClass::RateLimited),
            _ => match response.status {
                401 => credential_rejected(settings, response),
                404 if body.object.is_some() => upstream_error(
                    settings,
                    response,
                    ErrorClass::NotFound,
                    "WORKFLOW_NOT_FOUND",
                    message.clone(),
                )
                .with_resource("knouds.workflow", workflow.label()),
                200..=202 => upstream_error(
                    settings,
                    response,
                    ErrorClass::ProtocolError,
                    "UPSTREAM_PROTOCOL_ERROR",
                    format!("{message} (success: false without a known code)"),
                ),
                _ => fallback_error(settings, response, &body),
            },
        };
        Err(error)
    }
}

/// Copies one context field of the error body into `ErrorInfo` metadata
/// (redacted and bounded like any upstream message).
fn with_context(
    settings: &ProviderSettings,
    error: GatewayError,
    body: &ErrorBody,
    field: &str,
    key: &str,
) -> GatewayError {
    match body.field(field) {
        Some(value) => error.with_metadata(key, safe_message(settings, value)),
        None => error,
    }
}

/// `details: [{field, message}]` of INVALID_INPUTS as field violations.
fn input_violations(body: &ErrorBody, settings: &ProviderSettings) -> Vec<FieldViolation> {
    let details = body
        .object
        .as_ref()
        .and_then(|object| object.get("details"))
        .and_then(Value::as_array);
    let violations: Vec<FieldViolation> = details
        .into_iter()
        .flatten()
        .filter_map(|detail| {
            let field = detail.get("field").and_then(Value::as_str)?;
            let message = detail
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("invalid");
            Some(FieldViolation::new(
                format!("inputs.{field}"),
                safe_message(settings, message),
            ))
        })
        .collect();
    if violations.is_empty() {
        let description = body.message.as_deref().map_or_else(
            || "rejected by Knouds".to_owned(),
            |m| safe_message(settings, m),
        );
        vec![FieldViolation::new("inputs", description)]
    } else {
        violations
    }
}

#[async_trait]
impl Provider for Knouds {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Knouds
    }

    fn validate(&self, invocation: &Invocation) -> Vec<FieldViolation> {
        let mut violations = Vec::new();
        if let WorkflowRef::Slug(slug) = &invocation.workflow
            && !is_valid_slug(slug)
        {
            violations.push(FieldViolation::new(
                "target.slug",
                format!(
                    "must be 1 to {MAX_SLUG} lowercase letters, digits and single hyphens (for example my-thumbnail-pipeline)"
                ),
            ));
        }
        violations
    }

    async fn invoke(
        &self,
        invocation: &Invocation,
        deadline: Deadline,
    ) -> Result<RunOutcome, GatewayError> {
        let WorkflowRef::Slug(slug) = &invocation.workflow else {
            return Err(GatewayError::internal(
                "knouds provider given a non-slug target",
            ));
        };
        let body = serde_json::to_vec(&RunRequest {
            inputs: &invocation.inputs,
        })
        .map_err(|err| GatewayError::internal(format!("encoding the request: {err}")))?;
        let request = UpstreamRequest {
            method: Method::POST,
            url: self.run_url(slug, invocation.async_delivery.is_some())?,
            auth: (&self.auth.0, &self.auth.1),
            body: Some(body),
        };
        let response = self.http.send(&self.settings, request, deadline).await?;
        self.decode_response(&response, &invocation.workflow)
    }

    async fn run_status(
        &self,
        upstream_id: &str,
        deadline: Deadline,
    ) -> Result<Option<RunOutcome>, GatewayError> {
        // Execution ids are UUIDs in the docs; any id of the shared shape is
        // accepted (emulators and older accounts), nothing else is sent.
        if !is_upstream_id(upstream_id) {
            return Err(GatewayError::not_found(
                "EXECUTION_NOT_FOUND",
                "knouds.execution",
                upstream_id,
                "not a Knouds execution id",
            ));
        }
        let request = UpstreamRequest {
            method: Method::GET,
            url: self.base.join(&["api", "executions", upstream_id], None)?,
            auth: (&self.auth.0, &self.auth.1),
            body: None,
        };
        let response = self.http.send(&self.settings, request, deadline).await?;
        self.decode_execution_response(&response, upstream_id)
            .map(Some)
    }

    async fn fetch_schema(
        &self,
        workflow: &WorkflowRef,
        deadline: Deadline,
    ) -> Result<Option<WorkflowSchema>, GatewayError> {
        let WorkflowRef::Slug(slug) = workflow else {
            return Err(GatewayError::internal(
                "knouds provider given a non-slug target",
            ));
        };
        let request = UpstreamRequest {
            method: Method::GET,
            url: self.schema_url(slug)?,
            auth: (&self.auth.0, &self.auth.1),
            body: None,
        };
        let response = self.http.send(&self.settings, request, deadline).await?;
        self.decode_schema_response(&response, workflow).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowgate_core::SecretString;
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
        let error = decode(403, json!({"error": "denied", "code": "CAPABILITY_DENIED", "required": "workflow:my-flow:run"})).unwrap_err();
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
            knouds.decode_execution(200, HeaderMap::new(), Bytes::from(body.to_string()), "e-1")
        };
        let running = decode(json!({"executionId": "e-1", "status": "processing"})).unwrap();
        assert_eq!(running.status, Some(RunStatus::Running));
        let done =
            decode(json!({"executionId": "e-1", "status": "completed", "result": {"url": "u"}}))
                .unwrap();
        assert_eq!(done.output, Some(json!({"url": "u"})));
        let failed = decode(
            json!({"status": "failed", "error": {"code": "EXECUTION_FAILED", "message": "m"}}),
        )
        .unwrap();
        assert_eq!(failed.error.unwrap().code, "EXECUTION_FAILED");
        assert_eq!(
            decode(json!({"status": "cancelled"})).unwrap().status,
            Some(RunStatus::Cancelled)
        );
        let missing = knouds
            .decode_execution(404, HeaderMap::new(), Bytes::from_static(b"{}"), "e-9")
            .unwrap_err();
        assert_eq!(
            missing.resource.as_ref().unwrap().resource_type,
            "knouds.execution"
        );
    }
}
