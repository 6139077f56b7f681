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

use flowgate_core::{
    AsyncMode, ErrorClass, FieldViolation, GatewayError, Invocation, ProviderKind, RunOutcome,
    RunStatus, Usage, WorkflowRef, WorkflowSchema, decode_output, reason::Reason,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    ProviderSettings,
    dialect::{Auth, Dialect, HeaderName, HttpProvider, Request, RunLookup},
    errors::{
        ErrorBody, credential_rejected, decode_body, describe, failed_run, fallback_error,
        protocol_error, run_error, safe_message, upstream_error,
    },
    http::UpstreamResponse,
    numbers::{id_text, lenient},
};

mod schema;

use schema::SchemaBody;

/// Longest accepted slug.
const MAX_SLUG: usize = 128;

/// A configured Knouds provider.
pub type Knouds = HttpProvider<KnoudsDialect>;

/// The Knouds dialect (see the module docs).
#[derive(Debug, Default)]
pub struct KnoudsDialect;

#[derive(Serialize)]
struct RunRequest<'a> {
    inputs: &'a Map<String, Value>,
}

#[derive(Deserialize)]
struct RunBody {
    success: Option<bool>,
    #[serde(rename = "_async")]
    is_async: Option<bool>,
    #[serde(rename = "executionId", default, deserialize_with = "lenient::value")]
    execution_id: Option<Value>,
    #[serde(rename = "requestId", default, deserialize_with = "lenient::value")]
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
    #[serde(rename = "executionId", default, deserialize_with = "lenient::value")]
    execution_id: Option<Value>,
    #[serde(rename = "requestId", default, deserialize_with = "lenient::value")]
    request_id: Option<Value>,
    status: Option<String>,
    result: Option<Value>,
    #[serde(default, deserialize_with = "lenient::value")]
    error: Option<Value>,
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

impl KnoudsDialect {
    fn decode_schema_response(
        &self,
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        workflow: &WorkflowRef,
    ) -> Result<WorkflowSchema, GatewayError> {
        if response.status != 200 {
            // The run's error table covers the schema endpoint's answers too
            // (401, 403 CAPABILITY_DENIED, 404, 429, 5xx).
            return Err(self.error_of(settings, response, workflow, "the schema endpoint"));
        }
        decode_body::<SchemaBody>(
            settings,
            response,
            "a schema that is not {fields: [{name, type}]}",
        )
        .map(SchemaBody::normalize)
    }

