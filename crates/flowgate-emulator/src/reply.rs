//! JSON replies and the error a handler decides before building one.

use axum::body::Body;
use axum::response::Response;
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::Value;

/// A JSON response with `status` and extra `headers`.
pub(crate) fn json_response(
    status: StatusCode,
    body: &Value,
    headers: &[(HeaderName, String)],
) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    with_headers(response, headers)
}

/// `response` with `headers` added (replacing same-named ones); values that
/// are not valid header text are skipped.
pub(crate) fn with_headers(mut response: Response, headers: &[(HeaderName, String)]) -> Response {
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            response.headers_mut().insert(name.clone(), v);
        }
    }
    response
}

/// An error reply decided before any response is built: status and JSON body.
#[derive(Debug)]
pub(crate) struct Rejection {
    pub(crate) status: StatusCode,
    pub(crate) body: Value,
}

impl Rejection {
    pub(crate) fn into_response(self) -> Response {
        json_response(self.status, &self.body, &[])
    }
}
