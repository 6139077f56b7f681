//! Catching panics: a panic anywhere in a call (the handler, a layer below,
//! or while a streaming body produces an item) becomes INTERNAL with
//! ErrorInfo reason `INTERNAL_PANIC`. The panic message is logged once as
//! a structured event (`panic.message`, by the hook of
//! [`crate::logging::route_panics`]) and never sent to the caller.
//!
//! Design: `std::panic::catch_unwind` around the inner service's `call`,
//! around each poll of its future, and around each poll of the response
//! body; no boxing, no backtrace capture (the process's panic hook decides
//! that). After a panic the inner future or body is dropped, never polled
//! again. A panic before the response headers answers a trailers-only
//! status; a panic inside a streaming body ends the stream with the status
//! in its trailers.

use std::{
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    task::{Context, Poll},
};

use flowgate_core::{ErrorClass, GatewayError};
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

/// The ErrorInfo reason of a call that panicked.
pub const INTERNAL_PANIC: &str = flowgate_core::reason::Reason::InternalPanic.as_str();

/// The call-level answer to a panic. Says nothing about the panic itself.
fn panic_error() -> GatewayError {
    GatewayError::new(
        ErrorClass::Internal,
        INTERNAL_PANIC,
        "internal error: the gateway failed while handling this call",
    )
}

/// The status of a call that panicked, for the protocol adapters above
/// this layer that catch their own panics ([`crate::connect`]).
pub(crate) fn panic_status() -> tonic::Status {
    crate::status::to_status(&panic_error())
}

/// Notes a caught panic. The message itself was logged by the panic hook
/// `serve` installs (`crate::logging::route_panics`), once, as a structured
/// event in the call's span; this only says how the call was answered.
pub(crate) fn log_panic(method: &'static str) {
    tracing::warn!(rpc.method = method, "answered INTERNAL_PANIC");
}

/// Wraps a service so panics become `INTERNAL_PANIC` answers.
#[derive(Debug, Clone, Copy)]
pub struct CatchPanicLayer {
    methods: &'static [&'static str],
}

impl CatchPanicLayer {
    /// `methods` (`package.Service/Method`) name the method in the log
    /// event; other paths are logged as `_OTHER`.
    pub fn new(methods: &'static [&'static str]) -> Self {
        Self { methods }
    }
}

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic {
            inner,
            methods: self.methods,
        }
    }
}

/// The service [`CatchPanicLayer`] builds.
#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
    methods: &'static [&'static str],
}

/// The known method `path` names, or `_OTHER`.
pub(crate) fn method_of(methods: &[&'static str], path: &str) -> &'static str {
    let path = path.strip_prefix('/').unwrap_or(path);
    methods
        .iter()
        .find(|known| **known == path)
        .copied()
        .unwrap_or("_OTHER")
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CatchPanic<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<PanicSafeBody<ResBody>>;
    type Error = S::Error;
    type Future = CatchPanicFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let method = method_of(self.methods, request.uri().path());
        let inner = &mut self.inner;
        match catch_unwind(AssertUnwindSafe(|| inner.call(request))) {
            Ok(future) => CatchPanicFuture {
                future: Some(future),
                method,
            },
            Err(_) => {
                log_panic(method);
                CatchPanicFuture {
                    future: None,
                    method,
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`CatchPanic`]; `None` once it panicked.
    #[derive(Debug)]
    pub struct CatchPanicFuture<F> {
        #[pin]
        future: Option<F>,
        method: &'static str,
    }
}

impl<F, B, E> Future for CatchPanicFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<PanicSafeBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let method = *this.method;
        let Some(future) = this.future.as_mut().as_pin_mut() else {
            return Poll::Ready(Ok(panic_response()));
        };
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => {
                this.future.set(None);
                Poll::Ready(result.map(|response| {
                    response.map(|inner| PanicSafeBody {
                        inner: Some(inner),
                        trailers: None,
                        method,
                    })
                }))
            }
            Err(_) => {
                this.future.set(None);
                log_panic(method);
                Poll::Ready(Ok(panic_response()))
            }
        }
    }
}

/// The trailers-only answer to a call that panicked before its headers.
fn panic_response<B>() -> Response<PanicSafeBody<B>> {
    let (parts, ()) = super::error_response::<()>(&panic_error()).into_parts();
    Response::from_parts(
        parts,
        PanicSafeBody {
            inner: None,
            trailers: None,
            method: "_OTHER",
        },
    )
}

/// The status trailers of a stream that panicked mid-way.
fn panic_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    // A failure to encode would leave the trailers without a status, which
    // clients read as INTERNAL too; there is nothing better to send.
    let _ = panic_status().add_header(&mut trailers);
    trailers
}

