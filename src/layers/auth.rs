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

#[cfg(test)]
mod tests {
    use std::future::Ready;

    use super::*;
    use crate::auth::{Caller, CallerEntry, Capabilities, Identity, KeyHash, ReflectionAccess};

    /// Answers with the caller's name in a header (`-` when none).
    #[derive(Clone)]
    struct Echo;

    impl Service<Request<()>> for Echo {
        type Response = Response<String>;
        type Error = std::convert::Infallible;
        type Future = Ready<Result<Response<String>, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<()>) -> Self::Future {
            assert!(
                request.headers().get(AUTHORIZATION).is_none(),
                "key removed"
            );
            let name = request
                .extensions()
                .get::<Arc<Caller>>()
                .map_or("-".to_owned(), |caller| caller.name().to_owned());
            std::future::ready(Ok(Response::new(name)))
        }
    }

    fn layer(reflection: ReflectionAccess) -> Auth<Echo> {
        let registry = CallerRegistry::new(
            vec![CallerEntry {
                name: "runner".into(),
                keys: vec![KeyHash::of(b"fgk_runner")],
                identities: vec![Identity::parse("spiffe://c.local/ns/ci/sa/runner").unwrap()],
                capabilities: Capabilities::default(),
                quota: None,
            }],
            false,
            reflection,
        );
        AuthLayer::new(Arc::new(registry)).layer(Echo)
    }

    async fn call(
        service: &mut Auth<Echo>,
        path: &str,
        key: Option<&str>,
        peer: Option<PeerIdentity>,
    ) -> (Option<String>, String) {
        let mut request = Request::builder().uri(path).body(()).unwrap();
        if let Some(key) = key {
            request
                .headers_mut()
                .insert(AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
        }
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer);
        }
        let record = CallRecord::new();
        request.extensions_mut().insert(Arc::clone(&record));
        let response = service.call(request).await.unwrap();
        let status = response
            .headers()
            .get("grpc-status")
            .map(|value| value.to_str().unwrap().to_owned());
        assert_eq!(
            record.caller().map(|name| name.to_string()),
            (status.is_none() && response.body() != "-").then(|| response.body().clone())
        );
        (status, response.into_body())
    }

    #[tokio::test]
    async fn keys_certificates_and_open_paths() {
        let mut service = layer(ReflectionAccess::Authenticated);
        let invoke = "/flowgate.v1.WorkflowGateway/Invoke";
        assert_eq!(
            call(&mut service, invoke, Some("fgk_runner"), None).await,
            (None, "runner".into())
        );
        let spiffe = PeerIdentity {
            uris: vec!["spiffe://c.local/ns/ci/sa/runner".into()],
            dns_names: Vec::new(),
        };
        assert_eq!(
            call(&mut service, invoke, None, Some(spiffe)).await,
            (None, "runner".into())
        );
        let stranger = PeerIdentity {
            uris: vec!["spiffe://c.local/ns/x/sa/y".into()],
            dns_names: vec!["x.internal".into()],
        };
        // 16: UNAUTHENTICATED.
        assert_eq!(
            call(&mut service, invoke, None, Some(stranger))
                .await
                .0
                .as_deref(),
            Some("16")
        );
        assert_eq!(
            call(&mut service, invoke, Some("fgk_x"), None)
                .await
                .0
                .as_deref(),
            Some("16")
        );
        let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        assert_eq!(
            call(&mut service, reflection, None, None)
                .await
                .0
                .as_deref(),
            Some("16")
        );
        let health = "/grpc.health.v1.Health/Check";
        assert_eq!(
            call(&mut service, health, None, None).await,
            (None, "-".into())
        );
        let mut open = layer(ReflectionAccess::Open);
        assert_eq!(
            call(&mut open, reflection, None, None).await,
            (None, "-".into())
        );
    }
}