    fn decode_response(
        &self,
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        workflow: &WorkflowRef,
    ) -> Result<RunOutcome, GatewayError> {
        let run: RunBody = decode_body(settings, response, "a body that is not a run object")?;
        if run.success == Some(false) {
            return self.error_table(settings, response, workflow);
        }
        let request_id = run.request_id.as_ref().and_then(id_text);
        if run.is_async == Some(true) {
            let Some(execution_id) = run.execution_id.as_ref().and_then(id_text) else {
                return Err(protocol_error(
                    settings,
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
                settings,
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

    fn decode_execution_response(
        &self,
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        execution_id: &str,
    ) -> Result<RunOutcome, GatewayError> {
        if response.status != 200 {
            let workflow = WorkflowRef::Slug(execution_id.to_owned());
            return Err(self.error_of(settings, response, &workflow, "the executions endpoint"));
        }
        let execution: ExecutionBody =
            decode_body(settings, response, "a body that is not an execution")?;
        let Some(status) = execution
            .status
            .as_deref()
            .and_then(RunStatus::parse_upstream)
        else {
            return Err(protocol_error(
                settings,
                response,
                "an unknown execution status",
            ));
        };
        let error = (status == RunStatus::Failed || status == RunStatus::Cancelled)
            .then(|| {
                execution
                    .error
                    .map(|error| run_error(Some(error), settings))
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
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        workflow: &WorkflowRef,
        endpoint: &str,
    ) -> GatewayError {
        match self.error_table(settings, response, workflow) {
            Err(error) => error,
            Ok(_) => protocol_error(
                settings,
                response,
                &format!("a run outcome from {endpoint}"),
            ),
        }
    }

    /// Every code of Knouds' documented error table, then the fallback.
    fn error_table(
        &self,
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        workflow: &WorkflowRef,
    ) -> Result<RunOutcome, GatewayError> {
        let body = ErrorBody::parse(&response.body);
        let message = describe(settings, response, &body);
        let code = body.code.clone().unwrap_or_default();
        let fail = |class: ErrorClass| {
            upstream_error(settings, response, class, code.clone(), message.clone())
        };
        let error = match code.as_str() {
            "EXECUTION_FAILED" => {
                return Ok(failed_run(
                    settings,
                    response,
                    &code,
                    body.message.as_deref(),
                    "the execution failed",
                ));
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
                    Reason::UpstreamProtocolError,
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

impl Dialect for KnoudsDialect {
    const KIND: ProviderKind = ProviderKind::Knouds;
    const DEFAULT_BASE_URL: &'static str = "https://knouds.ai";
    /// Sync runs take "up to a few minutes".
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
    const AUTH: Auth = Auth::Header(HeaderName::from_static("x-api-key"));
    const ASYNC_MODE: AsyncMode = AsyncMode::Polled;
    /// Webhooks are signed with the provider's configured secret.
    const CONFIGURED_WEBHOOK_SECRET: bool = true;
    /// Execution ids are UUIDs (see [`Dialect::accepts_run_id`]).
    const RUN_LOOKUP: Option<RunLookup> = Some(RunLookup {
        path: &["api", "executions"],
        resource_type: "knouds.execution",
        not_found_reason: "EXECUTION_NOT_FOUND",
        id_name: "Knouds execution id",
    });

    /// `executionId` is documented as a UUID (`8-4-4-4-12` hex digits,
    /// either case); nothing else is polled.
    fn accepts_run_id(id: &str) -> bool {
        id.len() == 36
            && id.bytes().enumerate().all(|(at, b)| match at {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_hexdigit(),
            })
    }

    /// The slug.
    fn check_workflow_key(key: &str) -> Result<(), String> {
        if is_valid_slug(key) {
            Ok(())
        } else {
            Err(
                "a Knouds workflow key is the slug (lowercase letters, digits, single hyphens)"
                    .into(),
            )
        }
    }

    fn validate(&self, _: &ProviderSettings, invocation: &Invocation) -> Vec<FieldViolation> {
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

    fn invoke_request<'a>(
        &self,
        _: &'a ProviderSettings,
        invocation: &'a Invocation,
    ) -> Result<Request<'a>, GatewayError> {
        let WorkflowRef::Slug(slug) = &invocation.workflow else {
            return Err(GatewayError::internal(
                "knouds provider given a non-slug target",
            ));
        };
        let query = invocation.async_delivery.is_some().then_some("async=true");
        let body = RunRequest {
            inputs: &invocation.inputs,
        };
        Ok(Request::post_json(vec!["api", "workflows", slug, "run"], &body)?.with_query(query))
    }

    fn decode_success(
        &self,
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        workflow: &WorkflowRef,
    ) -> Result<RunOutcome, GatewayError> {
        self.decode_response(settings, response, workflow)
    }

    fn decode_error(
        &self,
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        workflow: &WorkflowRef,
    ) -> Result<RunOutcome, GatewayError> {
        self.error_table(settings, response, workflow)
    }

    fn decode_status(
        &self,
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        run_id: &str,
    ) -> Result<RunOutcome, GatewayError> {
        self.decode_execution_response(settings, response, run_id)
    }

    fn schema_request<'a>(
        &self,
        workflow: &'a WorkflowRef,
    ) -> Option<Result<Request<'a>, GatewayError>> {
        Some(match workflow {
            WorkflowRef::Slug(slug) => Ok(Request::get(vec!["api", "workflows", slug, "schema"])),
            _ => Err(GatewayError::internal(
                "knouds provider given a non-slug target",
            )),
        })
    }

    fn decode_schema(
        &self,
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        workflow: &WorkflowRef,
    ) -> Result<WorkflowSchema, GatewayError> {
        self.decode_schema_response(settings, response, workflow)
    }
}

#[cfg(test)]
mod tests;
