//! Fetch Hive dialect: `deployment` + `variant` invocations under
//! `/fetchhive/v1`, Bearer keys, a daily cap plus a per-key concurrency cap,
//! async runs delivered to `callback_url` signed with `X-Fetch-Hive-Signature`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use http::header::RETRY_AFTER;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use crate::callbacks::CallbackSignature;
use crate::keys;
use crate::ratelimit::{DailyQuota, RateDecision, next_midnight_utc};
use crate::recording::Dialect;
use crate::server::Shared;
use crate::util::{
    BoundedStore, Rejection, STORE_CAPACITY, bearer, json_response, lock, random_hex, rfc3339,
    with_headers,
};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/fetchhive/v1/workflow/invoke", post(invoke))
        .route("/fetchhive/v1/workflow_runs/{id}", get(workflow_run))
        .route("/fetchhive/v1/public/requests/{id}", get(public_request))
}

/// A Fetch Hive error body: `{"error", "error_code"?}`.
pub(crate) fn error(status: StatusCode, message: &str, code: Option<&str>) -> Response {
    reject(status, message, code).into_response()
}

fn reject(status: StatusCode, message: &str, code: Option<&str>) -> Rejection {
    let mut body = json!({ "error": message });
    if let Some(code) = code {
        body["error_code"] = json!(code);
    }
    Rejection { status, body }
}

/// A 422 validation error with `error_code`.
fn invalid(message: impl AsRef<str>, code: &str) -> Rejection {
    reject(
        StatusCode::UNPROCESSABLE_ENTITY,
        message.as_ref(),
        Some(code),
    )
}

/// Per-key counters and the run store.
#[derive(Debug)]
pub(crate) struct FetchHiveState {
    quota: DailyQuota,
    sync_in_flight: Arc<Mutex<HashMap<&'static str, u32>>>,
    async_in_flight: Mutex<HashMap<&'static str, u32>>,
    runs: Mutex<BoundedStore<Run>>,
}

impl FetchHiveState {
    pub(crate) fn new() -> Self {
        Self {
            quota: DailyQuota::default(),
            sync_in_flight: Arc::default(),
            async_in_flight: Mutex::default(),
            runs: Mutex::new(BoundedStore::new(STORE_CAPACITY)),
        }
    }
}

/// A seeded API key.
#[derive(Clone, Copy, Debug)]
struct ApiKey {
    id: &'static str,
    has_credits: bool,
}

fn authenticate(headers: &HeaderMap) -> Option<ApiKey> {
    match bearer(headers)? {
        keys::FETCHHIVE_KEY => Some(ApiKey {
            id: keys::FETCHHIVE_KEY,
            has_credits: true,
        }),
        keys::FETCHHIVE_KEY_NO_CREDITS => Some(ApiKey {
            id: keys::FETCHHIVE_KEY_NO_CREDITS,
            has_credits: false,
        }),
        _ => None,
    }
}

/// Authenticates and counts the request against the daily cap, then runs `handle`.
fn gated(
    shared: &Shared,
    headers: &HeaderMap,
    handle: impl FnOnce(ApiKey) -> Response,
) -> Response {
    let limit = shared.config.fetchhive_daily_limit;
    let Some(key) = authenticate(headers) else {
        let untouched = RateDecision::untouched(limit, next_midnight_utc());
        return with_headers(
            error(StatusCode::UNAUTHORIZED, "Invalid API key", None),
            &untouched.headers(),
        );
    };
    let rate = shared.fetchhive.quota.hit(key.id, limit);
    rate.respond(
        &rate.headers(),
        rate.retry_after_secs,
        || {
            error(
                StatusCode::TOO_MANY_REQUESTS,
                "Daily API rate limit exceeded",
                Some("api_rate_limit_exceeded"),
            )
        },
        || handle(key),
    )
}

/// Type of a variable declared on a deployment's Start step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InputType {
    Text,
    Array,
}

#[derive(Debug)]
struct StartInput {
    name: &'static str,
    kind: InputType,
    required: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Summarize,
    ExtractCompanies,
    HumanInTheLoop,
    FailingStep,
    ModelOutage,
}

#[derive(Debug)]
struct Deployment {
    name: &'static str,
    variants: &'static [&'static str],
    inputs: &'static [StartInput],
    behaviour: Behaviour,
}

const DEPLOYMENTS: &[Deployment] = &[
    Deployment {
        name: "summarize",
        variants: &["default", "concise"],
        inputs: &[StartInput {
            name: "topic",
            kind: InputType::Text,
            required: true,
        }],
        behaviour: Behaviour::Summarize,
    },
    Deployment {
        name: "company-extractor",
        variants: &["default"],
        inputs: &[StartInput {
            name: "companies",
            kind: InputType::Array,
            required: true,
        }],
        behaviour: Behaviour::ExtractCompanies,
    },
    Deployment {
        name: "approval-flow",
        variants: &["default"],
        inputs: &[],
        behaviour: Behaviour::HumanInTheLoop,
    },
    Deployment {
        name: "failing-flow",
        variants: &["default"],
        inputs: &[],
        behaviour: Behaviour::FailingStep,
    },
    Deployment {
        name: "model-outage",
        variants: &["default"],
        inputs: &[],
        behaviour: Behaviour::ModelOutage,
    },
];

