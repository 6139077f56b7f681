//! Authentication: every call is resolved to a caller
//! ([`crate::auth::CallerRegistry::authenticate`]) before it reaches a
//! limit or the service, or answered UNAUTHENTICATED with ErrorInfo reason
//! `CALLER_UNAUTHENTICATED` (never saying why: missing, malformed, unknown
//! and revoked keys look the same).
//!
//! Health (`grpc.health.v1.Health`) is always open for probes; reflection
//! is open or authenticated by `auth.reflection`. The caller travels on as
//! an `Arc<Caller>` request extension; its name is recorded as
//! `flowgate.caller` on the server span and set on the call's access log
//! record ([`CallRecord`]). The `authorization` header is
//! removed once read, so nothing below can log the key.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use flowgate_core::{ErrorClass, GatewayError, reason::Reason};
use http::{Request, Response, header::AUTHORIZATION};
use tower::{Layer, Service};

use flowgate_telemetry::CallRecord;

use crate::auth::{CallerRegistry, PeerIdentity};

const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";
const REFLECTION_PREFIX: &str = "/grpc.reflection.";

/// Resolves the caller of every call.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    registry: Arc<CallerRegistry>,
}

impl AuthLayer {
    /// Authenticates against `registry`.
    pub fn new(registry: Arc<CallerRegistry>) -> Self {
        Self { registry }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            registry: Arc::clone(&self.registry),
        }
    }
}

/// The service [`AuthLayer`] builds.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    registry: Arc<CallerRegistry>,
}

/// The UNAUTHENTICATED answer (the same for every cause).
pub fn unauthenticated() -> GatewayError {
    GatewayError::new(
        ErrorClass::Unauthenticated,
        Reason::CallerUnauthenticated,
        "the call carries no valid caller credentials",
    )
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Auth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = AuthFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        let open = path.starts_with(HEALTH_PREFIX)
            || (path.starts_with(REFLECTION_PREFIX) && self.registry.reflection_open());
        let authorization = request.headers_mut().remove(AUTHORIZATION);
        if open {
            return AuthFuture::Inner {
                future: self.inner.call(request),
            };
        }
        let resolved = self.registry.authenticate(
            authorization.as_ref().map(|value| value.as_bytes()),
            request.extensions().get::<PeerIdentity>(),
        );
        let record = request.extensions().get::<Arc<CallRecord>>();
        match resolved {
            Ok(caller) => {
                tracing::Span::current().record("flowgate.caller", caller.name());
                if let Some(record) = record {
                    record.set_caller(caller.shared_name());
                }
                request.extensions_mut().insert(caller);
                AuthFuture::Inner {
                    future: self.inner.call(request),
                }
            }
            Err(_) => {
                if let Some(record) = record {
                    record.update(|details| {
                        details.reason = Some(Reason::CallerUnauthenticated.into());
                    });
                }
                AuthFuture::Refused {
                    response: Some(super::error_response(&unauthenticated())),
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Auth`].
    #[project = AuthFutureProj]
    #[derive(Debug)]
    pub enum AuthFuture<F, B> {
        /// Authenticated (or open): the inner call.
        Inner { #[pin] future: F },
        /// Refused: the answer, once.
        Refused { response: Option<Response<B>> },
    }
}

impl<F, B, E> Future for AuthFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AuthFutureProj::Inner { future } => future.poll(cx),
            AuthFutureProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| super::error_response(&unauthenticated())))),
        }
    }
}
