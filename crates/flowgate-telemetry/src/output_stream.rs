//! What one InvokeStream call streamed: time to the first output, total
//! duration, chunk and byte counts. Recorded once, when the stream ends
//! (completed, failed or dropped by its caller), on the call's span and in
//! the `flowgate.invoke_stream.*` histograms.

use std::time::{Duration, Instant};

/// The span fields [`OutputStreamStats`] fills in; the span that records
/// them must declare each (`field::Empty`).
pub const OUTPUT_STREAM_FIELDS: [&str; 4] = [
    "flowgate.stream.first_byte_ms",
    "flowgate.stream.duration_ms",
    "flowgate.stream.chunks",
    "flowgate.stream.bytes",
];

/// Counters of one streamed call (see the module docs).
#[derive(Debug)]
pub struct OutputStreamStats {
    started: Instant,
    first_byte: Option<Duration>,
    chunks: u64,
    bytes: u64,
    provider: Option<String>,
    span: tracing::Span,
}

impl OutputStreamStats {
    /// Starts counting now, for the call whose span is `span`.
    pub fn start(span: tracing::Span) -> Self {
        Self {
            started: Instant::now(),
            first_byte: None,
            chunks: 0,
            bytes: 0,
            provider: None,
            span,
        }
    }

    /// The provider serving the stream (the histograms' label).
    pub fn provider(&mut self, provider: &str) {
        if self.provider.is_none() {
            self.provider = Some(provider.to_owned());
        }
    }

    /// `bytes` of output went to the caller (one delta, or the whole
    /// output of a final event).
    pub fn output(&mut self, bytes: usize) {
        if self.first_byte.is_none() {
            self.first_byte = Some(self.started.elapsed());
        }
        self.chunks = self.chunks.saturating_add(1);
        self.bytes = self
            .bytes
            .saturating_add(u64::try_from(bytes).unwrap_or(u64::MAX));
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

impl Drop for OutputStreamStats {
    fn drop(&mut self) {
        let total = self.started.elapsed();
        let [first_byte, duration, chunks, bytes] = OUTPUT_STREAM_FIELDS;
        if let Some(first) = self.first_byte {
            self.span.record(first_byte, millis(first));
        }
        self.span.record(duration, millis(total));
        self.span
            .record(chunks, i64::try_from(self.chunks).unwrap_or(i64::MAX));
        self.span
            .record(bytes, i64::try_from(self.bytes).unwrap_or(i64::MAX));
        if let Some(provider) = &self.provider {
            crate::metrics().record_invoke_stream(provider, self.first_byte, total);
        }
    }
}
