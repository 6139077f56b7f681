//! The Invoke-time half of the `callback_url` policy for host names: the
//! name is resolved before anything is started, under the caller's
//! deadline, so a callback that can only be refused at delivery never
//! costs a paid run (see [`flowgate_core::CallbackPolicy`]).
//!
//! - no allowed address among those it resolves to: INVALID_ARGUMENT on
//!   `async_options.callback_url`, like an IP literal;
//! - the resolver says the name does not exist (or fails at once):
//!   INVALID_ARGUMENT, "does not resolve";
//! - no answer within [`LOOKUP_TIMEOUT`] (or the caller's deadline, when
//!   shorter): UNAVAILABLE, reason `CALLBACK_DNS_TIMEOUT`, RetryInfo 1 s
//!   (DEADLINE_EXCEEDED when the caller's own deadline was the limit).
//!
//! The lookup is the system resolver's (`getaddrinfo`) on tokio's blocking
//! pool, never on a runtime thread; a lookup cut short keeps its blocking
//! thread until the resolver gives up on its own. At most
//! [`MAX_LOOKUPS`] run at once (a permit is held until the resolver
//! returns, also after the caller stopped waiting), so callers sending
//! many names under a slow zone cannot fill the blocking pool that
//! provider connections resolve on too: beyond that, UNAVAILABLE,
//! `CALLBACK_DNS_TIMEOUT`, RetryInfo 1 s, nothing started.

use std::{
    future::Future,
    io,
    net::{IpAddr, SocketAddr, ToSocketAddrs as _},
    time::Duration,
};

use tokio::sync::{Semaphore, SemaphorePermit};

use flowgate_core::{
    CallbackPolicy, Deadline, ErrorClass, FieldViolation, GatewayError, Invocation, reason::Reason,
};

/// Longest wait for the resolver.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Host-name lookups running at once, at most (process-wide).
const MAX_LOOKUPS: usize = 32;
static LOOKUPS: Semaphore = Semaphore::const_new(MAX_LOOKUPS);
/// Addresses judged per name, at most.
const MAX_ADDRESSES: usize = 64;
/// `RetryInfo` of a resolver timeout.
const RETRY_AFTER: Duration = Duration::from_secs(1);

const FIELD: &str = "async_options.callback_url";

/// Resolves the host name of `invocation`'s callback URL, when it has one
/// that needs it, and judges its addresses (see the module docs). URLs the
/// policy refuses outright are left to the run tracker's check.
pub(super) async fn check_callback_host(
    policy: &CallbackPolicy,
    invocation: &Invocation,
    deadline: Deadline,
) -> Result<(), GatewayError> {
    let Some(host) = invocation
        .async_delivery
        .as_ref()
        .and_then(|delivery| delivery.callback_url.as_deref())
        .and_then(|url| policy.host_to_resolve(url))
    else {
        return Ok(());
    };
    let permit = admit(&LOOKUPS)?;
    let lookup = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        (host.as_str(), 443).to_socket_addrs()
    });
    let lookup = async move {
        lookup
            .await
            .unwrap_or_else(|err| Err(io::Error::other(err)))
    };
    judge(policy, deadline, lookup).await
}

