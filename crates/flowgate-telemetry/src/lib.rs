//! flowgate's telemetry API: what the engine crates use. No exporter, no
//! subscriber, no gRPC stack (`cargo tree -i tonic -p flowgate-telemetry` is
//! empty); the binary installs all of that with `flowgate-telemetry-setup`.
//!
//! - [`inject`] / [`extract`]: W3C trace context on `http::HeaderMap`s (the
//!   provider HTTP client injects it into every upstream request).
//! - [`TraceLink`], [`span_with_link`], [`add_link`]: how background work
//!   (polls, callback deliveries, StreamStatus) links back to the trace of
//!   the call that started a run.
//! - [`metrics()`]: the instruments (RPC and upstream counts and latency,
//!   upstream status, schema cache hits/misses, rate-limit remaining, open
//!   circuits, active streams): no-ops until the set-up crate installs a
//!   meter, then exported over OTLP and/or as a Prometheus text page.
//!
//! - [`OutputStreamStats`]: time to first byte, duration, chunks and bytes
//!   of one InvokeStream call, on its span and in histograms.
//! - [`CallRecord`]: what one call did, filled in by the layers and the
//!   service, logged once as the access log line (`flowgate::access`).
//!
//! Secrets never reach telemetry: span fields are chosen here and in the
//! HTTP client (method, host, port, path without query), never headers or
//! bodies; metric labels are low-cardinality names (provider, dialect,
//! method, status, configured caller names), never run or workflow ids.

mod access;
mod links;
mod metrics;
mod output_stream;
mod propagation;

pub use access::{CallDetails, CallRecord, UNAUTHENTICATED};
pub use links::{TraceLink, add_link, span_with_link};
pub use metrics::{ActiveStream, Metrics, SchemaCacheOutcome, install_meter, metrics};
pub use output_stream::{OUTPUT_STREAM_FIELDS, OutputStreamStats};
pub use propagation::{extract, inject};

/// The current span's W3C `traceparent`, to store in a run record so later
/// background work can link to the originating trace (see [`TraceLink`]).
/// `None` when tracing is off or there is no current span.
pub fn current_trace_link() -> Option<TraceLink> {
    TraceLink::of(&tracing::Span::current())
}