/// Lifecycle of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunStatus {
    Queued,
    Running,
    Completed,
    Failed,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
        }
    }
}

/// How a run ends (decided deterministically at submission).
#[derive(Clone, Debug)]
enum RunOutcome {
    Completed(Value),
    Failed(String),
}

#[derive(Debug)]
struct Run {
    key: &'static str,
    status: RunStatus,
    outcome: RunOutcome,
    started: SystemTime,
    ended: Option<SystemTime>,
    total_tokens: u64,
}

impl Run {
    fn output(&self) -> Value {
        match (&self.outcome, self.status) {
            (RunOutcome::Completed(v), RunStatus::Completed) => v.clone(),
            _ => Value::Null,
        }
    }

    fn error(&self) -> Value {
        match (&self.outcome, self.status) {
            (RunOutcome::Failed(e), RunStatus::Failed) => json!(e),
            _ => Value::Null,
        }
    }
}

/// The validated parts of an invoke body.
#[derive(Debug)]
struct Invocation {
    deployment: &'static Deployment,
    variant: String,
    inputs: Map<String, Value>,
    callback_url: Option<String>,
}

fn parse_invocation(body: &[u8]) -> Result<Invocation, Rejection> {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return Err(invalid(
            "Request body must be a JSON object",
            "invalid_request",
        ));
    };
    let (Some(Value::String(deployment)), Some(Value::String(variant))) =
        (body.get("deployment"), body.get("variant"))
    else {
        return Err(reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Missing required field: deployment or variant",
            None,
        ));
    };
    if deployment.is_empty() || variant.is_empty() {
        return Err(reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Missing required field: deployment or variant",
            None,
        ));
    }
    let inputs = match body.get("inputs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(invalid("inputs must be an object", "invalid_request")),
    };
    match body.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            if let Some((k, _)) = m.iter().find(|(_, v)| v.is_object() || v.is_array()) {
                return Err(invalid(
                    format!(
                        "metadata must be flat: value of '{k}' must be a string, number, boolean or null"
                    ),
                    "invalid_metadata",
                ));
            }
        }
        Some(_) => {
            return Err(invalid(
                "metadata must be flat: expected an object of scalar values",
                "invalid_metadata",
            ));
        }
    }
    if body
        .get("user")
        .is_some_and(|u| !u.is_string() && !u.is_null())
    {
        return Err(invalid("user must be a string", "invalid_request"));
    }
    let callback_url = match body.get("async") {
        None | Some(Value::Null) => None,
        Some(Value::Object(a)) => match a.get("enabled") {
            Some(Value::Bool(false)) => None,
            Some(Value::Bool(true)) => match a.get("callback_url") {
                Some(Value::String(url))
                    if url.starts_with("http://") || url.starts_with("https://") =>
                {
                    Some(url.clone())
                }
                Some(Value::String(url)) if !url.is_empty() => {
                    return Err(invalid(
                        "async.callback_url must be an absolute http(s) URL",
                        "invalid_request",
                    ));
                }
                _ => {
                    return Err(invalid(
                        "async.callback_url is required when async is enabled",
                        "invalid_request",
                    ));
                }
            },
            _ => {
                return Err(invalid(
                    "async.enabled must be a boolean",
                    "invalid_request",
                ));
            }
        },
        Some(_) => return Err(invalid("async must be an object", "invalid_request")),
    };
    let Some(deployment) = DEPLOYMENTS
        .iter()
        .find(|d| d.name == deployment && d.variants.contains(&variant.as_str()))
    else {
        return Err(reject(
            StatusCode::NOT_FOUND,
            "Deployment not found",
            Some("not_found"),
        ));
    };
    for input in deployment.inputs {
        match (inputs.get(input.name), input.kind) {
            (None | Some(Value::Null), _) if input.required => {
                return Err(invalid(
                    format!("Missing required input: {}", input.name),
                    "invalid_request",
                ));
            }
            (None | Some(Value::Null), _) | (Some(Value::String(_)), InputType::Text) => {}
            (Some(Value::Array(_)), InputType::Array) => {}
            (Some(_), InputType::Text) => {
                return Err(invalid(
                    format!("Input '{}' must be text (a string)", input.name),
                    "invalid_request",
                ));
            }
            (Some(_), InputType::Array) => {
                return Err(invalid(
                    format!("Input '{}' must be a JSON array", input.name),
                    "invalid_request",
                ));
            }
        }
    }
    Ok(Invocation {
        deployment,
        variant: variant.clone(),
        inputs,
        callback_url,
    })
}

