//! Watching the OTLP exporters: a collector that cannot be reached must be
//! visible while running, not only as a cryptic error at exit.
//!
//! Each export's result is looked at: the first failure of a streak logs one
//! `warn` line (signal, endpoint, cause), every failed export counts in
//! `flowgate.telemetry.export_failures{signal}`, the first success after a
//! streak logs one `info` line, and at shutdown [`ExportHealth::at_shutdown`]
//! says what was lost and why.

use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    metrics::{Temporality, data::ResourceMetrics, exporter::PushMetricExporter},
    trace::{SpanData, SpanExporter},
};

/// The export state of one signal (`traces` or `metrics`). Clones share it.
#[derive(Debug, Clone)]
pub(crate) struct ExportHealth(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    signal: &'static str,
    /// The endpoint without any `user:password@`.
    endpoint: String,
    failing: AtomicBool,
    failures: AtomicU64,
    last_error: Mutex<String>,
}

/// `scheme://host:port/path` without the userinfo, query or fragment (where
/// credentials hide), fit for a log line.
fn shown_endpoint(endpoint: &str) -> String {
    let endpoint = endpoint
        .split_once(['?', '#'])
        .map_or(endpoint, |(before, _)| before);
    let (scheme, rest) = endpoint.split_once("://").unwrap_or(("", endpoint));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if scheme.is_empty() {
        format!("{host}{path}")
    } else {
        format!("{scheme}://{host}{path}")
    }
}

/// The cause in plain words (the SDK's `Display`, not its debug text).
fn cause(err: &OTelSdkError) -> String {
    match err {
        OTelSdkError::InternalFailure(reason) => reason.clone(),
        other => other.to_string(),
    }
}

impl ExportHealth {
    pub(crate) fn new(signal: &'static str, endpoint: &str) -> Self {
        Self(Arc::new(Inner {
            signal,
            endpoint: shown_endpoint(endpoint),
            failing: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
        }))
    }

    /// Looks at one export's result.
    fn record(&self, result: &OTelSdkResult) {
        let inner = &*self.0;
        match result {
            Ok(()) => {
                if inner.failing.swap(false, Ordering::AcqRel) {
                    tracing::info!(
                        signal = inner.signal,
                        endpoint = %inner.endpoint,
                        failed_exports = inner.failures.load(Ordering::Acquire),
                        "OTLP export works again"
                    );
                }
            }
            Err(err) => {
                let cause = cause(err);
                inner.failures.fetch_add(1, Ordering::AcqRel);
                flowgate_telemetry::metrics().telemetry_export_failed(inner.signal);
                if !inner.failing.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        signal = inner.signal,
                        endpoint = %inner.endpoint,
                        error = %cause,
                        "OTLP export failed: the collector cannot be reached or refused the \
                         data; this signal's data is dropped until it recovers (logged once \
                         per failure streak, counted in flowgate.telemetry.export_failures)"
                    );
                }
                if let Ok(mut last) = inner.last_error.lock() {
                    *last = cause;
                }
            }
        }
    }

    /// Logs the outcome of the exporter's shutdown (its final flush) in
    /// plain words.
    pub(crate) fn at_shutdown(&self, result: OTelSdkResult) {
        let inner = &*self.0;
        let Err(err) = result else {
            return;
        };
        let failures = inner.failures.load(Ordering::Acquire);
        if inner.failing.load(Ordering::Acquire) {
            let last = inner
                .last_error
                .lock()
                .map(|last| last.clone())
                .unwrap_or_default();
            tracing::warn!(
                signal = inner.signal,
                endpoint = %inner.endpoint,
                error = %last,
                failed_exports = failures,
                "OTLP collector unreachable at shutdown: the {} still buffered were not \
                 delivered",
                inner.signal
            );
        } else {
            tracing::warn!(
                signal = inner.signal,
                endpoint = %inner.endpoint,
                error = %cause(&err),
                "flushing {} to the OTLP collector at shutdown did not finish",
                inner.signal
            );
        }
    }
}

/// A span exporter whose results [`ExportHealth`] watches.
pub(crate) struct WatchedSpans<E> {
    pub(crate) inner: E,
    pub(crate) health: ExportHealth,
}

impl<E: fmt::Debug> fmt::Debug for WatchedSpans<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<E: SpanExporter> SpanExporter for WatchedSpans<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.health.record(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A metric exporter whose results [`ExportHealth`] watches.
pub(crate) struct WatchedMetrics<E> {
    pub(crate) inner: E,
    pub(crate) health: ExportHealth,
}

impl<E: PushMetricExporter> PushMetricExporter for WatchedMetrics<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.health.record(&result);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    use super::shown_endpoint;

    #[test]
    fn the_endpoint_is_shown_without_credentials() {
        assert_eq!(
            shown_endpoint("http://user:secret@collector:4317/v1"),
            "http://collector:4317/v1"
        );
        assert_eq!(
            shown_endpoint("http://collector:4317"),
            "http://collector:4317"
        );
        assert_eq!(shown_endpoint("collector:4317"), "collector:4317");
        assert_eq!(
            shown_endpoint("https://collector:4318/v1/traces?api_key=s3cret#x"),
            "https://collector:4318/v1/traces"
        );
    }
}
