//! Knouds dialect: slug workflows under `/knouds/api`, `x-api-key` keys with
//! capabilities and a plan tier, per-tier windows, typed input schemas,
//! `?async=true` executions with polling, cancellation and signed webhooks.
//!
//! `auth` holds the seeded keys and the gate every route passes,
//! `workflows` the seeded catalog with input validation and deterministic
//! results, `executions` the async store with polling, cancellation and
//! webhooks; this file holds the routes and the synchronous run.

mod auth;
mod executions;
mod workflows;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use crate::config::EmulatorConfig;
use crate::ratelimit::FixedWindow;
use crate::reply::json_response;
use crate::shared::{DialectShared, Shared};
use crate::store::{BoundedStore, STORE_CAPACITY};

use auth::{ApiKey, Billing, Tier, capability_denied, gated};
use executions::{Execution, cancel, execution, submit_async};
use workflows::{
    Field, execute, invalid_slug, valid_slug, validate_inputs, workflow_by_slug, workflow_not_found,
};

/// What the Knouds handlers share.
type Knouds = DialectShared<KnoudsState>;

/// The Knouds routes, with their own state beside the emulator-wide one.
pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    let state = KnoudsState::new(&shared.config);
    Router::new()
        .route("/knouds/api/workflows/{slug}/run", post(run))
        .route("/knouds/api/workflows/{slug}/schema", get(schema))
        .route("/knouds/api/executions/{id}", get(execution))
        .route("/knouds/api/executions/{id}/cancel", post(cancel))
        .with_state(Arc::new(DialectShared::new(shared, state)))
}

/// A Knouds error reply with `body` (`{"error", "code"?, …context}`).
pub(crate) fn error(status: StatusCode, body: Value) -> Response {
    json_response(status, &body, &[])
}

pub(super) fn coded(status: StatusCode, message: &str, code: &str) -> Response {
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

fn wants_async(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|pair| matches!(pair.split_once('='), Some(("async", "true" | "1"))))
    })
}

async fn run(
    State(shared): State<Arc<Knouds>>,
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
    shared: &Arc<Knouds>,
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

async fn schema(
    State(shared): State<Arc<Knouds>>,
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
