//! AI Tutor: workflows addressed by id (`wf_…`).
//!
//! `POST {base}/api/v1/run/{workflow_id}` with `Authorization: Bearer sk_…`;
//! the body is the flat map of the workflow's template variables. Success is
//! `{"success": true, "result", "citations"?}` (an older doc version shows
//! `{success, run_id, status, output}`: both are read). Errors are
//! `{"success": false, "error", "code"?}`; `workflow_run_failed` is a run that
//! ran and failed, so it comes back as a FAILED outcome, not an error.
//!
//! AI Tutor has no async mode upstream; gateway-run async arrives with
//! StreamStatus. Its streaming endpoint serves InvokeStream ([`stream`]).

pub mod stream;

use std::time::Duration;

use flowgate_core::{
    AsyncMode, Deadline, ErrorClass, FieldViolation, GatewayError, Invocation, OutputSink,
    ProviderKind, RunOutcome, RunStatus, WorkflowRef, decode_output, reason::Reason,
};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value;

use crate::{
    ProviderSettings,
    dialect::{Auth, Dialect, HttpProvider, Request, is_plain_key},
    errors::{
        ErrorBody, credential_rejected, decode_body, describe, failed_run, fallback_error,
        protocol_error, upstream_error,
    },
    http::UpstreamResponse,
    numbers::{id_text, lenient},
};

/// Longest accepted workflow id.
const MAX_WORKFLOW_ID: usize = 128;

/// A configured AI Tutor provider.
pub type AiTutor = HttpProvider<AiTutorDialect>;

/// The AI Tutor dialect (see the module docs).
#[derive(Debug, Default)]
pub struct AiTutorDialect;

#[derive(Deserialize)]
struct RunBody {
    success: Option<bool>,
    result: Option<Value>,
    /// Cited URLs; anything but an array of strings is dropped, never
    /// fatal.
    #[serde(default, deserialize_with = "lenient::value")]
    citations: Option<Value>,
    #[serde(default, deserialize_with = "lenient::value")]
    run_id: Option<Value>,
    status: Option<String>,
    output: Option<Value>,
}

impl AiTutorDialect {
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
        let status = match run.status.as_deref().map(RunStatus::parse_upstream) {
            Some(Some(status)) => status,
            Some(None) => {
                return Err(protocol_error(settings, response, "an unknown run status"));
            }
            None => RunStatus::Completed,
        };
        let output = run.result.or(run.output).filter(|output| !output.is_null());
        if status == RunStatus::Completed && output.is_none() {
            return Err(protocol_error(settings, response, "success but no result"));
        }
        let citations = match run.citations {
            Some(Value::Array(citations)) => citations,
            _ => Vec::new(),
        }
        .into_iter()
        .filter_map(|citation| match citation {
            Value::String(url) => Some(url),
            _ => None,
        })
        .collect();
        Ok(RunOutcome {
            upstream_run_id: run.run_id.as_ref().and_then(id_text),
            upstream_request_id: response.request_id(),
            status: Some(status),
            output: output.map(decode_output),
            citations,
            rate_limit: response.rate_limit.clone(),
            ..RunOutcome::default()
        })
    }

    /// AI Tutor's documented codes, then the shared fallback. A failed run
    /// is an outcome.
    fn error_table(
        &self,
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        workflow: &WorkflowRef,
    ) -> Result<RunOutcome, GatewayError> {
        let body = ErrorBody::parse(&response.body);
        let message = describe(settings, response, &body);
        let code = body.code.clone();
        let error = match (response.status, code.as_deref()) {
            (_, Some(code @ "workflow_run_failed")) => {
                return Ok(failed_run(
                    settings,
                    response,
                    code,
                    body.message.as_deref(),
                    "the workflow run failed",
                ));
            }
            (401, _) => credential_rejected(settings, response),
            (_, Some("missing_input")) => {
                let variable = body
                    .message
                    .as_deref()
                    .and_then(|m| m.rsplit_once(':'))
                    .map(|(_, name)| name.trim())
                    .filter(|name| !name.is_empty() && !name.contains(' '));
                let field = variable.map_or("inputs".to_owned(), |name| format!("inputs.{name}"));
                upstream_error(
                    settings,
                    response,
                    ErrorClass::InvalidArgument,
                    "missing_input",
                    message,
                )
                .with_violations(vec![FieldViolation::new(
                    field,
                    "required by the workflow template",
                )])
            }
            (_, Some("invalid_billing")) | (402, _) => upstream_error(
                settings,
                response,
                ErrorClass::QuotaExhausted,
                code.unwrap_or_else(|| "invalid_billing".into()),
                message,
            ),
            (_, Some("workflow_not_found")) | (404, _) if body.object.is_some() => upstream_error(
                settings,
                response,
                ErrorClass::NotFound,
                code.unwrap_or_else(|| "workflow_not_found".into()),
                message,
            )
            .with_resource("aitutor.workflow", workflow.label()),
            (_, Some("request_blocked")) => upstream_error(
                settings,
                response,
                ErrorClass::PermissionDenied,
                "request_blocked",
                message,
            ),
            (429, _) => {
                let error = upstream_error(
                    settings,
                    response,
                    ErrorClass::RateLimited,
                    code.unwrap_or_else(|| "rate_limited".into()),
                    message,
                );
                // A per-second sliding window: one second always helps.
                match error.retry_after {
                    Some(_) => error,
                    None => error.with_retry_after(Some(Duration::from_secs(1))),
                }
            }
            (500, _) if body.object.is_some() => upstream_error(
                settings,
                response,
                ErrorClass::UpstreamFailure,
                code.unwrap_or_else(|| "internal_server_error".into()),
                message,
            ),
            (200, _) => upstream_error(
                settings,
                response,
                ErrorClass::ProtocolError,
                Reason::UpstreamProtocolError,
                format!("{message} (success: false without a known code)"),
            ),
            _ => fallback_error(settings, response, &body),
        };
        Err(error)
    }
}

