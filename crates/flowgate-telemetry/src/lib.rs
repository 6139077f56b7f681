//! flowgate's telemetry, in one place.
//!
//! - [`Telemetry::builder`] installs the global `tracing` subscriber (text or
//!   JSON log lines on stderr, JSON lines carrying `trace_id`/`span_id`), and,
//!   when an OTLP endpoint is configured, the OpenTelemetry layer that turns
//!   spans into OTLP/gRPC traces. It returns the providers so shutdown can
//!   flush them ([`Telemetry::shutdown`]) and accepts exporter overrides for
//!   tests. With no endpoint there is no exporter and no background task.
//! - [`RpcTelemetryLayer`]: the tower layer that opens one server span per
//!   gRPC call (`rpc.*` attributes, the caller's W3C `traceparent`
//!   continued) and records the RPC metrics.
//! - [`inject`] / [`extract`]: W3C trace context on `http::HeaderMap`s (the
//!   provider HTTP client injects it into every upstream request).
//! - [`TraceLink`], [`span_with_link`], [`add_link`]: how background work
//!   (polls, callback deliveries, StreamStatus) links back to the trace of
//!   the call that started a run.
//! - [`metrics()`]: the instruments (RPC and upstream counts and latency,
//!   upstream status, schema cache hits/misses, rate-limit remaining, open
//!   circuits, active streams), exported over OTLP and/or as a Prometheus
//!   text page ([`PrometheusMetrics`]).
//!
//! Secrets never reach telemetry: span fields are chosen here and in the
//! HTTP client (method, host, port, path without query), never headers or
//! bodies; metric labels are low-cardinality names (provider, dialect,
//! method, status), never run or workflow ids.

mod init;
mod json_log;
mod links;
mod metrics;
mod propagation;
mod rpc;
mod settings;

pub use init::{PrometheusMetrics, Telemetry, TelemetryBuilder, TelemetryError};
pub use links::{TraceLink, add_link, span_with_link};
pub use metrics::{ActiveStream, Metrics, SchemaCacheOutcome, metrics};
pub use propagation::{extract, inject};
pub use rpc::{RpcBody, RpcTelemetry, RpcTelemetryLayer};
pub use settings::{LogFormat, TelemetrySettings};

/// The current span's W3C `traceparent`, to store in a run record so later
/// background work can link to the originating trace (see [`TraceLink`]).
/// `None` when tracing is off or there is no current span.
pub fn current_trace_link() -> Option<TraceLink> {
    TraceLink::of(&tracing::Span::current())
}