pin_project_lite::pin_project! {
    /// A response body whose panics end the stream with `INTERNAL_PANIC`
    /// trailers instead of tearing down the connection's task.
    pub struct PanicSafeBody<B> {
        #[pin]
        inner: Option<B>,
        trailers: Option<HeaderMap>,
        method: &'static str,
    }
}

impl<B> std::fmt::Debug for PanicSafeBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PanicSafeBody").finish_non_exhaustive()
    }
}

impl<B: Body> Body for PanicSafeBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        match catch_unwind(AssertUnwindSafe(|| inner.poll_frame(cx))) {
            Ok(frame) => frame,
            Err(_) => {
                this.inner.set(None);
                log_panic(this.method);
                Poll::Ready(Some(Ok(Frame::trailers(panic_trailers()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.trailers.is_none() && self.inner.as_ref().is_none_or(B::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(inner) if self.trailers.is_none() => inner.size_hint(),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full, StreamBody};
    use tonic::Code;
    use tonic_types::StatusExt as _;

    const METHODS: &[&str] = &["pkg.Svc/Call"];

    fn status_of(headers: &HeaderMap) -> tonic::Status {
        tonic::Status::from_header_map(headers).expect("a grpc-status")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_panic() {
        let service = tower::service_fn(|_: Request<()>| async {
            if true {
                panic!("secret detail {}", 42);
            }
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
        });
        let mut service = CatchPanicLayer::new(METHODS).layer(service);
        let request = Request::builder().uri("/pkg.Svc/Call").body(()).unwrap();
        let response = service.call(request).await.unwrap();
        let status = status_of(response.headers());
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            INTERNAL_PANIC
        );
        assert!(!status.message().contains("secret"), "{}", status.message());
        let body = response.into_body().collect().await.unwrap();
        assert!(body.to_bytes().is_empty());
    }

    #[tokio::test]
    async fn a_panic_while_calling_answers_internal_panic() {
        #[derive(Clone)]
        struct PanicsOnCall;
        impl Service<Request<()>> for PanicsOnCall {
            type Response = Response<Full<Bytes>>;
            type Error = std::convert::Infallible;
            type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, _: Request<()>) -> Self::Future {
                panic!("in call")
            }
        }
        let mut service = CatchPanicLayer::new(METHODS).layer(PanicsOnCall);
        let response = service.call(Request::new(())).await.unwrap();
        assert_eq!(status_of(response.headers()).code(), Code::Internal);
    }

    #[tokio::test]
    async fn a_panic_inside_a_stream_ends_it_with_internal_panic_trailers() {
        let service = tower::service_fn(|_: Request<()>| async {
            let items = futures::stream::iter(0..3).map(|index| {
                assert!(index < 1, "stream item {index}");
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"item")))
            });
            Ok::<_, std::convert::Infallible>(Response::new(StreamBody::new(items)))
        });
        let mut service = CatchPanicLayer::new(METHODS).layer(service);
        let response = service.call(Request::new(())).await.unwrap();
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "item");
        let last = body.frame().await.unwrap().unwrap();
        let trailers = last.into_trailers().unwrap();
        let status = status_of(&trailers);
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            INTERNAL_PANIC
        );
        assert!(body.frame().await.is_none());
    }

    use futures::StreamExt as _;
}
