//! Knouds dialect: slug workflows under `/knouds/api`, `x-api-key` keys with
//! capabilities and a plan tier, per-tier windows, typed input schemas,
//! `?async=true` executions with polling, cancellation and signed webhooks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::callbacks::CallbackSignature;
use crate::config::EmulatorConfig;
use crate::keys;
use crate::ratelimit::FixedWindow;
use crate::recording::Dialect;
use crate::server::Shared;
use crate::util::{
    BoundedStore, STORE_CAPACITY, json_response, lock, random_hex, random_uuid, rfc3339,
};

/// How long a cancellation takes to settle after it was requested.
const CANCEL_SETTLE: Duration = Duration::from_millis(50);

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/knouds/api/workflows/{slug}/run", post(run))
        .route("/knouds/api/workflows/{slug}/schema", get(schema))
        .route("/knouds/api/executions/{id}", get(execution))
        .route("/knouds/api/executions/{id}/cancel", post(cancel))
}

/// A Knouds error reply with `body` (`{"error", "code"?, …context}`).
pub(crate) fn error(status: StatusCode, body: Value) -> Response {
    json_response(status, &body, &[])
}

fn coded(status: StatusCode, message: &str, code: &str) -> Response {
    error(status, json!({ "error": message, "code": code }))
}

/// Rate windows and the execution store.
#[derive(Debug)]
pub(crate) struct KnoudsState {
    window: FixedWindow,
    executions: Mutex<BoundedStore<Execution>>,
}

impl KnoudsState {
    pub(crate) fn new(config: &EmulatorConfig) -> Self {
        Self {
            window: FixedWindow::new(config.knouds_window),
            executions: Mutex::new(BoundedStore::new(STORE_CAPACITY)),
        }
    }
}

/// A plan tier; decides the per-window limit and premium-model access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tier {
    Pro,
    Business,
}

impl Tier {
    fn limit(self) -> u32 {
        match self {
            Tier::Pro => 100,
            Tier::Business => 1000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Billing {
    Credits,
    NoCredits,
    TrialExhausted,
}

#[derive(Debug)]
struct ApiKey {
    secret: &'static str,
    capabilities: &'static [&'static str],
    tier: Tier,
    billing: Billing,
}

const FULL: &[&str] = &["workflow:run", "workflow:read", "execution:read"];

const KEYS: &[ApiKey] = &[
    ApiKey {
        secret: keys::KNOUDS_KEY,
        capabilities: FULL,
        tier: Tier::Business,
        billing: Billing::Credits,
    },
    ApiKey {
        secret: keys::KNOUDS_KEY_SCOPED,
        capabilities: &["workflow:summarize-text:run"],
        tier: Tier::Business,
        billing: Billing::Credits,
    },
    ApiKey {
        secret: keys::KNOUDS_KEY_NO_CREDITS,
        capabilities: FULL,
        tier: Tier::Business,
        billing: Billing::NoCredits,
    },
    ApiKey {
        secret: keys::KNOUDS_KEY_TRIAL,
        capabilities: FULL,
        tier: Tier::Pro,
        billing: Billing::TrialExhausted,
    },
    ApiKey {
        secret: keys::KNOUDS_KEY_PRO,
        capabilities: FULL,
        tier: Tier::Pro,
        billing: Billing::Credits,
    },
];

impl ApiKey {
    fn can(&self, capability: &str) -> bool {
        self.capabilities.contains(&capability)
    }
}

/// Authenticates `x-api-key` (Bearer is not accepted), counts the request
/// against the key's tier window, then runs `handle`.
fn gated(
    shared: &Shared,
    headers: &HeaderMap,
    handle: impl FnOnce(&'static ApiKey) -> Response,
) -> Response {
    let secret = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return coded_401(None);
    };
    if secret.starts_with("knouds_legacy_") {
        return coded_401(Some(secret));
    }
    let Some(key) = KEYS.iter().find(|k| k.secret == secret) else {
        return coded_401(None);
    };
    let rate = shared.knouds.window.hit(key.secret, key.tier.limit());
    rate.respond(
        &rate.headers(),
        rate.retry_after_secs,
        || {
            coded(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit exceeded",
                "RATE_LIMIT_EXCEEDED",
            )
        },
        || handle(key),
    )
}

/// [`gated`], then refuses keys without `capability`.
fn gated_with(
    shared: &Shared,
    headers: &HeaderMap,
    capability: &str,
    handle: impl FnOnce(&'static ApiKey) -> Response,
) -> Response {
    gated(shared, headers, |key| {
        if !key.can(capability) {
            return capability_denied(capability);
        }
        handle(key)
    })
}

fn coded_401(legacy: Option<&str>) -> Response {
    match legacy {
        Some(_) => coded(
            StatusCode::UNAUTHORIZED,
            "Legacy API keys are retired",
            "LEGACY_KEY_RETIRED",
        ),
        None => error(
            StatusCode::UNAUTHORIZED,
            json!({ "error": "Invalid or missing API key" }),
        ),
    }
}

fn capability_denied(required: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        json!({
            "error": format!("API key lacks the required capability {required}"),
            "code": "CAPABILITY_DENIED",
            "required": required,
        }),
    )
}

fn invalid_slug() -> Response {
    coded(
        StatusCode::BAD_REQUEST,
        "Invalid workflow slug: use lowercase letters, digits and hyphens",
        "INVALID_SLUG",
    )
}

/// `^[a-z0-9]+(-[a-z0-9]+)*$`
fn valid_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// Field types of the Knouds schema; seeded workflows use only some of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[expect(
    dead_code,
    reason = "the full Knouds type set; seeded workflows use string and number"
)]
enum FieldType {
    String,
    Number,
    Boolean,
    Array,
    Object,
}

