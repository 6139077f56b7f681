//! Malformed requests: a request message that is not valid protobuf for
//! its method, or nests deeper than prost's recursion limit (100; each
//! `google.protobuf.Struct` level costs three: Struct, map entry, Value, so
//! 32 objects nested in `inputs` decode and 33 do not), fails to decode inside tonic's
//! generated server, which answers INTERNAL ("failed to decode Protobuf
//! message: …") before the service sees it. The caller sent it, so this
//! layer answers INVALID_ARGUMENT with ErrorInfo reason `MALFORMED_REQUEST`
//! instead, keeping prost's description of what was wrong (capped). The
//! same for a gRPC-Web body tonic-web cannot read (bad base64 in
//! `grpc-web-text`), which it answers INTERNAL "tonic-web: …".
//!
//! How it is recognised: tonic puts the `Status` of a trailers-only answer
//! in the response's extensions; a decode failure is one with code
//! INTERNAL, no details (every status flowgate builds has details) and
//! prost's (or tonic-web's) message prefix. Only unary and server-streaming requests (every
//! flowgate method) decode before the handler runs, so they all get here.
//!
//! What tonic answers itself and this layer leaves alone: a message larger
//! than `server.max_request_bytes` (OUT_OF_RANGE), an unsupported
//! `grpc-encoding` (UNIMPLEMENTED), a body that ends inside a frame or a
//! unary call without a message (INTERNAL "Missing request message.").

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use flowgate_core::{ErrorClass, GatewayError};
use http::{Request, Response};
use tonic::{Code, Status};
use tower::{Layer, Service};

/// The ErrorInfo reason of a request that could not be decoded.
pub const MALFORMED_REQUEST: &str = flowgate_core::reason::Reason::MalformedRequest.as_str();
/// How prost's decode errors begin (`prost::DecodeError`'s `Display`).
const DECODE_FAILURE: &str = "failed to decode Protobuf message";
/// How tonic-web's failures to read a gRPC-Web request body begin.
const GRPC_WEB_FAILURE: &str = "tonic-web:";

/// Rewrites tonic's INTERNAL decode failures as INVALID_ARGUMENT.
#[derive(Debug, Clone, Copy, Default)]
pub struct MalformedRequestLayer;

impl<S> Layer<S> for MalformedRequestLayer {
    type Service = MalformedRequest<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MalformedRequest { inner }
    }
}

/// The service [`MalformedRequestLayer`] builds.
#[derive(Debug, Clone)]
pub struct MalformedRequest<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MalformedRequest<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = MalformedRequestFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        MalformedRequestFuture {
            future: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`MalformedRequest`].
    #[derive(Debug)]
    pub struct MalformedRequestFuture<F> {
        #[pin]
        future: F,
    }
}

impl<F, B, E> Future for MalformedRequestFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = ready!(self.project().future.poll(cx))?;
        let Some(problem) = response
            .extensions()
            .get::<Status>()
            .and_then(decode_failure)
        else {
            return Poll::Ready(Ok(response));
        };
        let error = GatewayError::new(
            ErrorClass::InvalidArgument,
            MALFORMED_REQUEST,
            format!("malformed request: {problem}"),
        );
        Poll::Ready(Ok(super::error_response(&error)))
    }
}

/// What prost said was wrong, when `status` is tonic's decode failure.
fn decode_failure(status: &Status) -> Option<&str> {
    if status.code() != Code::Internal || !status.details().is_empty() {
        return None;
    }
    let message = status.message();
    let rest = message
        .strip_prefix(DECODE_FAILURE)
        .or_else(|| message.strip_prefix(GRPC_WEB_FAILURE))?;
    Some(rest.trim_start_matches([':', ' ']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt as _;

    fn answer(
        status: Status,
    ) -> MalformedRequest<
        impl Service<Request<()>, Response = Response<String>, Error = std::convert::Infallible>,
    > {
        let status = std::sync::Arc::new(std::sync::Mutex::new(Some(status)));
        MalformedRequestLayer.layer(tower::service_fn(move |_: Request<()>| {
            let status = status.lock().unwrap().take().unwrap();
            std::future::ready(Ok::<_, std::convert::Infallible>(
                status.into_http::<String>(),
            ))
        }))
    }

    #[tokio::test]
    async fn decode_failures_become_invalid_argument() {
        let decode_error =
            <prost_types::Value as prost::Message>::decode(&b"\x0a\xff"[..]).unwrap_err();
        let mut service = answer(Status::internal(decode_error.to_string()));
        let response = service.call(Request::new(())).await.unwrap();
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            MALFORMED_REQUEST
        );
        assert!(
            status.message().starts_with("malformed request: "),
            "{}",
            status.message()
        );
    }

    #[tokio::test]
    async fn other_internal_errors_pass_unchanged() {
        for status in [
            Status::internal("Missing request message."),
            Status::with_error_details(
                Code::Internal,
                format!("{DECODE_FAILURE}: from an upstream"),
                tonic_types::ErrorDetails::with_error_info(
                    "X",
                    "flowgate",
                    std::collections::HashMap::new(),
                ),
            ),
            Status::invalid_argument(DECODE_FAILURE),
        ] {
            let code = status.code();
            let mut service = answer(status);
            let response = service.call(Request::new(())).await.unwrap();
            assert_eq!(
                Status::from_header_map(response.headers()).unwrap().code(),
                code
            );
        }
    }
}
