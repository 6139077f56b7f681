//! The gRPC server span and RPC metrics, as a tower layer.
//!
//! One span per call, named `package.Service/Method` (semantic conventions
//! for RPC), kind SERVER, with `rpc.system = "grpc"`, `rpc.service`,
//! `rpc.method` and, once known, `rpc.grpc.status_code` (from the headers
//! of a trailers-only answer or from the trailers), and `flowgate.caller`
//! (recorded by the gateway's auth layer). A caller's
//! `traceparent` makes it a child of the caller's span. The span stays open
//! until the response body ends, so streaming calls are timed whole.
//!
//! Each call also leaves one access log line (target `flowgate::access`,
//! see [`flowgate_telemetry::CallRecord`]): caller, method, provider,
//! workflow, gRPC code, reason, duration, run id, trace id; its RPC metrics
//! carry a `caller` label (configured names or `unauthenticated`).
//!
//! Names come from a fixed list of served methods: any other path is
//! labelled `_OTHER`, so scanners cannot blow up metric cardinality, and no
//! per-call string is built.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use opentelemetry::trace::TraceContextExt as _;
use tower::{Layer, Service};
use tracing::{Instrument as _, field};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use flowgate_telemetry::{CallRecord, extract, metrics};

const OTHER: &str = "_OTHER";
/// Health checks are logged at debug (probes call every few seconds).
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
/// `UNKNOWN`: the service failed or the body ended without a status.
const CODE_UNKNOWN: i32 = 2;
/// `CANCELLED`: the response was dropped before it finished.
const CODE_CANCELLED: i32 = 1;
/// `INTERNAL`: the call panicked (the catch-panic layer outside answers
/// `INTERNAL_PANIC`).
const CODE_INTERNAL: i32 = 13;

/// Wraps a gRPC router: a server span and the RPC metrics per call.
#[derive(Debug, Clone, Copy)]
pub struct RpcTelemetryLayer {
    methods: &'static [&'static str],
}

impl RpcTelemetryLayer {
    /// `methods` are the served methods as `package.Service/Method`.
    pub fn new(methods: &'static [&'static str]) -> Self {
        Self { methods }
    }
}

impl<S> Layer<S> for RpcTelemetryLayer {
    type Service = RpcTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcTelemetry {
            inner,
            methods: self.methods,
        }
    }
}

/// The service [`RpcTelemetryLayer`] builds.
#[derive(Debug, Clone)]
pub struct RpcTelemetry<S> {
    inner: S,
    methods: &'static [&'static str],
}

/// `(full name, service, method)` of a request path, from the known list.
fn rpc_name(methods: &[&'static str], path: &str) -> (&'static str, &'static str, &'static str) {
    let path = path.strip_prefix('/').unwrap_or(path);
    methods
        .iter()
        .find(|known| **known == path)
        .and_then(|known| {
            let (service, method) = known.split_once('/')?;
            Some((*known, service, method))
        })
        .unwrap_or((OTHER, OTHER, OTHER))
}

/// `grpc-status` of a header or trailer map.
fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse().ok())
}

/// Codes that mean the server failed (semantic conventions for gRPC server
/// spans): UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
/// DATA_LOSS. Caller errors (INVALID_ARGUMENT, NOT_FOUND, …) are not.
fn is_server_error(code: i32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// The name of a gRPC status code, for the access log.
fn code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|index| NAMES.get(index).copied())
        .unwrap_or("UNKNOWN")
}

/// Records the call's outcome once: on its status, or when dropped.
#[derive(Debug)]
struct Completion {
    span: tracing::Span,
    started: Instant,
    name: &'static str,
    service: &'static str,
    method: &'static str,
    record: Arc<CallRecord>,
    done: bool,
}