impl FieldType {
    fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
            FieldType::Array => "array",
            FieldType::Object => "object",
        }
    }

    fn accepts(self, value: &Value) -> bool {
        match self {
            FieldType::String => value.is_string(),
            FieldType::Number => value.is_number(),
            FieldType::Boolean => value.is_boolean(),
            FieldType::Array => value.is_array(),
            FieldType::Object => value.is_object(),
        }
    }
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// One field of a workflow's Request Input node.
#[derive(Debug)]
struct Field {
    name: &'static str,
    kind: FieldType,
    required: bool,
    description: &'static str,
    /// Default as JSON text.
    default: Option<&'static str>,
}

impl Field {
    fn default_value(&self) -> Option<Value> {
        self.default.and_then(|d| serde_json::from_str(d).ok())
    }

    fn to_json(&self) -> Value {
        let mut field = json!({
            "name": self.name,
            "type": self.kind.name(),
            "required": self.required,
            "description": self.description,
        });
        if let Some(default) = self.default_value() {
            field["default"] = default;
        }
        field
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Summarize,
    RenderVideo,
    Flaky,
    Premium,
    Static,
}

#[derive(Debug)]
struct Workflow {
    slug: &'static str,
    name: &'static str,
    description: &'static str,
    fields: &'static [Field],
    supports_async: bool,
    premium: bool,
    cost: f64,
    behaviour: Behaviour,
}

const WORKFLOWS: &[Workflow] = &[
    Workflow {
        slug: "summarize-text",
        name: "Summarize text",
        description: "Summarizes a text to at most max_words words.",
        fields: &[
            Field {
                name: "text",
                kind: FieldType::String,
                required: true,
                description: "Text to summarize",
                default: None,
            },
            Field {
                name: "style",
                kind: FieldType::String,
                required: false,
                description: "Summary style",
                default: Some("\"short\""),
            },
            Field {
                name: "max_words",
                kind: FieldType::Number,
                required: false,
                description: "Upper bound on summary length",
                default: Some("50"),
            },
        ],
        supports_async: false,
        premium: false,
        cost: 0.5,
        behaviour: Behaviour::Summarize,
    },
    Workflow {
        slug: "render-video",
        name: "Render video",
        description: "Renders a short video clip from a prompt.",
        fields: &[
            Field {
                name: "prompt",
                kind: FieldType::String,
                required: true,
                description: "What the clip shows",
                default: None,
            },
            Field {
                name: "duration",
                kind: FieldType::Number,
                required: false,
                description: "Clip length in seconds",
                default: Some("5"),
            },
        ],
        supports_async: true,
        premium: false,
        cost: 12.5,
        behaviour: Behaviour::RenderVideo,
    },
    Workflow {
        slug: "flaky-pipeline",
        name: "Flaky pipeline",
        description: "A pipeline whose model call always times out.",
        fields: &[Field {
            name: "input",
            kind: FieldType::String,
            required: false,
            description: "Anything",
            default: None,
        }],
        supports_async: true,
        premium: false,
        cost: 1.0,
        behaviour: Behaviour::Flaky,
    },
    Workflow {
        slug: "premium-model",
        name: "Premium model",
        description: "Answers a prompt with a model reserved to higher plan tiers.",
        fields: &[Field {
            name: "prompt",
            kind: FieldType::String,
            required: true,
            description: "Question to answer",
            default: None,
        }],
        supports_async: false,
        premium: true,
        cost: 4.0,
        behaviour: Behaviour::Premium,
    },
    Workflow {
        slug: "no-input",
        name: "No input",
        description: "A workflow without a Request Input node.",
        fields: &[],
        supports_async: false,
        premium: false,
        cost: 0.1,
        behaviour: Behaviour::Static,
    },
];

fn workflow_by_slug(slug: &str) -> Option<&'static Workflow> {
    WORKFLOWS.iter().find(|w| w.slug == slug)
}

