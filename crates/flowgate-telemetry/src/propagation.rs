//! W3C trace context (`traceparent`, `tracestate`) on `http::HeaderMap`s.
//!
//! Extraction runs only when a `traceparent` header is present; injection
//! only when the span has a valid OpenTelemetry context, which it has
//! exactly when trace export is on (the OpenTelemetry layer is installed).
//! With export off flowgate neither records nor forwards trace context: a
//! caller's `traceparent` is not passed upstream. With export on every
//! upstream request carries the client span's context, with the sampled
//! flag telling the upstream whether this trace is recorded.

use std::sync::LazyLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TraceContextExt as _,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static PROPAGATOR: LazyLock<TraceContextPropagator> = LazyLock::new(TraceContextPropagator::new);

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The remote context a caller sent (`traceparent`, `tracestate`), if it
/// sent a valid one.
pub fn extract(headers: &HeaderMap) -> Option<Context> {
    if !headers.contains_key("traceparent") {
        return None;
    }
    let cx = PROPAGATOR.extract(&HeaderExtractor(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Writes `span`'s context into `headers` as `traceparent` (and
/// `tracestate` when there is one). Does nothing when the span has no
/// OpenTelemetry context (trace export off, or a disabled span).
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        PROPAGATOR.inject_context(&cx, &mut HeaderInjector(headers));
    }
}

/// Parses a `traceparent` value into a context (for links).
pub(crate) fn parse_traceparent(traceparent: &str) -> Option<Context> {
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", HeaderValue::from_str(traceparent).ok()?);
    extract(&headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_only_valid_contexts() {
        let mut headers = HeaderMap::new();
        assert!(extract(&headers).is_none());
        headers.insert("traceparent", HeaderValue::from_static("garbage"));
        assert!(extract(&headers).is_none());
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let cx = extract(&headers).unwrap();
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(sc.is_remote() && sc.is_sampled());
    }

    #[test]
    fn inject_without_a_tracer_adds_nothing() {
        let mut headers = HeaderMap::new();
        inject(&tracing::info_span!("x"), &mut headers);
        assert!(headers.is_empty());
    }
}
