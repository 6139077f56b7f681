//! Fetch Hive: workflows addressed by deployment + variant.
//!
//! `POST {base}/workflow/invoke` with `Authorization: Bearer fhk_…` and
//! `{"deployment", "variant", "inputs"?, "metadata"?, "user"?, "async"?}`.
//! Two documented success shapes are accepted: the REST docs'
//! `{request_id, run_status, output | webhook_secret}` and the SDK OpenAPI's
//! `{request_id, run_id, status, output, error}`, with HTTP 200 or 202.
//! Errors are `{"error", "message"?, "error_code"?}`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowgate_core::{
    AsyncMode, ErrorClass, FieldViolation, GatewayError, Invocation, ProviderKind, RunOutcome,
    RunStatus, SecretString, WorkflowRef, decode_output,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    ProviderSettings,
    dialect::{Auth, Dialect, HttpProvider, Request, RunLookup},
    errors::{
        ErrorBody, credential_rejected, decode_body, describe, fallback_error, protocol_error,
        run_error, safe_message, upstream_error,
    },
    http::UpstreamResponse,
    numbers::{id_text, lenient},
};

/// A configured Fetch Hive provider.
pub type FetchHive = HttpProvider<FetchHiveDialect>;

/// The Fetch Hive dialect (see the module docs).
#[derive(Debug, Default)]
pub struct FetchHiveDialect;

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
    #[serde(default, deserialize_with = "lenient::value")]
    id: Option<Value>,
    run_status: Option<String>,
    status: Option<String>,
    output_content: Option<Value>,
    output: Option<Value>,
    #[serde(default, deserialize_with = "lenient::value")]
    error_message: Option<Value>,
    #[serde(default, deserialize_with = "lenient::value")]
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
    #[serde(default, deserialize_with = "lenient::value")]
    request_id: Option<Value>,
    #[serde(default, deserialize_with = "lenient::value")]
    run_id: Option<Value>,
    run_status: Option<String>,
    status: Option<String>,
    output: Option<Value>,
    #[serde(default, deserialize_with = "lenient::value")]
    error: Option<Value>,
    webhook_secret: Option<String>,
}

fn variant<'a>(settings: &'a ProviderSettings, variant: &'a Option<String>) -> Option<&'a str> {
    variant
        .as_deref()
        .filter(|variant| !variant.is_empty())
        .or(settings.default_variant.as_deref())
}