/// Unknown slugs get a 404 without a code.
fn workflow_not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        json!({ "error": "Workflow not found" }),
    )
}

const FLAKY_MESSAGE: &str = "Provider call failed: upstream model timed out";

/// Checks `inputs` against the workflow's fields and fills in defaults.
fn validate_inputs(
    workflow: &Workflow,
    inputs: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<Value>> {
    let mut details = Vec::new();
    for name in inputs.keys() {
        if !workflow.fields.iter().any(|f| f.name == name) {
            details.push(json!({ "field": name, "message": "Unknown field" }));
        }
    }
    let mut resolved = Map::new();
    for field in workflow.fields {
        match inputs.get(field.name).filter(|v| !v.is_null()) {
            Some(value) if field.kind.accepts(value) => {
                resolved.insert(field.name.to_owned(), value.clone());
            }
            Some(value) => details.push(json!({
                "field": field.name,
                "message": format!("Expected {}, got {}", field.kind.name(), json_type_name(value)),
            })),
            None if field.required => {
                details.push(json!({ "field": field.name, "message": "Field is required" }));
            }
            None => {
                if let Some(default) = field.default_value() {
                    resolved.insert(field.name.to_owned(), default);
                }
            }
        }
    }
    if details.is_empty() {
        Ok(resolved)
    } else {
        Err(details)
    }
}

/// The deterministic result of a workflow: `Ok(result)` or `Err(message)`.
fn execute(workflow: &Workflow, inputs: &Map<String, Value>) -> Result<Value, String> {
    let text = |name: &str| {
        inputs
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match workflow.behaviour {
        Behaviour::Summarize => {
            let max_words = inputs
                .get("max_words")
                .and_then(Value::as_f64)
                .map_or(50, |n| n.clamp(1.0, 10_000.0) as usize);
            let words: Vec<&str> = inputs
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            let mut summary = words
                .iter()
                .take(max_words)
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            if words.len() > max_words {
                summary.push('…');
            }
            if text("style") == "bullets" {
                summary = format!("• {summary}");
            }
            Ok(json!({ "summary": summary }))
        }
        Behaviour::RenderVideo => {
            let duration = inputs.get("duration").cloned().unwrap_or(Value::Null);
            let digest = Sha256::digest(format!("{}|{duration}", text("prompt")).as_bytes());
            Ok(
                json!({ "url": format!("https://cdn.example/renders/{}.mp4", hex::encode(&digest[..8])) }),
            )
        }
        Behaviour::Flaky => Err(FLAKY_MESSAGE.to_owned()),
        Behaviour::Premium => {
            Ok(json!({ "text": format!("Premium answer to: {}", text("prompt")) }))
        }
        Behaviour::Static => Ok(json!("static output")),
    }
}

/// Execution lifecycle as the polling endpoint reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExecutionStatus {
    Processing,
    Completed,
    Failed,
    CancelRequested,
    Cancelled,
}

impl ExecutionStatus {
    fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Processing => "processing",
            ExecutionStatus::Completed => "completed",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::CancelRequested => "cancel_requested",
            ExecutionStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug)]