impl Completion {
    fn finish(&mut self, code: i32) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.span.record("rpc.grpc.status_code", code);
        if is_server_error(code) {
            self.span.record("otel.status_code", "error");
        }
        let elapsed: Duration = self.started.elapsed();
        let caller = self.record.caller();
        metrics().record_rpc(self.service, self.method, caller, code, elapsed);
        self.log_access(code, elapsed);
    }

    /// The access log line (`flowgate::access`): health checks at debug,
    /// every other call at info.
    fn log_access(&self, code: i32, elapsed: Duration) {
        let health = self.service == HEALTH_SERVICE;
        if !(tracing::enabled!(target: "flowgate::access", tracing::Level::INFO)
            || health && tracing::enabled!(target: "flowgate::access", tracing::Level::DEBUG))
        {
            return;
        }
        let details = self.record.take_details();
        let caller = self
            .record
            .caller()
            .map_or(flowgate_telemetry::UNAUTHENTICATED, |name| &**name);
        let context = self.span.context();
        let span_context = context.span().span_context().clone();
        let trace_id = span_context
            .is_valid()
            .then(|| field::display(span_context.trace_id()));
        macro_rules! access {
            ($level:expr) => {
                tracing::event!(
                    target: "flowgate::access",
                    $level,
                    caller,
                    method = self.name,
                    provider = details.provider.as_deref(),
                    workflow = details.workflow.as_deref(),
                    code = code_name(code),
                    reason = details.reason.as_deref(),
                    duration_ms = elapsed.as_secs_f64() * 1000.0,
                    credits = details.credits,
                    run_id = details.run_id.as_deref(),
                    trace_id,
                    "access"
                )
            };
        }
        if health {
            access!(tracing::Level::DEBUG);
        } else {
            access!(tracing::Level::INFO);
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        // Dropped while unwinding: the call panicked, it was not cancelled.
        let code = if std::thread::panicking() {
            CODE_INTERNAL
        } else {
            CODE_CANCELLED
        };
        self.finish(code);
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RpcTelemetry<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    ResBody: Body,
{
    type Response = Response<RpcBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let (name, service, method) = rpc_name(self.methods, request.uri().path());
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = name,
            otel.kind = "server",
            otel.status_code = field::Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = field::Empty,
            flowgate.caller = field::Empty,
        );
        if let Some(parent) = extract(request.headers()) {
            let _ = span.set_parent(parent);
        }
        // Filled in below (caller, provider, workflow, run id, reason) and
        // logged when the call ends.
        let record = CallRecord::new();
        request.extensions_mut().insert(Arc::clone(&record));
        let mut completion = Completion {
            span: span.clone(),
            started: Instant::now(),
            name,
            service,
            method,
            record,
            done: false,
        };
        // Entered while the inner layers take the call, so they can record
        // on it (the auth layer's `flowgate.caller`).
        let response = span.in_scope(|| self.inner.call(request)).instrument(span);
        Box::pin(async move {
            match response.await {
                Ok(response) => {
                    if let Some(code) = grpc_status(response.headers()) {
                        completion.finish(code);
                    }
                    Ok(response.map(|inner| RpcBody {
                        inner,
                        completion: Some(completion),
                    }))
                }
                Err(error) => {
                    completion.finish(CODE_UNKNOWN);
                    Err(error)
                }
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the call's status from its trailers
    /// and keeps the server span open until the body ends.
    pub struct RpcBody<B> {
        #[pin]
        inner: B,
        completion: Option<Completion>,
    }
}

impl<B> std::fmt::Debug for RpcBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcBody").finish_non_exhaustive()
    }
}

impl<B: Body> Body for RpcBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let code = match &frame {
            Some(Ok(frame)) => frame
                .trailers_ref()
                .map(|trailers| grpc_status(trailers).unwrap_or(CODE_UNKNOWN)),
            Some(Err(_)) | None => Some(CODE_UNKNOWN),
        };
        if let Some(code) = code
            && let Some(mut completion) = this.completion.take()
        {
            completion.finish(code);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METHODS: &[&str] = &["pkg.Svc/Call", "grpc.health.v1.Health/Check"];

    #[test]
    fn names_come_from_the_known_list() {
        assert_eq!(
            rpc_name(METHODS, "/pkg.Svc/Call"),
            ("pkg.Svc/Call", "pkg.Svc", "Call")
        );
        assert_eq!(rpc_name(METHODS, "/grpc.health.v1.Health/Check").2, "Check");
        assert_eq!(rpc_name(METHODS, "/pkg.Svc/Other"), (OTHER, OTHER, OTHER));
        assert_eq!(rpc_name(METHODS, "/../etc/passwd").0, OTHER);
    }

    #[test]
    fn server_errors() {
        assert!(is_server_error(13) && is_server_error(14) && is_server_error(2));
        assert!(!is_server_error(0) && !is_server_error(3) && !is_server_error(5));
    }
}
