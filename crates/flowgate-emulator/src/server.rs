//! The HTTP surface: one router holding the three dialects under their
//! prefixes plus the `/_emulator` admin API, and the middleware every
//! provider request passes through (record → fault → handler → latency).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::{Value, json};

use crate::conn::ConnectionHandle;
use crate::faults::{Fault, FaultSpec};
use crate::recording::{DeliveredCallback, Dialect, RecordedRequest};
use crate::reply::json_response;
use crate::shared::Shared;
use crate::{aitutor, fetchhive, knouds};

/// Largest request body accepted (1 MiB); larger ones get a 413.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The full application: provider dialects behind the gate, admin API beside.
pub(crate) fn app(shared: Arc<Shared>) -> Router {
    let providers = Router::new()
        .merge(fetchhive::routes(shared.clone()))
        .merge(aitutor::routes(shared.clone()))
        .merge(knouds::routes(shared.clone()))
        .fallback(provider_fallback)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            provider_gate,
        ));
    Router::new()
        .route(
            "/_emulator/requests",
            get(admin_requests).delete(admin_clear_requests),
        )
        .route(
            "/_emulator/faults",
            get(admin_faults)
                .post(admin_add_fault)
                .delete(admin_clear_faults),
        )
        .route(
            "/_emulator/callbacks",
            get(admin_callbacks).delete(admin_clear_callbacks),
        )
        .route("/_emulator/stats", get(admin_stats))
        .with_state(shared)
        .merge(providers)
}

/// Counts the request as cancelled if dropped before it was answered.
struct CancelGuard {
    shared: Arc<Shared>,
    armed: bool,
}

impl CancelGuard {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.armed {
            self.shared.cancelled.fetch_add(1, Ordering::SeqCst);
            tracing::debug!("emulator: client went away before the answer");
        }
    }
}

/// Records, applies faults and latency around every provider request.
async fn provider_gate(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(connection): ConnectInfo<ConnectionHandle>,
    request: Request,
    next: Next,
) -> Response {
    let Some(dialect) = Dialect::from_path(request.uri().path()) else {
        return next.run(request).await;
    };
    let guard = CancelGuard {
        shared: shared.clone(),
        armed: true,
    };
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES).await.ok();
    shared.requests.push(RecordedRequest {
        dialect,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.clone().unwrap_or_default(),
    });
    let Some(body) = body else {
        guard.disarm();
        return dialect_error(
            dialect,
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large (limit 1 MiB)",
            "payload_too_large",
        );
    };

    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    if let Some(fault) = shared.faults.take_match(dialect, &path_and_query) {
        tokio::time::sleep(fault.latency).await;
        if fault.drop_connection {
            connection.kill();
            guard.disarm();
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        if fault.status != 0 {
            guard.disarm();
            return fault_response(&fault);
        }
    }

    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    tokio::time::sleep(shared.config.latency).await;
    guard.disarm();
    response
}

fn fault_response(fault: &Fault) -> Response {
    let mut response = Response::new(Body::from(fault.body.clone()));
    *response.status_mut() =
        StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&fault.content_type) {
        headers.insert(CONTENT_TYPE, v);
    }
    for (name, value) in &fault.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
    response
}

/// A dialect-shaped error for failures outside any route (404, 413).
fn dialect_error(dialect: Dialect, status: StatusCode, message: &str, code: &str) -> Response {
    match dialect {
        Dialect::FetchHive => fetchhive::error(status, message, Some(code)),
        Dialect::AiTutor => aitutor::error(status, message, Some(code)),
        // Knouds answers unknown routes like unknown slugs: no code.
        Dialect::Knouds if status == StatusCode::NOT_FOUND => {
            knouds::error(status, json!({ "error": message }))
        }
        Dialect::Knouds => knouds::error(
            status,
            json!({ "error": message, "code": code.to_ascii_uppercase() }),
        ),
    }
}

async fn provider_fallback(request: Request) -> Response {
    match Dialect::from_path(request.uri().path()) {
        Some(dialect) => dialect_error(dialect, StatusCode::NOT_FOUND, "Not found", "not_found"),
        None => json_response(
            StatusCode::NOT_FOUND,
            &json!({ "error": "Not found: the emulator serves /fetchhive, /aitutor, /knouds and /_emulator" }),
            &[],
        ),
    }
}

/// A 200 whose body is the JSON array of `items`, each rendered by `to_json`.
fn json_list<T>(items: &[T], to_json: impl FnMut(&T) -> Value) -> Response {
    let list: Vec<Value> = items.iter().map(to_json).collect();
    json_response(StatusCode::OK, &Value::Array(list), &[])
}

async fn admin_requests(State(shared): State<Arc<Shared>>) -> Response {
    json_list(&shared.requests.snapshot(), RecordedRequest::to_json)
}

async fn admin_clear_requests(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.requests.clear();
    StatusCode::NO_CONTENT
}

async fn admin_faults(State(shared): State<Arc<Shared>>) -> Response {
    json_list(&shared.faults.snapshot(), |fault| {
        json!(FaultSpec::from(fault))
    })
}

async fn admin_add_fault(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let fault = serde_json::from_slice::<FaultSpec>(&body)
        .map_err(|e| e.to_string())
        .and_then(FaultSpec::validate);
    match fault {
        Ok(fault) => {
            shared.faults.push(fault);
            json_response(StatusCode::CREATED, &json!({ "ok": true }), &[])
        }
        Err(message) => json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "error": format!("invalid fault: {message}") }),
            &[],
        ),
    }
}

async fn admin_clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.faults.clear();
    StatusCode::NO_CONTENT
}

async fn admin_callbacks(State(shared): State<Arc<Shared>>) -> Response {
    json_list(&shared.callbacks.delivered(), DeliveredCallback::to_json)
}

async fn admin_clear_callbacks(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.callbacks.clear();
    StatusCode::NO_CONTENT
}

async fn admin_stats(State(shared): State<Arc<Shared>>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "cancelled_requests": shared.cancelled.load(Ordering::SeqCst),
            "recorded_requests": shared.requests.snapshot().len(),
        }),
        &[],
    )
}
