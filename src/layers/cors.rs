//! CORS for browser callers (gRPC-Web) from `[server.cors]`: exact origins
//! only, no credentials mode (flowgate uses no cookies; the caller key goes
//! in `authorization`), preflights answered here and cached by browsers for
//! `max_age`. Without allowed origins there is no layer at all, so no
//! response carries a CORS header.

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{
    auth::quota::{
        CREDITS_REMAINING, CREDITS_RESET_AFTER, REQUESTS_REMAINING, REQUESTS_RESET_AFTER,
    },
    config::CorsConfig,
    recorded::REPLAYED_HEADER,
};

/// Request headers a browser caller may send: the caller key, the gRPC-Web
/// and Connect protocol headers, the deadline and trace context.
const ALLOWED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "connect-protocol-version",
    "connect-timeout-ms",
    "traceparent",
    "tracestate",
];

/// Response headers a browser caller may read: the status of a
/// trailers-only answer (errors) with its details, rate-limit and quota
/// data, and whether an answer was replayed for an idempotency key.
const EXPOSED_HEADERS: &[&str] = &[
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-retry-after",
    REQUESTS_REMAINING,
    REQUESTS_RESET_AFTER,
    CREDITS_REMAINING,
    CREDITS_RESET_AFTER,
    REPLAYED_HEADER,
];

/// The CORS layer for `config`, or none when no origin is allowed.
pub fn layer(config: &CorsConfig) -> Option<CorsLayer> {
    if !config.enabled() {
        return None;
    }
    // Validated as origins when the configuration was read.
    let origins = config
        .allowed_origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok());
    let names = |names: &[&'static str]| {
        names
            .iter()
            .map(|name| HeaderName::from_static(name))
            .collect::<Vec<_>>()
    };
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::POST, Method::GET])
            .allow_headers(names(ALLOWED_HEADERS))
            .expose_headers(names(EXPOSED_HEADERS))
            .max_age(config.max_age),
    )
}
