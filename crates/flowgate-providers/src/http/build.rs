//! Building the shared client: TLS, TCP options, the pool, and the proxy
//! (when the environment names one) — and sending one request on it.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, header, uri::Scheme};
use http_body_util::Full;
use hyper_util::{
    client::legacy::{Client, ResponseFuture, connect::HttpConnector},
    client::proxy::matcher::Matcher,
    rt::{TokioExecutor, TokioTimer},
};
use rustls_platform_verifier::BuilderVerifierExt as _;

use super::{
    HttpClient, HttpClientError,
    bounded::Bounded,
    proxy::{ProxyConfig, ProxyConnector},
};

/// How long establishing a TCP connection may take, and separately the
/// whole set-up (TCP, a proxy's `CONNECT`, the TLS handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive: idle time before the first probe, and between probes.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
/// How long sent data may stay unacknowledged before the connection is
/// dropped (`TCP_USER_TIMEOUT`, Linux).
#[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

type Direct = Bounded<hyper_rustls::HttpsConnector<HttpConnector>>;
type Proxied = Bounded<hyper_rustls::HttpsConnector<ProxyConnector>>;

/// The pooled client: direct connections (no proxy set: exactly the
/// connector without a proxy), or through [`ProxyConnector`].
#[derive(Clone, Debug)]
pub(super) enum Transport {
    Direct(Client<Direct, Full<Bytes>>),
    Proxied {
        client: Client<Proxied, Full<Bytes>>,
        matcher: Arc<Matcher>,
    },
}

impl Transport {
    /// Sends `request`. Through a proxy, an `http` request the proxy
    /// intercepts carries the proxy's `Proxy-Authorization` (the client
    /// writes it in absolute form; an `https` one has it on the `CONNECT`).
    pub(super) fn request(&self, mut request: http::Request<Full<Bytes>>) -> ResponseFuture {
        match self {
            Self::Direct(client) => client.request(request),
            Self::Proxied { client, matcher } => {
                if request.uri().scheme() == Some(&Scheme::HTTP)
                    && let Some(intercept) = matcher.intercept(request.uri())
                    && let Some(auth) = intercept.basic_auth()
                {
                    let mut auth: HeaderValue = auth.clone();
                    auth.set_sensitive(true);
                    request
                        .headers_mut()
                        .insert(header::PROXY_AUTHORIZATION, auth);
                }
                client.request(request)
            }
        }
    }
}

impl HttpClient {
    /// Builds the client: rustls with the ring provider and the platform's
    /// verifier, HTTP/1.1 and HTTP/2 (ALPN), pooled connections, a connect
    /// timeout, no redirects, and the proxy the environment names
    /// ([`ProxyConfig::from_env`], read now). Call once per process.
    pub fn new() -> Result<Self, HttpClientError> {
        Self::with_proxy(&ProxyConfig::from_env())
    }

    /// [`HttpClient::new`] with the given proxy settings instead of the
    /// environment's. A proxy URL that is not `http://` is an error.
    pub fn with_proxy(proxy: &ProxyConfig) -> Result<Self, HttpClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // Other rustls users in the process (the callback client, Redis)
        // take the process default: ring, unless someone installed one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_platform_verifier())
            .map_err(|err| HttpClientError(format!("building the HTTP client's TLS: {err}")))?
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        // Dead pooled connections are noticed as reqwest's defaults did.
        http.set_keepalive(Some(TCP_KEEPALIVE));
        http.set_keepalive_interval(Some(TCP_KEEPALIVE));
        http.set_keepalive_retries(Some(3));
        #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
        http.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let transport = match proxy.matcher()? {
            None => Transport::Direct(builder.build(Bounded {
                inner: (http, tls).into(),
                timeout: CONNECT_TIMEOUT,
            })),
            Some(matcher) => {
                let matcher = Arc::new(matcher);
                let connector = ProxyConnector {
                    direct: http,
                    matcher: Arc::clone(&matcher),
                };
                Transport::Proxied {
                    client: builder.build(Bounded {
                        inner: (connector, tls).into(),
                        timeout: CONNECT_TIMEOUT,
                    }),
                    matcher,
                }
            }
        };
        Ok(Self { transport })
    }
}
