//! Fetch Hive: workflows addressed by deployment + variant.
//!
//! `POST {base}/workflow/invoke` with `Authorization: Bearer fhk_…` and
//! `{"deployment", "variant", "inputs"?, "metadata"?, "user"?, "async"?}`.
//! Two documented success shapes are accepted: the REST docs'
//! `{request_id, run_status, output | webhook_secret}` and the SDK OpenAPI's
//! `{request_id, run_id, status, output, error}`, with HTTP 200 or 202.
//! Errors are `{"error", "message"?, "error_code"?}`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use flowgate_core::{
    Deadline, ErrorClass, FieldViolation, GatewayError, Invocation, Provider, ProviderKind,
    RunOutcome, RunStatus, SecretString, WorkflowRef, decode_output,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
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

/// A configured Fetch Hive provider.
#[derive(Debug)]
pub struct FetchHive {
    settings: ProviderSettings,
    http: HttpClient,
    base: BaseUrl,
    auth: (HeaderName, HeaderValue),
}

#[derive(Serialize)]
struct InvokeBody<'a> {
    deployment: &'a str,
    variant: &'a str,
    #[serde(skip_serializing_if = "Map::is_empty")]
    inputs: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    metadata: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(rename = "async", skip_serializing_if = "Option::is_none")]
    async_delivery: Option<AsyncBody<'a>>,
}

#[derive(Serialize)]
struct AsyncBody<'a> {
    enabled: bool,
    callback_url: &'a str,
}

/// `GET {base}/workflow_runs/{id}`: `{"workflow_run": {…}}` (a bare run
/// object is accepted too).
#[derive(Deserialize)]
struct WorkflowRunEnvelope {
    workflow_run: Option<WorkflowRunBody>,
}

#[derive(Deserialize)]
struct WorkflowRunBody {
    id: Option<Value>,
    run_status: Option<String>,
    status: Option<String>,
    output_content: Option<Value>,
    output: Option<Value>,
    error_message: Option<Value>,
    error: Option<Value>,
    /// Usage: numbers or numeric strings; unreadable ones are dropped.
    #[serde(default, deserialize_with = "lenient::seconds")]
    duration: Option<Duration>,
    #[serde(default, deserialize_with = "lenient::credits")]
    total_charge: Option<f64>,
    #[serde(default, deserialize_with = "lenient::count")]
    total_tokens: Option<u64>,
}

/// Both documented success shapes, every field optional.
#[derive(Deserialize)]
struct RunBody {
    request_id: Option<Value>,
    run_id: Option<Value>,
    run_status: Option<String>,
    status: Option<String>,
    output: Option<Value>,
    error: Option<Value>,
    webhook_secret: Option<String>,
}

impl FetchHive {
    /// A provider for `settings` (kind `fetchhive`).
    pub fn new(settings: ProviderSettings, http: HttpClient) -> Self {
        let base = BaseUrl::parse(&settings.base_url);
        let auth = auth_header(header::AUTHORIZATION, "Bearer ", &settings);
        Self {
            settings,
            http,
            base,
            auth,
        }
    }

    fn variant<'a>(&'a self, variant: &'a Option<String>) -> Option<&'a str> {
        variant
            .as_deref()
            .filter(|variant| !variant.is_empty())
            .or(self.settings.default_variant.as_deref())
    }

