//! Where forwarded callbacks may connect: the delivery-time half of the
//! `callback_url` policy ([`CallbackPolicy`]).
//!
//! A host name that passed the check when the call arrived (where it was
//! resolved too) may resolve to a forbidden address when the event is
//! delivered (DNS rebinding, or a name with both allowed and forbidden
//! addresses). [`callback_client`] builds the forwarder's HTTP
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
