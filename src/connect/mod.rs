//! The Connect protocol (connectrpc.com) on the gRPC port, as a tower
//! layer outside the gRPC edge: a Connect request becomes the gRPC request
//! the routes serve, and the gRPC answer becomes a Connect answer, so
//! authentication, limits, telemetry and the error table are the gRPC
//! path's own.
//!
//! Recognised by content type on a `POST`: `application/json` or
//! `application/proto` for unary methods, `application/connect+json` or
//! `application/connect+proto` for streaming ones (anything else, gRPC and
//! gRPC-Web included, passes on untouched). JSON is the proto3 JSON
//! mapping, transcoded from the descriptor set by `prost-reflect`, for
//! `flowgate.v1` and health; binary works for every route, server
//! reflection's bidirectional stream included (so `buf curl --protocol
//! connect` resolves the schema), its envelopes passed through as frames.
//!
//! A request body is read (within `server.max_request_bytes`) and
//! transcoded only when the gRPC service reads its request, so after
//! authentication and load shedding; an oversized, undecodable or
//! compressed body is INVALID_ARGUMENT with reason `MALFORMED_REQUEST`.
//! Errors are Connect error JSON whose `details` are the status's
//! `google.rpc` details (`type`, base64 `value`, and `debug` in JSON).
//! GET requests are not served.
//!
//! This layer sits above the catch-panic layer (whose answers are gRPC), so
//! it catches panics in its own work too (recognising a call, translating
//! its answer, each poll of a streaming answer): a unary call is answered
//! HTTP 500 `internal`, a stream ends with an end-of-stream `internal`
//! error, both with ErrorInfo reason `INTERNAL_PANIC`.

mod answer;
mod codec;
mod error;
mod request;
mod stream;

use std::{
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::{
    layers::panic::{log_panic, method_of, panic_status},
    server::SERVED_METHODS,
};
use request::Shape;

pub use error::{code_name, http_status};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves Connect requests through the gRPC service it wraps.
#[derive(Debug, Clone, Copy)]
pub struct ConnectLayer {
    max_request_bytes: usize,
}

impl ConnectLayer {
    /// Connect requests' bodies are read up to `max_request_bytes` (the
    /// gRPC routes' message limit).
    pub fn new(max_request_bytes: usize) -> Self {
        Self { max_request_bytes }
    }
}

impl<S> Layer<S> for ConnectLayer {
    type Service = Connect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Connect {
            inner,
            max_request_bytes: self.max_request_bytes,
        }
    }
}

/// The service [`ConnectLayer`] builds.
#[derive(Debug, Clone)]
pub struct Connect<S> {
    inner: S,
    max_request_bytes: usize,
}

impl<S, ResBody> Service<Request<Body>> for Connect<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ConnectFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // Our own code, above the catch-panic layer: a panic while
        // recognising is answered too (unary JSON: the shape is unknown).
        let Ok(recognised) = catch_unwind(AssertUnwindSafe(|| request::recognise(&request))) else {
            let method = method_of(SERVED_METHODS, request.uri().path());
            log_panic(method);
            let answer = answer::error(UNARY_JSON, &panic_status(), http::HeaderMap::new());
            return ready(answer, UNARY_JSON, method);
        };
        let call = match recognised {
            None => {
                return ConnectFuture::Grpc {
                    future: self.inner.call(request),
                };
            }
            Some(recognised) => recognised,
        };
        // Named in the log should a panic be caught below.
        let method = method_of(SERVED_METHODS, request.uri().path());
        let call = match call {
            Ok(call) => call,
            Err(request::Refusal::Http(status)) => {
                return ready(answer::refusal(status), UNARY_JSON, method);
            }
            Err(request::Refusal::Status(shape, status)) => {
                return ready(
                    answer::error(shape, &status, http::HeaderMap::new()),
                    shape,
                    method,
                );
            }
        };
        // The ready service serves this call; the clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let max = self.max_request_bytes;
        let shape = call.shape;
        ConnectFuture::Connect {
            shape,
            method,
            future: Box::pin(async move {
                let (mut parts, body) = request.into_parts();
                let body = if call.shape.streaming && call.method.is_none() {
                    // Binary envelopes are gRPC frames: passed on as they
                    // come (full duplex), bounded by the routes' limits.
                    body
                } else {
                    if let Err(status) = request::check_headers(&call, &parts.headers, max) {
                        return Ok(answer::error(call.shape, &status, http::HeaderMap::new()));
                    }
                    // Read and transcoded when the service reads it; a
                    // refusal is the error tonic answers with.
                    let call = call.clone();
                    let framed = futures::stream::once(async move {
                        request::grpc_body(&call, body, max).await.map(Frame::data)
                    });
                    Body::new(http_body_util::StreamBody::new(framed))
                };
                if let Err(status) = request::grpc_headers(&mut parts.headers) {
                    return Ok(answer::error(call.shape, &status, http::HeaderMap::new()));
                }
                // gRPC is HTTP/2: said so, the gRPC-Web layer below passes
                // the call through (it answers 400 to other HTTP/1.1).
                parts.version = http::Version::HTTP_2;
                let grpc = Request::from_parts(parts, body);
                let response = inner.call(grpc).await?;
                Ok(answer::translate(&call, response).await)
            }),
        }
    }
}

/// A future of [`Connect`]'s answer.
type BoxFuture<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

/// The shape answers take when the request's is not known.
const UNARY_JSON: Shape = Shape {
    encoding: request::Encoding::Json,
    streaming: false,
};

fn ready<F, E: Send + 'static>(
    response: Response<Body>,
    shape: Shape,
    method: &'static str,
) -> ConnectFuture<F, E> {
    ConnectFuture::Connect {
        shape,
        method,
        future: Box::pin(std::future::ready(Ok(response))),
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Connect`]: a gRPC call passed through, or
    /// a Connect call being translated.
    #[project = ConnectFutureProj]
    pub enum ConnectFuture<F, E> {
        /// A gRPC (or gRPC-Web, or unknown) request, untouched.
        Grpc { #[pin] future: F },
        /// A Connect request, answered in its `shape`; a panic while it
        /// is served is answered INTERNAL_PANIC.
        Connect { future: BoxFuture<E>, shape: Shape, method: &'static str },
    }
}

impl<F, E> std::fmt::Debug for ConnectFuture<F, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectFuture")
    }
}

impl<F, B, E> Future for ConnectFuture<F, E>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ConnectFutureProj::Grpc { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map(Body::new))),
            ConnectFutureProj::Connect {
                future,
                shape,
                method,
            } => match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                Ok(poll) => poll,
                Err(_) => {
                    log_panic(method);
                    // Ready now, so the panicked future is never polled
                    // again.
                    let answer = answer::error(*shape, &panic_status(), http::HeaderMap::new());
                    Poll::Ready(Ok(answer))
                }
            },
        }
    }
}