struct Execution {
    key: &'static str,
    slug: &'static str,
    request_id: String,
    status: ExecutionStatus,
    outcome: Result<Value, String>,
    created: SystemTime,
    completed: Option<SystemTime>,
}

impl Execution {
    fn to_json(&self, id: &str) -> Value {
        let mut body = json!({
            "executionId": id,
            "requestId": self.request_id,
            "status": self.status.as_str(),
            "workflowSlug": self.slug,
            "createdAt": rfc3339(self.created),
        });
        if let Some(done) = self.completed {
            body["completedAt"] = json!(rfc3339(done));
        }
        match (self.status, &self.outcome) {
            (ExecutionStatus::Completed, Ok(result)) => body["result"] = result.clone(),
            (ExecutionStatus::Failed, Err(message)) => {
                body["error"] = json!({ "code": "EXECUTION_FAILED", "message": message });
            }
            (ExecutionStatus::Cancelled, _) => {
                body["error"] =
                    json!({ "code": "EXECUTION_CANCELLED", "message": "Execution was cancelled" });
            }
            _ => {}
        }
        body
    }

    /// The webhook event for a finished execution.
    fn event(&self, id: &str) -> Value {
        let event = match self.status {
            ExecutionStatus::Completed => "execution.completed",
            ExecutionStatus::Cancelled => "execution.cancelled",
            _ => "execution.failed",
        };
        let mut body = json!({
            "event": event,
            "executionId": id,
            "requestId": self.request_id,
            "workflowSlug": self.slug,
            "status": self.status.as_str(),
        });
        let state = self.to_json(id);
        if let Some(result) = state.get("result") {
            body["result"] = result.clone();
        }
        if let Some(error) = state.get("error") {
            body["error"] = error.clone();
        }
        body
    }
}

fn wants_async(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|pair| matches!(pair.split_once('='), Some(("async", "true" | "1"))))
    })
}

async fn run(
    State(shared): State<Arc<Shared>>,
    Path(slug): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    gated(&shared, &headers, |key| {
        run_authenticated(
            &shared,
            key,
            &slug,
            wants_async(query.as_deref()),
            &body,
            started,
        )
    })
}

