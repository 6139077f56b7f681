//! Span links through a real tracing subscriber and OpenTelemetry SDK.
//!
//! This is the only test in its binary on purpose: `tracing` keeps its
//! callsite interest and max-level caches per process, and a test running in
//! parallel without a subscriber can race them (CI once saw the Invoke span
//! missing from the exporter when this test shared a binary with others).

use flowgate_telemetry::{TraceLink, current_trace_link, span_with_link};
use opentelemetry::trace::{SpanId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::prelude::*;

fn with_tracing(body: impl FnOnce()) -> Vec<SpanData> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::with_default(subscriber, body);
    if let Err(e) = provider.force_flush() {
        panic!("flush failed: {e}");
    }
    exporter
        .get_finished_spans()
        .unwrap_or_else(|e| panic!("no spans: {e}"))
}

#[test]
fn a_background_span_links_to_the_originating_span() {
    let mut stored = None;
    let spans = with_tracing(|| {
        let invoke = tracing::info_span!("Invoke");
        invoke.in_scope(|| {
            stored = current_trace_link().map(String::from);
        });
        drop(invoke);
        let link = stored.as_deref().and_then(TraceLink::parse);
        assert!(link.is_some());
        // Created inside another span, it is still a new root.
        let unrelated = tracing::info_span!("unrelated");
        let _entered = unrelated.enter();
        span_with_link("flowgate.poll", link.as_ref()).in_scope(|| {});
    });
    let names: Vec<_> = spans.iter().map(|s| s.name.to_string()).collect();
    let invoke = spans
        .iter()
        .find(|s| s.name == "Invoke")
        .unwrap_or_else(|| panic!("no Invoke span among {names:?}"));
    let poll = spans
        .iter()
        .find(|s| s.name == "flowgate.poll")
        .unwrap_or_else(|| panic!("no flowgate.poll span among {names:?}"));
    let stored = TraceLink::parse(stored.as_deref().unwrap()).unwrap();
    assert_eq!(
        stored.trace_id(),
        invoke.span_context.trace_id().to_string()
    );
    assert_eq!(stored.span_id(), invoke.span_context.span_id().to_string());
    assert_ne!(poll.span_context.trace_id(), invoke.span_context.trace_id());
    assert_eq!(poll.parent_span_id, SpanId::INVALID);
    assert_eq!(poll.links.links.len(), 1);
    let linked = &poll.links.links[0].span_context;
    assert_eq!(linked.trace_id(), invoke.span_context.trace_id());
    assert_eq!(linked.span_id(), invoke.span_context.span_id());
}