impl Dialect for AiTutorDialect {
    const KIND: ProviderKind = ProviderKind::AiTutor;
    const DEFAULT_BASE_URL: &'static str = "https://aitutor-api.vercel.app";
    /// The documented 300 s plus a margin.
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(310);
    const AUTH: Auth = Auth::Bearer;
    const ASYNC_MODE: AsyncMode = AsyncMode::Background;

    /// The workflow id.
    fn check_workflow_key(key: &str) -> Result<(), String> {
        if is_plain_key(key) {
            Ok(())
        } else {
            Err("an AI Tutor workflow key is the workflow id (wf_…)".into())
        }
    }

    fn validate(&self, _: &ProviderSettings, invocation: &Invocation) -> Vec<FieldViolation> {
        let mut violations = Vec::new();
        if let WorkflowRef::WorkflowId(id) = &invocation.workflow {
            let well_formed = !id.is_empty()
                && id.len() <= MAX_WORKFLOW_ID
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !well_formed {
                violations.push(FieldViolation::new(
                    "target.workflow_id",
                    format!(
                        "must be 1 to {MAX_WORKFLOW_ID} letters, digits, '_' or '-' (for example wf_abc123)"
                    ),
                ));
            }
        }
        violations
    }

    fn invoke_request<'a>(
        &self,
        _: &'a ProviderSettings,
        invocation: &'a Invocation,
    ) -> Result<Request<'a>, GatewayError> {
        let WorkflowRef::WorkflowId(id) = &invocation.workflow else {
            return Err(GatewayError::internal(
                "aitutor provider given a non-workflow_id target",
            ));
        };
        if invocation.async_delivery.is_some() {
            // The run tracker runs AI Tutor workflows in the background
            // synchronously; an async request reaching the dialect is a bug.
            return Err(GatewayError::internal(
                "AI Tutor has no async mode upstream: async runs must go through the run tracker",
            ));
        }
        Request::post_json(vec!["api", "v1", "run", id], &invocation.inputs)
    }

    fn invoke_stream<'a>(
        provider: &'a AiTutor,
        invocation: &'a Invocation,
        deadline: Deadline,
        sink: &'a OutputSink,
    ) -> BoxFuture<'a, Result<RunOutcome, GatewayError>> {
        Box::pin(stream::invoke(provider, invocation, deadline, sink))
    }

    /// Only 200 is a success answer.
    fn is_success(status: u16) -> bool {
        status == 200
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HttpClient;
    use bytes::Bytes;
    use flowgate_core::SecretString;
    use http::HeaderMap;
    use serde_json::json;

    fn decode(status: u16, body: Value) -> Result<RunOutcome, GatewayError> {
        let settings =
            ProviderSettings::new("tutor", ProviderKind::AiTutor, SecretString::new("sk_x"));
        AiTutor::new(settings, HttpClient::new().unwrap()).decode(
            status,
            HeaderMap::new(),
            Bytes::from(body.to_string()),
            &WorkflowRef::WorkflowId("wf_1".into()),
        )
    }

    #[test]
    fn result_and_citations() {
        let outcome = decode(
            200,
            json!({"success": true, "result": "[1,2]", "citations": ["https://a"]}),
        )
        .unwrap();
        assert_eq!(outcome.output, Some(json!([1, 2])));
        assert_eq!(outcome.citations, vec!["https://a"]);
        assert_eq!(outcome.status, Some(RunStatus::Completed));
    }

    #[test]
    fn older_shape_is_read() {
        let outcome = decode(200, json!({"success": true, "run_id": "r1", "status": "completed", "output": {"text": "hi"}})).unwrap();
        assert_eq!(outcome.upstream_run_id.as_deref(), Some("r1"));
        assert_eq!(outcome.output, Some(json!({"text": "hi"})));
    }

    #[test]
    fn missing_input_names_the_variable() {
        let error = decode(
            400,
            json!({"success": false, "error": "Missing input: story", "code": "missing_input"}),
        )
        .unwrap_err();
        assert_eq!(error.class, ErrorClass::InvalidArgument);
        assert_eq!(error.violations[0].field, "inputs.story");
    }

    #[test]
    fn failed_run_is_an_outcome() {
        let outcome = decode(
            500,
            json!({"success": false, "error": "boom", "code": "workflow_run_failed"}),
        )
        .unwrap();
        assert_eq!(outcome.status, Some(RunStatus::Failed));
        assert_eq!(outcome.error.unwrap().code, "workflow_run_failed");
    }

    #[test]
    fn success_false_on_200_is_an_error() {
        let error = decode(
            200,
            json!({"success": false, "error": "No credits", "code": "invalid_billing"}),
        )
        .unwrap_err();
        assert_eq!(error.class, ErrorClass::QuotaExhausted);
        let error = decode(200, json!({"success": false})).unwrap_err();
        assert_eq!(error.class, ErrorClass::ProtocolError);
    }

    #[test]
    fn rate_limit_always_says_when() {
        let error = decode(429, json!({"success": false, "error": "slow down"})).unwrap_err();
        assert_eq!(error.class, ErrorClass::RateLimited);
        assert_eq!(error.retry_after, Some(Duration::from_secs(1)));
    }
}
