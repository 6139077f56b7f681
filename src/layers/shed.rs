//! Load shedding: at most `server.max_concurrent_requests` calls run at
//! once; up to `server.max_queued_requests` more wait for a slot, each no
//! longer than its own deadline (`grpc-timeout`, else
//! `server.default_deadline`). A call that finds the queue full is answered
//! at once with RESOURCE_EXHAUSTED, reason `OVERLOADED` and a RetryInfo
//! delay; a queued call whose deadline passes ends with DEADLINE_EXCEEDED
//! (reason `DEADLINE_EXCEEDED`) without having run.
//!
//! Health checks (`grpc.health.v1.Health`) take no slot and are never shed:
//! a busy replica is still alive, and load balancers must see it so.
//!
//! A call that waited reaches the service with its `grpc-timeout` set to
//! what is left of its deadline, so the handler's own deadline (and the
//! DEADLINE_EXCEEDED it answers with details) counts the time spent queued.
//!
//! As with tower's concurrency limit, a slot is held until the response
//! headers are produced (a StreamStatus stream does not hold one while it
//! waits for events).

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use flowgate_core::{ErrorClass, GatewayError};
use http::{HeaderMap, Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use crate::service::parse_grpc_timeout;

/// The ErrorInfo reason of a call shed because the queue was full.
pub const OVERLOADED: &str = flowgate_core::reason::Reason::Overloaded.as_str();
/// How long a shed caller is told to wait (RetryInfo).
pub const OVERLOADED_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Paths that are never queued or shed.
const EXEMPT_PREFIX: &str = "/grpc.health.v1.Health/";
/// How much of a caller's deadline the queue keeps back (a tenth, at most
/// this), so it answers DEADLINE_EXCEEDED with details before tonic's own
/// timer cancels the call with a bare CANCELLED, even on a busy runtime.
const DEADLINE_MARGIN: Duration = Duration::from_millis(50);

/// Limits concurrent calls with a bounded, deadline-aware queue.
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    slots: Arc<Semaphore>,
    max_queued: usize,
    queued: AtomicUsize,
    default_deadline: Duration,
}

impl LoadShedLayer {
    /// `max_concurrent` calls run at once, `max_queued` more wait; a queued
    /// call without a `grpc-timeout` waits at most `default_deadline`.
    pub fn new(max_concurrent: usize, max_queued: usize, default_deadline: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                slots: Arc::new(Semaphore::new(max_concurrent.min(Semaphore::MAX_PERMITS))),
                max_queued,
                queued: AtomicUsize::new(0),
                default_deadline,
            }),
        }
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service [`LoadShedLayer`] builds.
#[derive(Debug, Clone)]
pub struct LoadShed<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// A place in the queue, given back on drop.
struct QueueTicket<'a>(&'a AtomicUsize);

impl Drop for QueueTicket<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    fn enter_queue(&self) -> Option<QueueTicket<'_>> {
        let mut current = self.queued.load(Ordering::Acquire);
        loop {
            if current >= self.max_queued {
                return None;
            }
            match self.queued.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(QueueTicket(&self.queued)),
                Err(actual) => current = actual,
            }
        }
    }

    /// The call's whole deadline, and how long it may wait in the queue.
    fn deadline(&self, headers: &HeaderMap) -> (Duration, Duration) {
        match headers
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout)
        {
            Some(timeout) => (
                timeout,
                timeout.saturating_sub((timeout / 10).min(DEADLINE_MARGIN)),
            ),
            None => (self.default_deadline, self.default_deadline),
        }
    }

    /// A slot, or the answer to give instead. A call that waited gets its
    /// `grpc-timeout` rewritten to what is left of its deadline.
    async fn admit(&self, headers: &mut HeaderMap) -> Result<OwnedSemaphorePermit, GatewayError> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(permit);
        }
        let Some(_ticket) = self.enter_queue() else {
            return Err(overloaded());
        };
        let (deadline, patience) = self.deadline(headers);
        let queued_at = tokio::time::Instant::now();
        match tokio::time::timeout(patience, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(Ok(permit)) => {
                let left = deadline.saturating_sub(queued_at.elapsed());
                headers.insert("grpc-timeout", grpc_timeout(left));
                Ok(permit)
            }
            // The semaphore is never closed; were it, shedding is right.
            Ok(Err(_)) => Err(overloaded()),
            Err(_) => Err(GatewayError::new(
                ErrorClass::DeadlineExceeded,
                flowgate_core::reason::Reason::DeadlineExceeded,
                "the call's deadline passed while it waited for a free slot \
                 (server.max_concurrent_requests)",
            )),
        }
    }
}

/// A `grpc-timeout` value (at most 8 digits) for `left`.
fn grpc_timeout(left: Duration) -> http::HeaderValue {
    const MAX: u128 = 99_999_999;
    let millis = left.as_millis();
    let text = if millis <= MAX {
        format!("{millis}m")
    } else {
        format!("{}S", left.as_secs().min(99_999_999))
    };
    http::HeaderValue::from_str(&text).unwrap_or(http::HeaderValue::from_static("0m"))
}

