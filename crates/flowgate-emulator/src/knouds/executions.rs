//! Async Knouds executions: the store entry, settling (with the signed
//! webhook), polling and cancellation.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::callbacks::CallbackSignature;
use crate::clock::rfc3339;
use crate::ids::{random_hex, random_uuid};
use crate::recording::Dialect;
use crate::reply::json_response;
use crate::store::lock;

use super::auth::{ApiKey, gated_with};
use super::workflows::Workflow;
use super::{Knouds, coded};

/// How long a cancellation takes to settle after it was requested.
const CANCEL_SETTLE: Duration = Duration::from_millis(50);

/// Execution lifecycle as the polling endpoint reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ExecutionStatus {
    Processing,
    Completed,
    Failed,
    CancelRequested,
    Cancelled,
}

impl ExecutionStatus {
    pub(super) fn as_str(self) -> &'static str {
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
pub(super) struct Execution {
    pub(super) key: &'static str,
    pub(super) slug: &'static str,
    request_id: String,
    pub(super) status: ExecutionStatus,
    outcome: Result<Value, String>,
    created: SystemTime,
    completed: Option<SystemTime>,
}

impl Execution {
    pub(super) fn to_json(&self, id: &str) -> Value {
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

pub(super) fn submit_async(
    shared: &Arc<Knouds>,
    key: &'static ApiKey,
    workflow: &'static Workflow,
    outcome: Result<Value, String>,
) -> Response {
    let id = random_uuid();
    let request_id = format!("req_{}", random_hex(12));
    lock(&shared.dialect.executions).insert(
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
async fn settle(shared: &Knouds, id: &str, from: ExecutionStatus) {
    let event = {
        let mut executions = lock(&shared.dialect.executions);
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

fn execution_not_found() -> Response {
    coded(
        StatusCode::NOT_FOUND,
        "Execution not found",
        "EXECUTION_NOT_FOUND",
    )
}

pub(super) async fn execution(
    State(shared): State<Arc<Knouds>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    gated_with(&shared, &headers, "execution:read", |key| {
        let executions = lock(&shared.dialect.executions);
        match executions.get(&id).filter(|e| e.key == key.secret) {
            Some(execution) => json_response(StatusCode::OK, &execution.to_json(&id), &[]),
            None => execution_not_found(),
        }
    })
}

pub(super) async fn cancel(
    State(shared): State<Arc<Knouds>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    gated_with(&shared, &headers, "execution:read", |key| {
        let status = {
            let mut executions = lock(&shared.dialect.executions);
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