    /// The JSON body sent for `invocation` (public for request-shape tests).
    pub fn request_body(&self, invocation: &Invocation) -> Result<Vec<u8>, GatewayError> {
        let WorkflowRef::Deployment { name, variant } = &invocation.workflow else {
            return Err(GatewayError::internal(
                "fetchhive provider given a non-deployment target",
            ));
        };
        let variant = self
            .variant(variant)
            .ok_or_else(|| GatewayError::invalid_argument(vec![missing_variant()]))?;
        let body = InvokeBody {
            deployment: name,
            variant,
            inputs: &invocation.inputs,
            metadata: &invocation.metadata,
            user: invocation.user.as_deref(),
            async_delivery: invocation.async_delivery.as_ref().and_then(|delivery| {
                delivery
                    .callback_url
                    .as_deref()
                    .map(|callback_url| AsyncBody {
                        enabled: true,
                        callback_url,
                    })
            }),
        };
        serde_json::to_vec(&body)
            .map_err(|err| GatewayError::internal(format!("encoding the request: {err}")))
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
            return Err(self.decode_error(response, workflow));
        }
        let Ok(run) = serde_json::from_slice::<RunBody>(&response.body) else {
            return Err(protocol_error(
                &self.settings,
                response,
                "a body that is not a run object",
            ));
        };
        let word = run.run_status.as_deref().or(run.status.as_deref());
        let status = match word.map(RunStatus::parse_upstream) {
            Some(Some(status)) => status,
            Some(None) => {
                return Err(protocol_error(
                    &self.settings,
                    response,
                    "an unknown run status",
                ));
            }
            // No status word: infer it from what the body carries.
            None if run.output.is_some() => RunStatus::Completed,
            None if run.webhook_secret.is_some() => RunStatus::Running,
            None if run.error.is_some() => RunStatus::Failed,
            None => {
                return Err(protocol_error(&self.settings, response, "no run status"));
            }
        };
        let request_id = run.request_id.as_ref().and_then(id_text);
        let upstream_run_id = run
            .run_id
            .as_ref()
            .and_then(id_text)
            .or_else(|| request_id.clone());
        let error = match (status, run.error) {
            (RunStatus::Failed, error) => Some(run_error(error, &self.settings)),
            (_, _) => None,
        };
        Ok(RunOutcome {
            upstream_run_id,
            upstream_request_id: request_id.or_else(|| response.request_id()),
            status: Some(status),
            output: run
                .output
                .filter(|output| !output.is_null())
                .map(decode_output),
            citations: Vec::new(),
            usage: Default::default(),
            webhook_secret: run.webhook_secret.map(SecretString::new),
            error,
            rate_limit: response.rate_limit.clone(),
        })
    }

    /// Decodes `GET /workflow_runs/{id}` (public for decoder tests).
    pub fn decode_workflow_run(
        &self,
        status: u16,
        headers: HeaderMap,
        body: Bytes,
        run_id: &str,
    ) -> Result<RunOutcome, GatewayError> {
        self.decode_workflow_run_response(&UpstreamResponse::new(status, headers, body), run_id)
    }

    fn decode_workflow_run_response(
        &self,
        response: &UpstreamResponse,
        run_id: &str,
    ) -> Result<RunOutcome, GatewayError> {
        if response.status == 404 {
            return Err(run_not_found(
                &self.settings,
                response,
                "not_found",
                "fetchhive.workflow_run",
                run_id,
            ));
        }
        if response.status != 200 {
            let workflow = WorkflowRef::Deployment {
                name: run_id.to_owned(),
                variant: None,
            };
            return Err(self.decode_error(response, &workflow));
        }
        let run = match serde_json::from_slice::<WorkflowRunEnvelope>(&response.body) {
            Ok(WorkflowRunEnvelope {
                workflow_run: Some(run),
            }) => run,
            _ => match serde_json::from_slice::<WorkflowRunBody>(&response.body) {
                Ok(run) => run,
                Err(_) => {
                    return Err(protocol_error(
                        &self.settings,
                        response,
                        "a body that is not a workflow run",
                    ));
                }
            },
        };
        let Some(status) = run
            .run_status
            .as_deref()
            .or(run.status.as_deref())
            .and_then(RunStatus::parse_upstream)
        else {
            return Err(protocol_error(
                &self.settings,
                response,
                "an unknown run status",
            ));
        };
        let error = run
            .error_message
            .or(run.error)
            .filter(|error| !error.is_null());
        Ok(RunOutcome {
            upstream_run_id: run
                .id
                .as_ref()
                .and_then(id_text)
                .or_else(|| Some(run_id.to_owned())),
            upstream_request_id: None,
            status: Some(status),
            output: run
                .output_content
                .or(run.output)
                .filter(|output| !output.is_null() && status == RunStatus::Completed)
                .map(decode_output),
            error: (status == RunStatus::Failed).then(|| run_error(error, &self.settings)),
            usage: flowgate_core::Usage {
                credits: run.total_charge,
                duration: run.duration,
                tokens: run.total_tokens,
            },
            rate_limit: response.rate_limit.clone(),
            ..RunOutcome::default()
        })
    }

    /// Fetch Hive's documented errors, then the shared fallback.
    fn decode_error(&self, response: &UpstreamResponse, workflow: &WorkflowRef) -> GatewayError {
        let settings = &self.settings;
        let body = ErrorBody::parse(&response.body);
        let code = body.code.as_deref().unwrap_or_default();
        let text = body
            .message
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let message = describe(settings, response, &body);
        let reason = |default: &str| body.code.clone().unwrap_or_else(|| default.to_owned());
        match response.status {
            401 => credential_rejected(settings, response),
            404 => upstream_error(settings, response, ErrorClass::NotFound, reason("not_found"), message)
                .with_resource("fetchhive.deployment", workflow.label()),
            400 | 422
                if code == "callback_required"
                    || text.contains("human in the loop")
                    || text.contains("callback delivery") =>
            {
                upstream_error(settings, response, ErrorClass::FailedPrecondition, reason("callback_required"), message)
                    .with_precondition(
                        "MODE",
                        workflow.label(),
                        "workflows with a Human-in-the-Loop step must be invoked with async_options.enabled and a callback_url",
                    )
            }
            402 => upstream_error(settings, response, ErrorClass::QuotaExhausted, reason("insufficient_credits"), message),
            422 if code.contains("credit") || text.contains("credit") => {
                upstream_error(settings, response, ErrorClass::QuotaExhausted, reason("insufficient_credits"), message)
            }
            422 if code.contains("plan") || text.contains("plan limit") => {
                upstream_error(settings, response, ErrorClass::FailedPrecondition, reason("plan_limit"), message)
                    .with_precondition("PLAN", format!("provider:{}", settings.name), "the Fetch Hive plan does not allow this call")
            }
            400 | 422 if body.object.is_some() => {
                let field = if text.contains("metadata") {
                    "metadata"
                } else if text.contains("deployment") || text.contains("variant") {
                    "target.deployment"
                } else {
                    "inputs"
                };
                let description = body
                    .message
                    .as_deref()
                    .map(|m| safe_message(settings, m))
                    .unwrap_or_else(|| "rejected by Fetch Hive".to_owned());
                upstream_error(settings, response, ErrorClass::InvalidArgument, reason("invalid_request"), message)
                    .with_violations(vec![FieldViolation::new(field, description)])
            }
            429 => {
                let concurrency = code.contains("concurren") || text.contains("concurren");
                let error = upstream_error(
                    settings,
                    response,
                    ErrorClass::RateLimited,
                    reason(if concurrency {
                        "concurrency_limit_exceeded"
                    } else {
                        "api_rate_limit_exceeded"
                    }),
                    message,
                );
                if concurrency {
                    error
                } else {
                    // The daily cap resets at midnight UTC (documented): no
                    // wait beyond it is believed.
                    let midnight = until_midnight_utc(SystemTime::now());
                    let wait = error.retry_after.map_or(midnight, |wait| wait.min(midnight));
                    error.with_retry_after(Some(wait))
                }
            }
            502 if body.object.is_some() => {
                upstream_error(settings, response, ErrorClass::Unavailable, reason("model_provider_error"), message)
            }
            500 if body.object.is_some() => {
                upstream_error(settings, response, ErrorClass::UpstreamFailure, reason("internal_server_error"), message)
            }
            _ => fallback_error(settings, response, &body),
        }
    }
}