fn run_authenticated(
    shared: &Arc<Shared>,
    key: &'static ApiKey,
    slug: &str,
    is_async: bool,
    body: &[u8],
    started: Instant,
) -> Response {
    if !valid_slug(slug) {
        return invalid_slug();
    }
    let required = format!("workflow:{slug}:run");
    if !key.can("workflow:run") && !key.can(&required) {
        return capability_denied(&required);
    }
    let Some(workflow) = workflow_by_slug(slug) else {
        return workflow_not_found();
    };
    let inputs = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut body)) => match body.remove("inputs") {
            Some(Value::Object(inputs)) => inputs,
            other => {
                let problem = if other.is_none() {
                    "inputs is required"
                } else {
                    "inputs must be an object"
                };
                return error(
                    StatusCode::BAD_REQUEST,
                    json!({
                        "error": format!("Invalid inputs: {problem}"),
                        "code": "INVALID_INPUTS",
                        "details": [{ "field": "inputs", "message": problem }],
                    }),
                );
            }
        },
        Ok(_) => {
            return coded(
                StatusCode::BAD_REQUEST,
                "Request body must be a JSON object",
                "INVALID_BODY",
            );
        }
        Err(_) => {
            return coded(
                StatusCode::BAD_REQUEST,
                "Request body is not valid JSON",
                "INVALID_BODY",
            );
        }
    };
    if is_async && !workflow.supports_async {
        return coded(
            StatusCode::BAD_REQUEST,
            &format!(
                "Workflow '{slug}' uses a model provider that does not support async execution. Use sync mode."
            ),
            "ASYNC_NOT_SUPPORTED",
        );
    }
    if workflow.premium && key.tier == Tier::Pro {
        return error(
            StatusCode::FORBIDDEN,
            json!({
                "error": "This workflow uses a model that requires a higher plan tier",
                "code": "MODEL_TIER_REQUIRED",
                "requiredTier": "business",
            }),
        );
    }
    let inputs = match validate_inputs(workflow, &inputs) {
        Ok(inputs) => inputs,
        Err(details) => {
            return error(
                StatusCode::BAD_REQUEST,
                json!({ "error": format!("Invalid inputs for workflow '{slug}'"), "code": "INVALID_INPUTS", "details": details }),
            );
        }
    };
    match key.billing {
        Billing::Credits => {}
        Billing::NoCredits => {
            return coded(
                StatusCode::PAYMENT_REQUIRED,
                "Insufficient credits to run this workflow",
                "INSUFFICIENT_CREDITS",
            );
        }
        Billing::TrialExhausted => {
            return coded(
                StatusCode::PAYMENT_REQUIRED,
                "Trial grant exhausted. Upgrade your plan to continue.",
                "grant_exhausted",
            );
        }
    }
    let outcome = execute(workflow, &inputs);
    if is_async {
        return submit_async(shared, key, workflow, outcome);
    }
    match outcome {
        Ok(result) => json_response(
            StatusCode::OK,
            &json!({
                "success": true,
                "result": result,
                "cost": shared.config.usage(json!(workflow.cost)),
                "ms": shared.config.usage(json!(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX))),
            }),
            &[],
        ),
        Err(message) => coded(
            StatusCode::INTERNAL_SERVER_ERROR,
            &message,
            "EXECUTION_FAILED",
        ),
    }
}

fn submit_async(
    shared: &Arc<Shared>,
    key: &'static ApiKey,
    workflow: &'static Workflow,
    outcome: Result<Value, String>,
) -> Response {
    let id = random_uuid();
    let request_id = format!("req_{}", random_hex(12));
    lock(&shared.knouds.executions).insert(
        id.clone(),
        Execution {
            key: key.secret,
            slug: workflow.slug,
            request_id: request_id.clone(),
            status: ExecutionStatus::Processing,
            outcome,
            created: SystemTime::now(),
            completed: None,
        },
    );
    let task_shared = shared.clone();
    let task_id = id.clone();
    shared.spawn(async move {
        tokio::time::sleep(task_shared.config.async_completion_delay).await;
        settle(&task_shared, &task_id, ExecutionStatus::Processing).await;
    });
    let webhook = match &shared.config.knouds_webhook {
        Some(hook) => json!({ "configured": true, "url": hook.url }),
        None => json!({ "configured": false }),
    };
    json_response(
        StatusCode::ACCEPTED,
        &json!({
            "_async": true,
            "executionId": id,
            "requestId": request_id,
            "status": "processing",
            "webhookDelivery": webhook,
            "pollUrl": format!("/api/executions/{id}"),
        }),
        &[],
    )
}

