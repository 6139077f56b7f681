//! JSON log lines with the current trace's `trace_id` and `span_id`.
//!
//! Wraps tracing-subscriber's JSON format: the line it writes gets two more
//! fields when the event happens inside a span that is part of a trace, so
//! a log search can jump to the trace and back. Span fields are not
//! written (no `span`/`spans`): the log layer sees events only (see
//! `init`), and span context lives in the trace.

use std::fmt;

use opentelemetry::trace::TraceContextExt as _;
use tracing::{Event, Subscriber};
use tracing_subscriber::{
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::{Format, Json, Writer},
    },
    registry::LookupSpan,
};

/// tracing-subscriber's JSON format plus `trace_id` and `span_id`.
#[derive(Debug)]
pub(crate) struct JsonWithTraceIds {
    inner: Format<Json>,
}

impl JsonWithTraceIds {
    pub(crate) fn new() -> Self {
        Self {
            inner: Format::default()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false),
        }
    }
}

/// The ids of the event's current span, when it is part of a trace.
fn trace_ids<S>(ctx: &FmtContext<'_, S, impl for<'a> FormatFields<'a> + 'static>) -> Option<String>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    // The log layer does not see spans (see `init`), so the current span
    // comes from the dispatcher, not from the layer's filtered context.
    let _ = ctx;
    let id = tracing::Span::current().id()?;
    // Inside a subscriber callback, `get_default` sees the global dispatcher
    // (the one this formatter is installed in).
    let cx = tracing::dispatcher::get_default(|dispatch| {
        tracing_opentelemetry::get_otel_context(&id, dispatch)
    })?;
    let otel_span = cx.span();
    let sc = otel_span.span_context();
    sc.is_valid().then(|| {
        format!(
            ",\"trace_id\":\"{}\",\"span_id\":\"{}\"",
            sc.trace_id(),
            sc.span_id()
        )
    })
}

impl<S, N> FormatEvent<S, N> for JsonWithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some(ids) = trace_ids(ctx) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let object = line.trim_end();
        match object.strip_suffix('}') {
            Some(head) => writeln!(writer, "{head}{ids}}}"),
            None => writer.write_str(&line),
        }
    }
}
