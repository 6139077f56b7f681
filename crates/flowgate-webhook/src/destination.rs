//! Where forwarded callbacks may connect: the delivery-time half of the
//! `callback_url` policy ([`CallbackPolicy`]).
//!
//! A host name that passed the check when the call arrived may resolve to
//! a forbidden address when the event is delivered (DNS rebinding, or
//! simply `localhost`). [`callback_client`] builds the forwarder's HTTP
//! client with a resolver that drops every resolved address the policy
//! refuses (unless the host is allowed by name), so the addresses checked
//! are exactly the ones connected to; a host left with none fails the
//! attempt with [`DestinationRefused`], which the forwarder treats as final.
//! IP-literal hosts never reach a resolver: [`url_allowed`] checks them
//! before each attempt. The client follows no redirects and ignores proxy
//! environment variables (a proxy would connect on the resolver's behalf).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use flowgate_core::CallbackPolicy;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// How long connecting to a receiver may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A callback host that resolves to no address the policy allows.
#[derive(Debug, thiserror::Error)]
#[error("callback host {host} resolves to no allowed address")]
pub struct DestinationRefused {
    host: String,
}

/// Resolves callback hosts, keeping only allowed addresses.
#[derive(Debug)]
struct PolicyResolver {
    policy: Arc<CallbackPolicy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let trusted = policy.allows_host(&host);
            let allowed: Vec<SocketAddr> = resolved
                .filter(|addr| trusted || policy.allows_ip(addr.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(DestinationRefused { host }) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The forwarder's HTTP client under `policy` (see the module docs).
pub fn callback_client(policy: Arc<CallbackPolicy>) -> Result<reqwest::Client, reqwest::Error> {
    // reqwest is built without a bundled crypto provider: install ring
    // unless someone already installed one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(PolicyResolver { policy }))
        .user_agent(concat!("flowgate/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// False when `url`'s host is an IP literal the policy refuses (host
/// names are judged by the client's resolver).
pub(crate) fn url_allowed(url: &reqwest::Url, policy: &CallbackPolicy) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => policy.allows_ip(ip.into()),
        Some(url::Host::Ipv6(ip)) => policy.allows_ip(ip.into()),
        Some(url::Host::Domain(_)) => true,
        None => false,
    }
}

/// True when a request failed because its host resolved to no allowed
/// address.
pub(crate) fn is_refusal(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(error) = source {
        if error.is::<DestinationRefused>() {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::{Delivery, DeliveryResult, Forwarder, ForwarderConfig, StandardSecret};

    /// A receiver on 127.0.0.1 that answers 200 and counts connections.
    async fn receiver() -> (u16, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&hits);
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        (port, hits, task)
    }

    async fn deliver(policy: CallbackPolicy, url: String) -> DeliveryResult {
        let policy = Arc::new(policy);
        let forwarder = Forwarder::new(
            ForwarderConfig {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(1),
                destinations: Some(Arc::clone(&policy)),
                ..ForwarderConfig::default()
            },
            callback_client(policy).unwrap(),
        );
        let mut outcomes = forwarder.subscribe();
        forwarder
            .enqueue(Delivery {
                url: url.parse().unwrap(),
                event_id: "evt_1".into(),
                body: Bytes::from_static(b"{}"),
                secret: StandardSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
            })
            .unwrap();
        let outcome = outcomes.recv().await.unwrap();
        forwarder.shutdown().await;
        outcome.result
    }

    #[tokio::test]
    async fn names_resolving_to_forbidden_addresses_are_never_contacted() {
        let (port, hits, task) = receiver().await;
        let strict = CallbackPolicy::new(&[], true).unwrap();
        let refused = deliver(strict.clone(), format!("http://localhost:{port}/hook")).await;
        assert_eq!(refused, DeliveryResult::Rejected { status: None });
        let literal = deliver(strict, format!("http://127.0.0.1:{port}/hook")).await;
        assert_eq!(literal, DeliveryResult::Rejected { status: None });
        assert_eq!(hits.load(Ordering::SeqCst), 0, "the receiver saw a request");
        // The same receiver, allowed by the operator, gets the delivery.
        let allowed = CallbackPolicy::new(&["127.0.0.1".into()], true).unwrap();
        let delivered = deliver(allowed, format!("http://localhost:{port}/hook")).await;
        assert_eq!(delivered, DeliveryResult::Delivered { status: 200 });
        let by_name = CallbackPolicy::new(&["localhost".into()], true).unwrap();
        let delivered = deliver(by_name, format!("http://localhost:{port}/hook")).await;
        assert_eq!(delivered, DeliveryResult::Delivered { status: 200 });
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        task.abort();
    }
}