fn overloaded() -> GatewayError {
    GatewayError::new(
        ErrorClass::RateLimited,
        OVERLOADED,
        "the gateway is at capacity and its queue is full; retry shortly or on another replica",
    )
    .with_retry_after(Some(OVERLOADED_RETRY_AFTER))
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for LoadShed<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: 'static,
    ReqBody: Send + 'static,
    ResBody: Default + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The service polled ready goes into the future; a clone stays.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if request.uri().path().starts_with(EXEMPT_PREFIX) {
            return Box::pin(inner.call(request));
        }
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let mut request = request;
            match shared.admit(request.headers_mut()).await {
                Ok(permit) => {
                    let response = inner.call(request).await;
                    drop(permit);
                    response
                }
                Err(error) => Ok(super::error_response(&error)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic_types::StatusExt as _;

    /// A service that answers once the gate gives it a permit (health
    /// checks at once).
    #[derive(Clone)]
    struct Slow(Arc<Semaphore>);

    impl Service<Request<()>> for Slow {
        type Response = Response<String>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<()>) -> Self::Future {
            let gate = Arc::clone(&self.0);
            let health = request.uri().path().starts_with(EXEMPT_PREFIX);
            Box::pin(async move {
                if !health && let Ok(permit) = gate.acquire().await {
                    permit.forget();
                }
                Ok(Response::new("done".to_owned()))
            })
        }
    }

    fn call(path: &str, timeout: Option<&str>) -> Request<()> {
        let mut builder = Request::builder().uri(path);
        if let Some(timeout) = timeout {
            builder = builder.header("grpc-timeout", timeout);
        }
        builder.body(()).unwrap()
    }

    fn status(response: &Response<String>) -> Option<tonic::Status> {
        tonic::Status::from_header_map(response.headers())
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_sheds_with_overloaded_and_retry_info() {
        let gate = Arc::new(Semaphore::new(0));
        let layer = LoadShedLayer::new(1, 1, Duration::from_secs(30));
        let mut service = layer.layer(Slow(Arc::clone(&gate)));
        let running = tokio::spawn(service.call(call("/pkg.Svc/A", None)));
        tokio::task::yield_now().await;
        let queued = tokio::spawn(service.call(call("/pkg.Svc/A", None)));
        tokio::task::yield_now().await;
        let shed = service.call(call("/pkg.Svc/A", None)).await.unwrap();
        let shed = status(&shed).expect("a status");
        assert_eq!(shed.code(), Code::ResourceExhausted);
        let details = shed.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, OVERLOADED);
        assert_eq!(
            details.retry_info().unwrap().retry_delay,
            Some(OVERLOADED_RETRY_AFTER)
        );
        // Health is exempt even now: it reaches the service.
        let health = service
            .call(call("/grpc.health.v1.Health/Check", None))
            .await
            .unwrap();
        assert!(status(&health).is_none());
        assert_eq!(health.into_body(), "done");
        // The running call finishes, then the queued one gets its slot.
        gate.add_permits(2);
        assert_eq!(running.await.unwrap().unwrap().into_body(), "done");
        assert_eq!(queued.await.unwrap().unwrap().into_body(), "done");
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_call_ends_at_its_deadline() {
        let gate = Arc::new(Semaphore::new(0));
        let layer = LoadShedLayer::new(1, 4, Duration::from_secs(30));
        let mut service = layer.layer(Slow(Arc::clone(&gate)));
        let running = tokio::spawn(service.call(call("/pkg.Svc/A", None)));
        tokio::task::yield_now().await;
        let late = service
            .call(call("/pkg.Svc/A", Some("500m")))
            .await
            .unwrap();
        let late = status(&late).expect("a status");
        assert_eq!(late.code(), Code::DeadlineExceeded);
        // Its place in the queue was given back.
        assert_eq!(layer.shared.queued.load(Ordering::Acquire), 0);
        gate.add_permits(1);
        running.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_waited_reaches_the_service_with_what_is_left_of_its_deadline() {
        let gate = Arc::new(Semaphore::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorder = {
            let gate = Arc::clone(&gate);
            let seen = Arc::clone(&seen);
            tower::service_fn(move |request: Request<()>| {
                let gate = Arc::clone(&gate);
                let seen = Arc::clone(&seen);
                async move {
                    let timeout = request
                        .headers()
                        .get("grpc-timeout")
                        .and_then(|value| value.to_str().ok())
                        .and_then(parse_grpc_timeout);
                    seen.lock().unwrap().push(timeout);
                    if let Ok(permit) = gate.acquire().await {
                        permit.forget();
                    }
                    Ok::<_, std::convert::Infallible>(Response::new(String::new()))
                }
            })
        };
        let layer = LoadShedLayer::new(1, 1, Duration::from_secs(30));
        let mut service = layer.layer(recorder);
        let running = tokio::spawn(service.call(call("/pkg.Svc/A", Some("10S"))));
        tokio::task::yield_now().await;
        let queued = tokio::spawn(service.call(call("/pkg.Svc/A", Some("10S"))));
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(4)).await;
        gate.add_permits(2);
        running.await.unwrap().unwrap();
        queued.await.unwrap().unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen[0],
            Some(Duration::from_secs(10)),
            "not queued: untouched"
        );
        let left = seen[1].unwrap();
        assert!(left <= Duration::from_secs(6), "{left:?}");
        assert!(left > Duration::ZERO, "{left:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_queue_sheds_at_once() {
        let gate = Arc::new(Semaphore::new(0));
        let layer = LoadShedLayer::new(1, 0, Duration::from_secs(30));
        let mut service = layer.layer(Slow(Arc::clone(&gate)));
        let running = tokio::spawn(service.call(call("/pkg.Svc/A", None)));
        tokio::task::yield_now().await;
        let shed = service.call(call("/pkg.Svc/A", None)).await.unwrap();
        assert_eq!(status(&shed).unwrap().code(), Code::ResourceExhausted);
        gate.add_permits(1);
        running.await.unwrap().unwrap();
    }
}
