//! The Fetch Hive run store: run lifecycle, async completion with the
//! signed callback, and the two lookup endpoints.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::callbacks::CallbackSignature;
use crate::clock::rfc3339;
use crate::ids::random_hex;
use crate::recording::Dialect;
use crate::reply::json_response;
use crate::store::lock;

use super::deployments::{Invocation, RunOutcome, execute, token_estimate};
use super::{ApiKey, FetchHive, error, gated, new_request_id};

/// Lifecycle of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RunStatus {
    Queued,
    Running,
    Completed,
    Failed,
}

impl RunStatus {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
        }
    }
}

#[derive(Debug)]
pub(super) struct Run {
    pub(super) key: &'static str,
    pub(super) status: RunStatus,
    pub(super) outcome: RunOutcome,
    pub(super) started: SystemTime,
    pub(super) ended: Option<SystemTime>,
    pub(super) total_tokens: u64,
}

impl Run {
    pub(super) fn output(&self) -> Value {
        match (&self.outcome, self.status) {
            (RunOutcome::Completed(v), RunStatus::Completed) => v.clone(),
            _ => Value::Null,
        }
    }

    pub(super) fn error(&self) -> Value {
        match (&self.outcome, self.status) {
            (RunOutcome::Failed(e), RunStatus::Failed) => json!(e),
            _ => Value::Null,
        }
    }
}

pub(super) fn store_run(shared: &FetchHive, id: &str, run: Run) {
    lock(&shared.dialect.runs).insert(id.to_owned(), run);
}

pub(super) fn invoke_async(
    shared: &Arc<FetchHive>,
    key: ApiKey,
    inv: &Invocation,
    callback_url: String,
) -> Response {
    let request_id = new_request_id();
    let webhook_secret = format!("whsec_{}", random_hex(24));
    let queued = {
        let mut map = lock(&shared.dialect.async_in_flight);
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
    shared: Arc<FetchHive>,
    key: &'static str,
    request_id: String,
    queued: bool,
    callback_url: String,
    secret: String,
) {
    let delay = shared.config.async_completion_delay;
    if queued {
        tokio::time::sleep(delay).await;
        if let Some(run) = lock(&shared.dialect.runs).get_mut(&request_id) {
            run.status = RunStatus::Running;
        }
    }
    tokio::time::sleep(delay).await;
    if let Some(n) = lock(&shared.dialect.async_in_flight).get_mut(key) {
        *n = n.saturating_sub(1);
    }
    let body = {
        let mut runs = lock(&shared.dialect.runs);
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
    shared: &FetchHive,
    headers: &HeaderMap,
    id: &str,
    render: impl FnOnce(&str, &Run) -> Value,
) -> Response {
    gated(shared, headers, |key| {
        let runs = lock(&shared.dialect.runs);
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

pub(super) async fn workflow_run(
    State(shared): State<Arc<FetchHive>>,
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

pub(super) async fn public_request(
    State(shared): State<Arc<FetchHive>>,
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
