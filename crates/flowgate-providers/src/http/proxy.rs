//! Provider calls through an HTTP proxy, as the proxy environment variables
//! ask (`HTTPS_PROXY`/`https_proxy`, `HTTP_PROXY`/`http_proxy`,
//! `ALL_PROXY`/`all_proxy`, `NO_PROXY`/`no_proxy`; read once, when the
//! client is built).
//!
//! An `https` vendor URL the proxy intercepts is reached through a `CONNECT`
//! tunnel (hyper-util's [`Tunnel`]) and TLS to the vendor inside it; an
//! `http` one is sent to the proxy in absolute form (`GET http://host/...`),
//! as reqwest did. `Proxy-Authorization: Basic` comes from the proxy URL's
//! userinfo. Only `http://` proxies are spoken to; any other proxy URL is a
//! startup error. No error, log or span carries the userinfo.

use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Uri, uri::Authority, uri::Scheme};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::{
    client::{
        legacy::connect::{Connected, Connection, HttpConnector, proxy::Tunnel},
        proxy::matcher::Matcher,
    },
    rt::TokioIo,
};
use tower::Service;

use super::HttpClientError;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The proxy settings the provider client follows: the values of the proxy
/// environment variables ([`ProxyConfig::from_env`]), or given explicitly.
/// No proxy URL set means direct connections.
#[derive(Clone, Default)]
pub struct ProxyConfig {
    /// The proxy for every scheme (`ALL_PROXY`), unless one below is set.
    pub all: Option<String>,
    /// The proxy for `http` vendor URLs (`HTTP_PROXY`).
    pub http: Option<String>,
    /// The proxy for `https` vendor URLs (`HTTPS_PROXY`).
    pub https: Option<String>,
    /// Hosts, domains and IP ranges reached directly (`NO_PROXY`, curl's
    /// rules: comma-separated, `*` for all).
    pub no: Option<String>,
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The proxy URLs may carry credentials: host and port only.
        let show = |value: &Option<String>| value.as_deref().map(proxy_address);
        f.debug_struct("ProxyConfig")
            .field("all", &show(&self.all))
            .field("http", &show(&self.http))
            .field("https", &show(&self.https))
            .field("no", &self.no)
            .finish()
    }
}

impl ProxyConfig {
    /// Reads the proxy environment variables (upper case first, as curl).
    /// Under CGI (`REQUEST_METHOD` set) they are ignored, as hyper-util and
    /// reqwest do: there `HTTP_PROXY` may come from a request header.
    pub fn from_env() -> Self {
        if std::env::var_os("REQUEST_METHOD").is_some() {
            return Self::default();
        }
        let first = |names: [&str; 2]| {
            names
                .into_iter()
                .find_map(|name| std::env::var(name).ok())
                .filter(|value| !value.trim().is_empty())
        };
        Self {
            all: first(["ALL_PROXY", "all_proxy"]),
            http: first(["HTTP_PROXY", "http_proxy"]),
            https: first(["HTTPS_PROXY", "https_proxy"]),
            no: first(["NO_PROXY", "no_proxy"]),
        }
    }

    /// The matcher, or `None` when no proxy is set (direct connections).
    /// Logs once which proxy serves which scheme (host and port only).
    pub(super) fn matcher(&self) -> Result<Option<Matcher>, HttpClientError> {
        let http = checked("HTTP_PROXY", self.http.as_deref())?;
        let https = checked("HTTPS_PROXY", self.https.as_deref())?;
        // ALL_PROXY only fills a gap: when both are set it is not used, so
        // a value flowgate cannot use (say `socks5://`) is not an error.
        let all = if http.is_none() || https.is_none() {
            checked("ALL_PROXY", self.all.as_deref())?
        } else {
            None
        };
        let (http, https) = (http.or(all), https.or(all));
        if http.is_none() && https.is_none() {
            return Ok(None);
        }
        for (scheme, proxy) in [("http", http), ("https", https)] {
            if let Some(proxy) = proxy {
                tracing::info!(
                    proxy = %proxy_address(proxy),
                    vendor_scheme = scheme,
                    no_proxy = self.no.as_deref().unwrap_or_default(),
                    "provider calls go through a proxy"
                );
            }
        }
        let mut builder = Matcher::builder();
        if let Some(proxy) = http {
            builder = builder.http(proxy);
        }
        if let Some(proxy) = https {
            builder = builder.https(proxy);
        }
        if let Some(no) = &self.no {
            builder = builder.no(no.as_str());
        }
        Ok(Some(builder.build()))
    }
}

