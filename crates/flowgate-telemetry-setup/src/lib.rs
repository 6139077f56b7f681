//! flowgate's telemetry set-up, used by the binary only (the engine crates
//! depend on the API crate `flowgate-telemetry`, which has no exporter and
//! no gRPC stack).
//!
//! - [`Telemetry::builder`] installs the global `tracing` subscriber (text or
//!   JSON log lines on stderr, JSON lines carrying `trace_id`/`span_id`), and,
//!   when an OTLP endpoint is configured, the OpenTelemetry layer that turns
//!   spans into OTLP/gRPC traces. It returns the providers so shutdown can
//!   flush them ([`Telemetry::shutdown`]) and accepts exporter overrides for
//!   tests. With no endpoint there is no exporter and no background task.
//!   With metrics on it installs the meter behind
//!   [`flowgate_telemetry::metrics()`] and, when asked, a Prometheus text
//!   page ([`PrometheusMetrics`]).
//! - [`RpcTelemetryLayer`]: the tower layer that opens one server span per
//!   gRPC call (`rpc.*` attributes, the caller's W3C `traceparent`
//!   continued) and records the RPC metrics.

mod export_watch;
mod init;
mod json_log;
mod rpc;
mod settings;

pub use init::{PrometheusMetrics, Telemetry, TelemetryBuilder, TelemetryError};
pub use rpc::{RpcBody, RpcTelemetry, RpcTelemetryLayer};
pub use settings::{LogFormat, TelemetrySettings};