/// The deterministic result of running `inv`.
fn execute(inv: &Invocation) -> RunOutcome {
    match inv.deployment.behaviour {
        Behaviour::Summarize => {
            let topic = inv
                .inputs
                .get("topic")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let text = if inv.variant == "concise" {
                format!("Summary (concise) of {topic}: in short, {topic} matters.")
            } else {
                format!(
                    "Summary ({}) of {topic}: {topic} is moving from experimentation to operational systems with stricter evaluation, governance, and tooling.",
                    inv.variant
                )
            };
            RunOutcome::Completed(json!(text))
        }
        Behaviour::ExtractCompanies => {
            let names: Vec<String> = inv
                .inputs
                .get("companies")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .map(|c| match c {
                            Value::String(s) => s.clone(),
                            other => other
                                .get("name")
                                .and_then(Value::as_str)
                                .map_or_else(|| other.to_string(), str::to_owned),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let count = names.len();
            // The output is a string holding JSON, as Fetch Hive returns it.
            RunOutcome::Completed(json!(
                json!({ "companies": names, "count": count }).to_string()
            ))
        }
        Behaviour::HumanInTheLoop => RunOutcome::Completed(json!("approved")),
        Behaviour::FailingStep => {
            RunOutcome::Failed("Step 2 (LLM) failed: model returned no content".to_owned())
        }
        Behaviour::ModelOutage => RunOutcome::Failed("Model provider failed".to_owned()),
    }
}

/// Releases a synchronous concurrency slot when the answer is gone.
#[derive(Debug)]
struct SyncSlot {
    counters: Arc<Mutex<HashMap<&'static str, u32>>>,
    key: &'static str,
}

impl Drop for SyncSlot {
    fn drop(&mut self) {
        if let Some(n) = lock(&self.counters).get_mut(self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

fn acquire_sync_slot(shared: &Shared, key: &'static str) -> Option<SyncSlot> {
    let counters = &shared.fetchhive.sync_in_flight;
    let mut map = lock(counters);
    let n = map.entry(key).or_insert(0);
    if *n >= shared.config.fetchhive_concurrency_limit {
        return None;
    }
    *n += 1;
    Some(SyncSlot {
        counters: counters.clone(),
        key,
    })
}

fn new_request_id() -> String {
    format!("req_{}", random_hex(16))
}

fn token_estimate(inv: &Invocation) -> u64 {
    let chars = Value::Object(inv.inputs.clone()).to_string().len() as u64;
    40 + chars / 4
}

async fn invoke(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    gated(&shared, &headers, |key| {
        invoke_authenticated(&shared, key, &body)
    })
}

fn invoke_authenticated(shared: &Arc<Shared>, key: ApiKey, body: &[u8]) -> Response {
    let inv = match parse_invocation(body) {
        Ok(inv) => inv,
        Err(rejection) => return rejection.into_response(),
    };
    if !key.has_credits {
        return error(
            StatusCode::PAYMENT_REQUIRED,
            "Insufficient credits",
            Some("insufficient_credits"),
        );
    }
    match inv.callback_url.clone() {
        None => invoke_sync(shared, key, &inv),
        Some(url) => invoke_async(shared, key, &inv, url),
    }
}

fn store_run(shared: &Shared, id: &str, run: Run) {
    lock(&shared.fetchhive.runs).insert(id.to_owned(), run);
}

fn invoke_sync(shared: &Shared, key: ApiKey, inv: &Invocation) -> Response {
    if inv.deployment.behaviour == Behaviour::HumanInTheLoop {
        return invalid(
            "Workflows with a Human in the Loop step must use callback delivery",
            "callback_required",
        )
        .into_response();
    }
    let Some(slot) = acquire_sync_slot(shared, key.id) else {
        let response = error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "Concurrent run limit reached for your plan ({} concurrent runs). Use async mode with a callback_url to queue more runs.",
                shared.config.fetchhive_concurrency_limit
            ),
            Some("concurrency_limit_exceeded"),
        );
        return with_headers(response, &[(RETRY_AFTER, "1".to_owned())]);
    };
    let request_id = new_request_id();
    let outcome = execute(inv);
    let now = SystemTime::now();
    let (status, body) = match &outcome {
        RunOutcome::Completed(output) => (
            RunStatus::Completed,
            json!({ "request_id": request_id, "run_status": "completed", "output": output }),
        ),
        RunOutcome::Failed(e) => (
            RunStatus::Failed,
            json!({ "request_id": request_id, "run_status": "failed", "error": e }),
        ),
    };
    store_run(
        shared,
        &request_id,
        Run {
            key: key.id,
            status,
            outcome,
            started: now,
            ended: Some(now),
            total_tokens: token_estimate(inv),
        },
    );
    let mut response = if inv.deployment.behaviour == Behaviour::ModelOutage {
        error(
            StatusCode::BAD_GATEWAY,
            "Model provider failed",
            Some("model_provider_error"),
        )
    } else {
        json_response(StatusCode::OK, &body, &[])
    };
    // The slot stays taken until the response (and any configured latency) is done.
    response.extensions_mut().insert(Arc::new(slot));
    response
}

fn invoke_async(
    shared: &Arc<Shared>,
    key: ApiKey,
    inv: &Invocation,
    callback_url: String,
) -> Response {
    let request_id = new_request_id();
    let webhook_secret = format!("whsec_{}", random_hex(24));
    let queued = {
        let mut map = lock(&shared.fetchhive.async_in_flight);
        let n = map.entry(key.id).or_insert(0);
        let queued = *n >= shared.config.fetchhive_concurrency_limit;
        *n += 1;
        queued
    };
    let status = if queued {
        RunStatus::Queued
    } else {
        RunStatus::Running
    };
    store_run(
        shared,
        &request_id,
        Run {
            key: key.id,
            status,
            outcome: execute(inv),
            started: SystemTime::now(),
            ended: None,
            total_tokens: token_estimate(inv),
        },
    );
    let task_shared = shared.clone();
    let id = request_id.clone();
    let secret = webhook_secret.clone();
    shared.spawn(async move {
        complete_async(task_shared, key.id, id, queued, callback_url, secret).await;
    });
    json_response(
        StatusCode::OK,
        &json!({ "request_id": request_id, "run_status": status.as_str(), "webhook_secret": webhook_secret }),
        &[],
    )
}

async fn complete_async(
    shared: Arc<Shared>,
    key: &'static str,
    request_id: String,
    queued: bool,
    callback_url: String,
    secret: String,
) {
    let delay = shared.config.async_completion_delay;
    if queued {
        tokio::time::sleep(delay).await;
        if let Some(run) = lock(&shared.fetchhive.runs).get_mut(&request_id) {
            run.status = RunStatus::Running;
        }
    }
    tokio::time::sleep(delay).await;
    if let Some(n) = lock(&shared.fetchhive.async_in_flight).get_mut(key) {
        *n = n.saturating_sub(1);
    }
    let body = {
        let mut runs = lock(&shared.fetchhive.runs);
        let Some(run) = runs.get_mut(&request_id) else {
            return;
        };
        run.ended = Some(SystemTime::now());
        match &run.outcome {
            RunOutcome::Completed(output) => {
                run.status = RunStatus::Completed;
                json!({ "request_id": request_id, "run_status": "completed", "output": output })
            }
            RunOutcome::Failed(e) => {
                run.status = RunStatus::Failed;
                json!({ "request_id": request_id, "run_status": "failed", "output": null, "error": e })
            }
        }
    };
    let signature = CallbackSignature::FetchHive { secret };
    shared
        .callbacks
        .deliver(
            Dialect::FetchHive,
            &callback_url,
            &signature,
            Bytes::from(body.to_string()),
        )
        .await;
}

/// Authenticated lookup of run `id`: `render`ed if it belongs to the caller's key.
fn run_lookup(
    shared: &Shared,
    headers: &HeaderMap,
    id: &str,
    render: impl FnOnce(&str, &Run) -> Value,
) -> Response {
    gated(shared, headers, |key| {
        let runs = lock(&shared.fetchhive.runs);
        match runs.get(id).filter(|r| r.key == key.id) {
            Some(run) => json_response(StatusCode::OK, &render(id, run), &[]),
            None => error(
                StatusCode::NOT_FOUND,
                "Workflow run not found",
                Some("not_found"),
            ),
        }
    })
}

async fn workflow_run(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    run_lookup(&shared, &headers, &id, |id, run| {
        let duration = run
            .ended
            .and_then(|e| e.duration_since(run.started).ok())
            .map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0);
        let finished = run.ended.is_some();
        json!({ "workflow_run": {
            "id": id,
            "run_status": run.status.as_str(),
            "output_content": run.output(),
            "error_message": run.error(),
            "duration": shared.config.usage(json!(duration)),
            "total_charge": if finished { shared.config.usage(json!(run.total_tokens as f64 * 0.00002)) } else { Value::Null },
            "total_tokens": if finished { shared.config.usage(json!(run.total_tokens)) } else { Value::Null },
            "started_at": rfc3339(run.started),
            "ended_at": run.ended.map(rfc3339),
        }})
    })
}

async fn public_request(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    run_lookup(&shared, &headers, &id, |id, run| {
        json!({
            "id": id,
            "request_id": id,
            "run_status": run.status.as_str(),
            "output": run.output(),
            "error": run.error(),
        })
    })
}