/// `value` when it is an `http://` proxy URL (or a bare `host:port`);
/// the error names the variable, never the value (it may hold a password).
fn checked<'a>(variable: &str, value: Option<&'a str>) -> Result<Option<&'a str>, HttpClientError> {
    let Some(value) = value.map(str::trim).filter(|value| !value.is_empty()) else {
        return Ok(None);
    };
    let uri = value
        .parse::<Uri>()
        .ok()
        .filter(|uri| uri.host().is_some_and(|host| !host.is_empty()))
        .ok_or_else(|| HttpClientError(format!("{variable} is not a proxy URL")))?;
    match uri.scheme() {
        None => Ok(Some(value)),
        Some(scheme) if *scheme == Scheme::HTTP => Ok(Some(value)),
        Some(scheme) => Err(HttpClientError(format!(
            "{variable} names a {scheme}:// proxy; provider calls go through http:// proxies only"
        ))),
    }
}

/// `host:port` of a proxy URL, without its userinfo.
fn proxy_address(value: &str) -> String {
    match value.trim().parse::<Uri>() {
        Ok(uri) => match (uri.host(), uri.port_u16()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => format!("{host}:80"),
            _ => "(unparsable)".to_owned(),
        },
        Err(_) => "(unparsable)".to_owned(),
    }
}

/// A connection through the proxy failed: the proxy is named by host and
/// port (the matcher already removed the userinfo from its URI).
#[derive(Debug)]
pub(super) struct ProxyError {
    proxy: Option<Authority>,
    cause: BoxError,
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.proxy {
            Some(proxy) => write!(f, "through the proxy {proxy}: {}", self.cause),
            None => write!(f, "through the proxy: {}", self.cause),
        }
    }
}

impl StdError for ProxyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.cause)
    }
}

/// The connector under TLS when a proxy is set: per new connection, the
/// matcher decides between a direct connection, a `CONNECT` tunnel
/// (`https`) or a connection to the proxy marked as proxied, so the client
/// writes absolute-form requests (`http`).
#[derive(Clone)]
pub(super) struct ProxyConnector {
    pub(super) direct: HttpConnector,
    pub(super) matcher: Arc<Matcher>,
}

impl fmt::Debug for ProxyConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Matcher's Debug leaves out credentials.
        f.debug_struct("ProxyConnector")
            .field("matcher", &self.matcher)
            .finish_non_exhaustive()
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<ProxyStream, BoxError>> + Send>>;

impl Service<Uri> for ProxyConnector {
    type Response = ProxyStream;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Connecting {
        let Some(intercept) = self.matcher.intercept(&dst) else {
            let connecting = self.direct.call(dst);
            return Box::pin(async move {
                Ok(ProxyStream {
                    io: connecting.await?,
                    proxied: false,
                })
            });
        };
        let proxy = intercept.uri().authority().cloned();
        let failed = move |cause: BoxError| -> BoxError { Box::new(ProxyError { proxy, cause }) };
        if dst.scheme() == Some(&Scheme::HTTPS) {
            let mut tunnel = Tunnel::new(intercept.uri().clone(), self.direct.clone());
            if let Some(auth) = intercept.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            let connecting = tunnel.call(dst);
            Box::pin(async move {
                let io = connecting.await.map_err(|err| failed(err.into()))?;
                Ok(ProxyStream { io, proxied: false })
            })
        } else {
            let connecting = self.direct.call(intercept.uri().clone());
            Box::pin(async move {
                let io = connecting.await.map_err(|err| failed(err.into()))?;
                Ok(ProxyStream { io, proxied: true })
            })
        }
    }
}

/// A TCP connection, to the vendor, through a tunnel, or to the proxy
/// (`proxied`: requests on it go in absolute form).
#[derive(Debug)]
pub(super) struct ProxyStream {
    io: TokioIo<tokio::net::TcpStream>,
    proxied: bool,
}

impl Connection for ProxyStream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.proxied)
    }
}

impl Read for ProxyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for ProxyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
