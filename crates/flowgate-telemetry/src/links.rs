//! Linking background work back to the call that started a run.
//!
//! A run outlives its Invoke call: status polls, callback deliveries and
//! StreamStatus subscribers run later, often on another replica. Each gets
//! its own trace (a poll loop is not part of the caller's request), with an
//! OpenTelemetry *span link* to the span that created the run:
//!
//! ```
//! use flowgate_telemetry::{TraceLink, current_trace_link, span_with_link};
//! use tracing::Instrument as _;
//!
//! # async fn example() {
//! // In Invoke, while its span is current: store the link with the run.
//! let link: Option<TraceLink> = current_trace_link();
//! let stored: Option<String> = link.map(String::from);
//!
//! // Later, in the poller (any replica): a new root span linked to it.
//! let link = stored.as_deref().and_then(TraceLink::parse);
//! async { /* poll upstream */ }
//!     .instrument(span_with_link("flowgate.poll", link.as_ref()))
//!     .await;
//! # }
//! ```
//!
//! Both are no-ops returning `None` / a span without a link when trace
//! export is off.

use std::fmt;

use opentelemetry::trace::TraceContextExt as _;
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::propagation::parse_traceparent;

/// A span's W3C `traceparent` (`00-<trace id>-<span id>-<flags>`): small,
/// serializable, and safe to store in a run record (it holds ids only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TraceLink(String);

impl TraceLink {
    /// The link to `span`, when it is part of a trace.
    pub fn of(span: &tracing::Span) -> Option<Self> {
        if span.is_disabled() {
            return None;
        }
        let cx = span.context();
        let otel_span = cx.span();
        let sc = otel_span.span_context();
        sc.is_valid().then(|| {
            Self(format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            ))
        })
    }

    /// A stored `traceparent`, if it is well formed.
    pub fn parse(traceparent: &str) -> Option<Self> {
        parse_traceparent(traceparent).map(|_| Self(traceparent.to_owned()))
    }

    /// The `traceparent` text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 32-hex-digit trace id.
    pub fn trace_id(&self) -> &str {
        self.0.get(3..35).unwrap_or_default()
    }

    /// The 16-hex-digit span id.
    pub fn span_id(&self) -> &str {
        self.0.get(36..52).unwrap_or_default()
    }
}

impl fmt::Display for TraceLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<TraceLink> for String {
    fn from(link: TraceLink) -> Self {
        link.0
    }
}

/// A new root span for background work (`otel.name` = `name`), linked to
/// `link`'s span when given. The tracing name is `flowgate.background`.
pub fn span_with_link(name: &str, link: Option<&TraceLink>) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "flowgate.background",
        otel.name = name,
        otel.kind = "internal",
    );
    if let Some(link) = link {
        add_link(&span, link);
    }
    span
}

/// Adds an OpenTelemetry link from `span` to `link`'s span (e.g. from a
/// StreamStatus server span to the run's originating call). Best done
/// before the span is first entered.
pub fn add_link(span: &tracing::Span, link: &TraceLink) {
    if let Some(cx) = parse_traceparent(link.as_str()) {
        span.add_link(cx.span().span_context().clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn links_are_absent_without_tracing() {
        assert!(crate::current_trace_link().is_none());
        let span = tracing::info_span!("x");
        assert!(TraceLink::of(&span).is_none());
        assert!(TraceLink::parse("nonsense").is_none());
        let _ = span_with_link("flowgate.poll", None);
    }
}
