//! The callback ingress: `POST /webhooks/{provider}` on its own listener.
//!
//! Providers' signed callbacks (Fetch Hive run completions, Knouds
//! execution events) are verified — signature, timestamp tolerance, replay —
//! and turned into run events for StreamStatus subscribers and forwarding.
//! Invalid deliveries get 401 with the typed reason and are never forwarded;
//! bodies over `webhooks.max_body_bytes` get 413. A panic while handling a
//! delivery answers 500 with a fixed body (the panic message is logged once
//! by the process's panic hook, never sent) and the listener keeps serving.

use std::{any::Any, sync::Arc};

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
use tower_http::catch_panic::CatchPanicLayer;

/// The ingress routes.
pub fn router(tracker: Arc<RunTracker>, max_body_bytes: usize) -> Router {
    answer_panics(
        Router::new()
            .route("/webhooks/{provider}", post(callback))
            .layer(DefaultBodyLimit::max(max_body_bytes))
            .with_state(tracker),
    )
}

/// `routes` with panics answered 500 (outermost, so a panic anywhere in
/// them is caught): `{"error": "internal error"}`, nothing of the panic.
pub fn answer_panics(routes: Router) -> Router {
    routes.layer(CatchPanicLayer::custom(
        panic_answer as fn(Box<dyn Any + Send + 'static>) -> Response,
    ))
}

/// The answer to a delivery whose handling panicked. The payload is
/// dropped unread: the panic hook logged it already.
fn panic_answer(_: Box<dyn Any + Send + 'static>) -> Response {
    tracing::warn!("callback ingress: a delivery's handling panicked; answered 500");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({"error": "internal error"})),
    )
        .into_response()
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