/// Moves execution `id` out of `from` to its final state and fires the webhook.
async fn settle(shared: &Shared, id: &str, from: ExecutionStatus) {
    let event = {
        let mut executions = lock(&shared.knouds.executions);
        let Some(execution) = executions.get_mut(id).filter(|e| e.status == from) else {
            return;
        };
        execution.status = match (from, &execution.outcome) {
            (ExecutionStatus::CancelRequested, _) => ExecutionStatus::Cancelled,
            (_, Ok(_)) => ExecutionStatus::Completed,
            (_, Err(_)) => ExecutionStatus::Failed,
        };
        execution.completed = Some(SystemTime::now());
        execution.event(id)
    };
    if let Some(hook) = &shared.config.knouds_webhook {
        let signature = CallbackSignature::Knouds {
            secret: hook.secret.clone(),
        };
        shared
            .callbacks
            .deliver(
                Dialect::Knouds,
                &hook.url,
                &signature,
                Bytes::from(event.to_string()),
            )
            .await;
    }
}

async fn schema(
    State(shared): State<Arc<Shared>>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Response {
    gated(&shared, &headers, |key| {
        if !valid_slug(&slug) {
            return invalid_slug();
        }
        if !key.can("workflow:read") {
            return capability_denied("workflow:read");
        }
        let Some(workflow) = workflow_by_slug(&slug) else {
            return workflow_not_found();
        };
        let values: Map<String, Value> = workflow
            .fields
            .iter()
            .filter_map(|f| Some((f.name.to_owned(), f.default_value()?)))
            .collect();
        json_response(
            StatusCode::OK,
            &json!({
                "fields": workflow.fields.iter().map(Field::to_json).collect::<Vec<_>>(),
                "values": values,
                "name": workflow.name,
                "description": workflow.description,
            }),
            &[],
        )
    })
}

fn execution_not_found() -> Response {
    coded(
        StatusCode::NOT_FOUND,
        "Execution not found",
        "EXECUTION_NOT_FOUND",
    )
}

async fn execution(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    gated_with(&shared, &headers, "execution:read", |key| {
        let executions = lock(&shared.knouds.executions);
        match executions.get(&id).filter(|e| e.key == key.secret) {
            Some(execution) => json_response(StatusCode::OK, &execution.to_json(&id), &[]),
            None => execution_not_found(),
        }
    })
}

async fn cancel(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    gated_with(&shared, &headers, "execution:read", |key| {
        let status = {
            let mut executions = lock(&shared.knouds.executions);
            let Some(execution) = executions.get_mut(&id).filter(|e| e.key == key.secret) else {
                return execution_not_found();
            };
            if execution.status == ExecutionStatus::Processing {
                execution.status = ExecutionStatus::CancelRequested;
                let task_shared = shared.clone();
                let task_id = id.clone();
                shared.spawn(async move {
                    tokio::time::sleep(CANCEL_SETTLE).await;
                    settle(&task_shared, &task_id, ExecutionStatus::CancelRequested).await;
                });
            }
            execution.status
        };
        match status {
            ExecutionStatus::CancelRequested => json_response(
                StatusCode::OK,
                &json!({ "executionId": id, "status": status.as_str() }),
                &[],
            ),
            _ => coded(
                StatusCode::CONFLICT,
                &format!("Execution is already {}", status.as_str()),
                "EXECUTION_NOT_CANCELLABLE",
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_pattern() {
        assert!(valid_slug("summarize-text"));
        assert!(valid_slug("a1"));
        assert!(!valid_slug("Summarize"));
        assert!(!valid_slug("-a"));
        assert!(!valid_slug("a--b"));
        assert!(!valid_slug("a_b"));
        assert!(!valid_slug(""));
    }

    #[test]
    fn inputs_take_defaults_and_report_details() {
        let wf = &WORKFLOWS[0];
        let ok = validate_inputs(wf, json!({"text": "a b c"}).as_object().unwrap()).unwrap();
        assert_eq!(ok["style"], "short");
        assert_eq!(ok["max_words"], 50);
        let err = validate_inputs(wf, json!({"text": 1, "bogus": true}).as_object().unwrap())
            .unwrap_err();
        assert_eq!(err.len(), 2);
    }
}
