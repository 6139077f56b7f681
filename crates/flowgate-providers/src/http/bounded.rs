//! A whole connection set-up (TCP connect, a proxy's `CONNECT`, the TLS
//! handshake) bounded by one timeout, as reqwest's connect timeout was.
//! hyper-util's pool may keep a connect running in the background after a
//! pooled connection served the request that started it; without this
//! bound a peer that accepts TCP and then stays silent would hold that
//! task and its socket forever.

use std::{
    error::Error as StdError,
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::Uri;
use tower::Service;

type BoxError = Box<dyn StdError + Send + Sync>;

/// `C` with every connection attempt bounded by `timeout`; a lapsed one is
/// an `io::ErrorKind::TimedOut` error (reported like a connect timeout).
#[derive(Clone, Debug)]
pub(super) struct Bounded<C> {
    pub(super) inner: C,
    pub(super) timeout: Duration,
}

type Connecting<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl<C> Service<Uri> for Bounded<C>
where
    C: Service<Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
    C::Response: Send + 'static,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Connecting<C::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(Box::new(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "setting up the connection took longer than {}s",
                        timeout.as_secs()
                    ),
                )) as BoxError),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::future;

    use super::*;

    /// A connector whose connection never comes (a peer that accepted TCP
    /// and stays silent during the handshake).
    #[derive(Clone)]
    struct Silent;

    impl Service<Uri> for Silent {
        type Response = ();
        type Error = io::Error;
        type Future = future::Pending<Result<(), io::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Uri) -> Self::Future {
            future::pending()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_handshake_that_never_ends_times_out() {
        let mut bounded = Bounded {
            inner: Silent,
            timeout: Duration::from_secs(10),
        };
        let err = bounded
            .call(Uri::from_static("https://vendor.example/"))
            .await
            .err()
            .and_then(|err| err.downcast::<io::Error>().ok())
            .map(|err| err.kind());
        assert_eq!(err, Some(io::ErrorKind::TimedOut));
    }
}