impl FetchHiveDialect {
    /// The JSON body sent for `invocation`.
    fn request_body(
        settings: &ProviderSettings,
        invocation: &Invocation,
    ) -> Result<Vec<u8>, GatewayError> {
        let WorkflowRef::Deployment { name, variant } = &invocation.workflow else {
            return Err(GatewayError::internal(
                "fetchhive provider given a non-deployment target",
            ));
        };
        let variant = self::variant(settings, variant)
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

    /// Fetch Hive's documented errors, then the shared fallback.
    fn error(
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        workflow: &WorkflowRef,
    ) -> GatewayError {
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

/// A run answer with a success status, in either documented shape.
fn decode_run(
    settings: &ProviderSettings,
    response: &UpstreamResponse,
) -> Result<RunOutcome, GatewayError> {
    let run: RunBody = decode_body(settings, response, "a body that is not a run object")?;
    let word = run.run_status.as_deref().or(run.status.as_deref());
    let status = match word.map(RunStatus::parse_upstream) {
        Some(Some(status)) => status,
        Some(None) => {
            return Err(protocol_error(settings, response, "an unknown run status"));
        }
        // No status word: infer it from what the body carries.
        None if run.output.is_some() => RunStatus::Completed,
        None if run.webhook_secret.is_some() => RunStatus::Running,
        None if run.error.is_some() => RunStatus::Failed,
        None => {
            return Err(protocol_error(settings, response, "no run status"));
        }
    };
    let request_id = run.request_id.as_ref().and_then(id_text);
    let upstream_run_id = run
        .run_id
        .as_ref()
        .and_then(id_text)
        .or_else(|| request_id.clone());
    let error = match (status, run.error) {
        (RunStatus::Failed, error) => Some(run_error(error, settings)),
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

/// `GET /workflow_runs/{id}` answered 200.
fn decode_workflow_run(
    settings: &ProviderSettings,
    response: &UpstreamResponse,
    run_id: &str,
) -> Result<RunOutcome, GatewayError> {
    let run = match serde_json::from_slice::<WorkflowRunEnvelope>(&response.body) {
        Ok(WorkflowRunEnvelope {
            workflow_run: Some(run),
        }) => run,
        _ => match serde_json::from_slice::<WorkflowRunBody>(&response.body) {
            Ok(run) => run,
            Err(_) => {
                return Err(protocol_error(
                    settings,
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
        return Err(protocol_error(settings, response, "an unknown run status"));
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
        error: (status == RunStatus::Failed).then(|| run_error(error, settings)),
        usage: flowgate_core::Usage {
            credits: run.total_charge,
            duration: run.duration,
            tokens: run.total_tokens,
        },
        rate_limit: response.rate_limit.clone(),
        ..RunOutcome::default()
    })
}

impl Dialect for FetchHiveDialect {
    const KIND: ProviderKind = ProviderKind::FetchHive;
    const DEFAULT_BASE_URL: &'static str = "https://api.fetchhive.com/v1";
    /// The SDK's 120 s.
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
    const AUTH: Auth = Auth::Bearer;
    const ASYNC_MODE: AsyncMode = AsyncMode::Callback;
    /// Deployments have variants.
    const HAS_VARIANTS: bool = true;
    /// Run ids are integers or `req_…` strings: the shared id shape.
    const RUN_LOOKUP: Option<RunLookup> = Some(RunLookup {
        path: &["workflow_runs"],
        resource_type: "fetchhive.workflow_run",
        not_found_reason: "not_found",
        id_name: "Fetch Hive run id",
    });

    /// `deployment` or `deployment/variant`.
    fn check_workflow_key(key: &str) -> Result<(), String> {
        if key.split('/').count() <= 2 && key.split('/').all(crate::dialect::is_plain_key) {
            Ok(())
        } else {
            Err("a Fetch Hive workflow key is \"deployment\" or \"deployment/variant\"".into())
        }
    }

    fn validate(
        &self,
        settings: &ProviderSettings,
        invocation: &Invocation,
    ) -> Vec<FieldViolation> {
        let mut violations = Vec::new();
        if let WorkflowRef::Deployment { name, variant } = &invocation.workflow {
            if name.trim().is_empty() {
                violations.push(FieldViolation::new(
                    "target.deployment.name",
                    "required: the deployment key",
                ));
            }
            if self::variant(settings, variant).is_none() {
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

    fn invoke_request<'a>(
        &self,
        settings: &'a ProviderSettings,
        invocation: &'a Invocation,
    ) -> Result<Request<'a>, GatewayError> {
        Ok(Request {
            method: http::Method::POST,
            path: vec!["workflow", "invoke"],
            query: None,
            body: Some(Self::request_body(settings, invocation)?),
        })
    }

    fn decode_success(
        &self,
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        _workflow: &WorkflowRef,
    ) -> Result<RunOutcome, GatewayError> {
        decode_run(settings, response)
    }

    fn decode_error(
        &self,
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        workflow: &WorkflowRef,
    ) -> Result<RunOutcome, GatewayError> {
        Err(Self::error(settings, response, workflow))
    }

    fn decode_status(
        &self,
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        run_id: &str,
    ) -> Result<RunOutcome, GatewayError> {
        if response.status != 200 {
            let workflow = WorkflowRef::Deployment {
                name: run_id.to_owned(),
                variant: None,
            };
            return Err(Self::error(settings, response, &workflow));
        }
        decode_workflow_run(settings, response, run_id)
    }
}

#[cfg(test)]
mod tests;
