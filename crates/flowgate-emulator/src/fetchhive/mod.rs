//! Fetch Hive dialect: `deployment` + `variant` invocations under
//! `/fetchhive/v1`, Bearer keys, a daily cap plus a per-key concurrency cap,
//! async runs delivered to `callback_url` signed with `X-Fetch-Hive-Signature`.
//!
//! `deployments` holds the seeded deployments, invoke-body validation and
//! deterministic results, `runs` the run store with async completion and
//! lookups; this file holds the routes, the key gate and the synchronous
//! invoke with its concurrency slot.

mod deployments;
mod runs;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use http::header::RETRY_AFTER;
use http::{HeaderMap, StatusCode};
use serde_json::json;

use crate::ids::random_hex;
use crate::keys;
use crate::keys::bearer;
use crate::ratelimit::{DailyQuota, RateDecision, next_midnight_utc};
use crate::reply::{Rejection, json_response, with_headers};
use crate::shared::{DialectShared, Shared};
use crate::store::{BoundedStore, STORE_CAPACITY, lock};

use deployments::{Behaviour, Invocation, RunOutcome, execute, parse_invocation, token_estimate};
use runs::{Run, RunStatus, invoke_async, public_request, store_run, workflow_run};

/// What the Fetch Hive handlers share.
type FetchHive = DialectShared<FetchHiveState>;

/// The Fetch Hive routes, with their own state beside the emulator-wide one.
pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/fetchhive/v1/workflow/invoke", post(invoke))
        .route("/fetchhive/v1/workflow_runs/{id}", get(workflow_run))
        .route("/fetchhive/v1/public/requests/{id}", get(public_request))
        .with_state(Arc::new(DialectShared::new(shared, FetchHiveState::new())))
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
    shared: &FetchHive,
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
    let rate = shared.dialect.quota.hit(key.id, limit);
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

fn acquire_sync_slot(shared: &FetchHive, key: &'static str) -> Option<SyncSlot> {
    let counters = &shared.dialect.sync_in_flight;
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

async fn invoke(State(shared): State<Arc<FetchHive>>, headers: HeaderMap, body: Bytes) -> Response {
    gated(&shared, &headers, |key| {
        invoke_authenticated(&shared, key, &body)
    })
}

fn invoke_authenticated(shared: &Arc<FetchHive>, key: ApiKey, body: &[u8]) -> Response {
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

fn invoke_sync(shared: &FetchHive, key: ApiKey, inv: &Invocation) -> Response {
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
