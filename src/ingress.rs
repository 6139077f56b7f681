//! The callback ingress: `POST /webhooks/{provider}` on its own listener.
//!
//! Providers' signed callbacks (Fetch Hive run completions, Knouds
//! execution events) are verified — signature, timestamp tolerance, replay —
//! and turned into run events for StreamStatus subscribers and forwarding.
//! Invalid deliveries get 401 with the typed reason and are never forwarded;
//! bodies over `webhooks.max_body_bytes` get 413.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use bytes::Bytes;
use flowgate_state::{CallbackRejection, REASON_STATE_STORE_UNAVAILABLE, RunTracker};
use serde_json::json;

/// The ingress routes.
pub fn router(tracker: Arc<RunTracker>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/webhooks/{provider}", post(callback))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(tracker)
}

async fn callback(
    State(tracker): State<Arc<RunTracker>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match tracker.ingest(&provider, &headers, &body).await {
        Ok(()) => (StatusCode::OK, Json(json!({"ok": true}))).into_response(),
        Err(CallbackRejection::UnknownProvider) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no provider with callbacks at this path"})),
        )
            .into_response(),
        Err(CallbackRejection::Unverified(reason)) => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "the delivery did not verify", "reason": reason.as_str()})),
        )
            .into_response(),
        // Not recorded: the provider delivers again later.
        Err(CallbackRejection::StoreUnavailable) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(http::header::RETRY_AFTER, "1")],
            Json(json!({"error": "the run state store is unreachable", "reason": REASON_STATE_STORE_UNAVAILABLE})),
        )
            .into_response(),
    }
}