fn missing_variant() -> FieldViolation {
    FieldViolation::new(
        "target.deployment.variant",
        "required: Fetch Hive runs a deployment's named variant and this provider has no default_variant",
    )
}

fn until_midnight_utc(now: SystemTime) -> Duration {
    const DAY: u64 = 86_400;
    let seconds = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    Duration::from_secs(DAY - seconds % DAY)
}

#[async_trait]
impl Provider for FetchHive {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::FetchHive
    }

    fn default_variant(&self) -> Option<&str> {
        self.settings.default_variant.as_deref()
    }

    fn validate(&self, invocation: &Invocation) -> Vec<FieldViolation> {
        let mut violations = Vec::new();
        if let WorkflowRef::Deployment { name, variant } = &invocation.workflow {
            if name.trim().is_empty() {
                violations.push(FieldViolation::new(
                    "target.deployment.name",
                    "required: the deployment key",
                ));
            }
            if self.variant(variant).is_none() {
                violations.push(missing_variant());
            }
        }
        if let Some(delivery) = &invocation.async_delivery
            && delivery.callback_url.is_none()
        {
            violations.push(FieldViolation::new(
                "async_options.callback_url",
                "required for async Fetch Hive runs: Fetch Hive delivers the result by signed callback",
            ));
        }
        violations
    }

    async fn invoke(
        &self,
        invocation: &Invocation,
        deadline: Deadline,
    ) -> Result<RunOutcome, GatewayError> {
        let body = self.request_body(invocation)?;
        let request = UpstreamRequest {
            method: Method::POST,
            url: self.base.join(&["workflow", "invoke"], None)?,
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
        // Run ids are integers or `req_…` strings: the shared id shape.
        if !is_upstream_id(upstream_id) {
            return Err(GatewayError::not_found(
                "not_found",
                "fetchhive.workflow_run",
                upstream_id,
                "not a Fetch Hive run id",
            ));
        }
        let request = UpstreamRequest {
            method: Method::GET,
            url: self.base.join(&["workflow_runs", upstream_id], None)?,
            auth: (&self.auth.0, &self.auth.1),
            body: None,
        };
        let response = self.http.send(&self.settings, request, deadline).await?;
        self.decode_workflow_run_response(&response, upstream_id)
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let body: Value =
            serde_json::from_slice(&provider().request_body(&invocation).unwrap()).unwrap();
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
            fh.decode_workflow_run(
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
        let mut settings =
            ProviderSettings::new("fh", ProviderKind::FetchHive, SecretString::new("k"));
        settings.default_variant = Some("default".into());
        let provider = FetchHive::new(settings, HttpClient::new().unwrap());
        let invocation = Invocation::new(deployment(None));
        assert!(provider.validate(&invocation).is_empty());
        let body: Value =
            serde_json::from_slice(&provider.request_body(&invocation).unwrap()).unwrap();
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
            fh.decode_workflow_run(
                200,
                HeaderMap::new(),
                Bytes::from(body.to_string()),
                "req_1",
            )
        };
        let running = decode(json!({"workflow_run": {"id": "req_1", "run_status": "running", "output_content": null}})).unwrap();
        assert_eq!(running.status, Some(RunStatus::Running));
        assert_eq!(running.output, None);
        let done = decode(json!({"workflow_run": {"id": "req_1", "run_status": "completed", "output_content": "{\"a\":1}", "duration": 1.5, "total_charge": 0.01, "total_tokens": 500}})).unwrap();
        assert_eq!(done.output, Some(json!({"a": 1})));
        assert_eq!(done.usage.tokens, Some(500));
        assert_eq!(done.usage.duration, Some(Duration::from_millis(1500)));
        let failed =
            decode(json!({"workflow_run": {"run_status": "failed", "error_message": "boom"}}))
                .unwrap();
        assert_eq!(failed.error.unwrap().message, "boom");
    }
}