/// A lookup slot of `lookups`, or UNAVAILABLE when all are taken.
fn admit(lookups: &'static Semaphore) -> Result<SemaphorePermit<'static>, GatewayError> {
    lookups.try_acquire().map_err(|_| {
        GatewayError::new(
            ErrorClass::Unavailable,
            Reason::CallbackDnsTimeout,
            "too many callback_url host names are being resolved at once; nothing was started",
        )
        .with_retry_after(Some(RETRY_AFTER))
        .never_sent()
    })
}

/// Waits for `lookup` (bounded) and judges what it found.
async fn judge<I>(
    policy: &CallbackPolicy,
    deadline: Deadline,
    lookup: impl Future<Output = io::Result<I>>,
) -> Result<(), GatewayError>
where
    I: Iterator<Item = SocketAddr>,
{
    let left = deadline.remaining().unwrap_or(LOOKUP_TIMEOUT);
    let (limit, caller_bound) = if left < LOOKUP_TIMEOUT {
        (left, true)
    } else {
        (LOOKUP_TIMEOUT, false)
    };
    let resolved = match tokio::time::timeout(limit, lookup).await {
        Ok(resolved) => resolved,
        Err(_) if caller_bound => {
            return Err(GatewayError::new(
                ErrorClass::DeadlineExceeded,
                Reason::DeadlineExceeded,
                "the deadline passed while the callback_url host name was being resolved",
            )
            .never_sent());
        }
        Err(_) => {
            return Err(GatewayError::new(
                ErrorClass::Unavailable,
                Reason::CallbackDnsTimeout,
                format!(
                    "the callback_url host name did not resolve within {}s; nothing was started",
                    LOOKUP_TIMEOUT.as_secs()
                ),
            )
            .with_retry_after(Some(RETRY_AFTER))
            .never_sent());
        }
    };
    let addresses: Vec<IpAddr> = match resolved {
        Ok(addresses) => addresses
            .take(MAX_ADDRESSES)
            .map(|addr| addr.ip())
            .collect(),
        Err(_) => {
            return Err(refused("the host name does not resolve".to_owned()));
        }
    };
    policy.check_resolved(&addresses).map_err(refused)
}

fn refused(why: String) -> GatewayError {
    GatewayError::invalid_argument(vec![FieldViolation::new(FIELD, why)])
}

#[cfg(test)]
mod tests {
    use std::future;

    use flowgate_core::{AsyncDelivery, WorkflowRef};

    use super::*;

    fn addrs(list: &[&str]) -> io::Result<std::vec::IntoIter<SocketAddr>> {
        Ok(list
            .iter()
            .map(|ip| SocketAddr::new(ip.parse().unwrap(), 443))
            .collect::<Vec<_>>()
            .into_iter())
    }

    fn field(error: &GatewayError) -> &str {
        &error.violations[0].field
    }

    #[tokio::test]
    async fn names_are_judged_on_what_they_resolve_to() {
        let strict = CallbackPolicy::strict();
        let deadline = Deadline::after(Duration::from_secs(30));
        assert!(
            judge(&strict, deadline, future::ready(addrs(&["8.8.8.8"])))
                .await
                .is_ok()
        );
        for loopback in [&["127.0.0.1"][..], &["::1", "10.0.0.1"], &[]] {
            let error = judge(&strict, deadline, future::ready(addrs(loopback)))
                .await
                .unwrap_err();
            assert_eq!(error.class, ErrorClass::InvalidArgument, "{loopback:?}");
            assert_eq!(field(&error), FIELD);
        }
        let nxdomain = judge(
            &strict,
            deadline,
            future::ready(Err::<std::vec::IntoIter<SocketAddr>, _>(io::Error::other(
                "Name or service not known",
            ))),
        )
        .await
        .unwrap_err();
        assert_eq!(nxdomain.class, ErrorClass::InvalidArgument);
        assert!(
            nxdomain.violations[0]
                .description
                .contains("does not resolve")
        );
        // The operator's networks still pass.
        let allowing = CallbackPolicy::new(&["127.0.0.0/8".into()], false).unwrap();
        assert!(
            judge(&allowing, deadline, future::ready(addrs(&["127.0.0.1"])))
                .await
                .is_ok()
        );
    }

    #[test]
    fn lookups_beyond_the_limit_are_unavailable_until_one_ends() {
        static TWO: Semaphore = Semaphore::const_new(2);
        let first = admit(&TWO).unwrap();
        let _second = admit(&TWO).unwrap();
        let error = admit(&TWO).unwrap_err();
        assert_eq!(error.class, ErrorClass::Unavailable);
        assert!(error.has_reason(Reason::CallbackDnsTimeout));
        assert_eq!(error.retry_after, Some(RETRY_AFTER));
        assert!(error.never_sent);
        drop(first);
        assert!(admit(&TWO).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_resolver_is_unavailable_within_two_seconds() {
        let strict = CallbackPolicy::strict();
        let silent = future::pending::<io::Result<std::vec::IntoIter<SocketAddr>>>();
        let started = tokio::time::Instant::now();
        let error = judge(&strict, Deadline::after(Duration::from_secs(30)), silent)
            .await
            .unwrap_err();
        assert_eq!(error.class, ErrorClass::Unavailable);
        assert!(error.has_reason(Reason::CallbackDnsTimeout));
        assert_eq!(error.retry_after, Some(RETRY_AFTER));
        assert!(error.never_sent);
        assert_eq!(started.elapsed(), LOOKUP_TIMEOUT);

        // A shorter caller deadline is the limit, and says so.
        let silent = future::pending::<io::Result<std::vec::IntoIter<SocketAddr>>>();
        let error = judge(&strict, Deadline::after(Duration::from_millis(300)), silent)
            .await
            .unwrap_err();
        assert_eq!(error.class, ErrorClass::DeadlineExceeded);
    }

    #[tokio::test]
    async fn literals_and_localhost_are_left_to_the_tracker_and_resolved_names_judged() {
        let strict = CallbackPolicy::new(&[], true).unwrap();
        let deadline = Deadline::after(Duration::from_secs(30));
        let with = |url: &str| {
            let mut invocation = Invocation::new(WorkflowRef::Slug("s".into()));
            invocation.async_delivery = Some(AsyncDelivery {
                callback_url: Some(url.into()),
            });
            invocation
        };
        // Refused outright by `check_url` (the tracker answers those):
        // nothing to resolve here.
        for url in ["http://localhost:9/x", "https://127.0.0.1/x", "ftp://x/"] {
            assert!(
                check_callback_host(&strict, &with(url), deadline)
                    .await
                    .is_ok(),
                "{url}"
            );
        }
        // The system resolver's answer is judged like any other: `localhost`
        // (resolved from /etc/hosts, no DNS query) is loopback.
        let error = judge(
            &strict,
            deadline,
            tokio::net::lookup_host(("localhost", 443)),
        )
        .await
        .unwrap_err();
        assert_eq!(field(&error), FIELD);
    }
}
