//! Provider calls through an HTTP proxy: a real local proxy (CONNECT and
//! absolute form, forwarding to a local vendor) and a real local vendor,
//! 127.0.0.1 only. The proxy settings are given explicitly
//! ([`ProxyConfig`]), so no test touches the process environment.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use flowgate_core::{Deadline, GatewayError, Provider as _, ProviderKind, SecretString};
use flowgate_providers::{HttpClient, ProviderSettings, ProxyConfig, knouds::Knouds};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

const USER: &str = "proxyuser";
const PASSWORD: &str = "s3cr3t-proxy-pw";
/// `proxyuser:s3cr3t-proxy-pw`, base64.
const BASIC: &str = "Basic cHJveHl1c2VyOnMzY3IzdC1wcm94eS1wdw==";

/// A local listener serving each connection with `serve`; aborted on drop.
struct Server {
    addr: SocketAddr,
    /// One line per request head received: request line and the
    /// `Proxy-Authorization` value (`-` when absent).
    seen: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(role: Role) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve(stream, role, Arc::clone(&log)));
            }
        });
        Self { addr, seen, task }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

#[derive(Clone, Copy)]
enum Role {
    /// Answers every request 404 (a Knouds "no such execution").
    Vendor,
    /// Forwards CONNECT tunnels and absolute-form requests to 127.0.0.1.
    Proxy,
    /// Answers everything 407.
    RefusingProxy,
}

/// Reads one request head (bounded: 16 KiB, 5 s); `None` on EOF, timeout
/// or a TLS handshake (a vendor reached over `https`).
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        let n = read.ok()?.ok().filter(|n| *n > 0)?;
        head.extend_from_slice(&buf[..n]);
        if head.first() == Some(&0x16) {
            return None;
        }
    }
    Some(head)
}

async fn serve(mut stream: TcpStream, role: Role, seen: Arc<Mutex<Vec<String>>>) {
    let Some(head) = read_head(&mut stream).await else {
        return;
    };
    let text = String::from_utf8_lossy(&head).into_owned();
    let line = text.lines().next().unwrap_or_default().to_owned();
    let auth = text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim().to_owned())
    });
    seen.lock()
        .unwrap()
        .push(format!("{line} | {}", auth.as_deref().unwrap_or("-")));
    let reply: &[u8] = match role {
        Role::Vendor => {
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
        }
        Role::RefusingProxy => {
            b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic realm=\"t\"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        }
        Role::Proxy => {
            let mut words = line.split(' ');
            let (method, target) = (words.next().unwrap(), words.next().unwrap());
            let authority = if method == "CONNECT" {
                target
            } else {
                target.strip_prefix("http://").unwrap().split('/').next().unwrap()
            };
            assert!(authority.starts_with("127.0.0.1:"), "{authority}");
            let mut upstream = TcpStream::connect(authority).await.unwrap();
            if method == "CONNECT" {
                stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
            } else {
                upstream.write_all(&head).await.unwrap();
            }
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
            return;
        }
    };
    let _ = stream.write_all(reply).await;
}

fn proxy_url(proxy: &Server) -> String {
    format!("http://{USER}:{PASSWORD}@{}", proxy.addr)
}

/// A Knouds provider at `scheme://vendor` using `proxy`.
fn knouds(scheme: &str, vendor: &Server, proxy: &ProxyConfig) -> Knouds {
    let mut settings = ProviderSettings::new(
        "kn",
        ProviderKind::Knouds,
        SecretString::new("knouds_live_x"),
    );
    settings.base_url = format!("{scheme}://{}", vendor.addr);
    settings.timeout = Duration::from_secs(5);
    Knouds::new(settings, HttpClient::with_proxy(proxy).unwrap())
}

async fn lookup(provider: &Knouds) -> GatewayError {
    provider
        .run_status("3f0c9d1e-0000-4000-8000-000000000000", Deadline::NONE)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn http_calls_go_through_the_proxy_in_absolute_form_with_its_credentials() {
    let vendor = Server::start(Role::Vendor).await;
    let proxy = Server::start(Role::Proxy).await;
    let config = ProxyConfig {
        http: Some(proxy_url(&proxy)),
        ..ProxyConfig::default()
    };
    let error = lookup(&knouds("http", &vendor, &config)).await;
    // The vendor's 404 came back: the call got through.
    assert_eq!(error.reason, "EXECUTION_NOT_FOUND", "{error:?}");
    let target = format!(
        "GET http://{}/api/executions/3f0c9d1e-0000-4000-8000-000000000000 HTTP/1.1 | {BASIC}",
        vendor.addr
    );
    assert_eq!(proxy.seen(), std::slice::from_ref(&target));
    assert_eq!(vendor.seen(), [target]);
}

#[tokio::test]
async fn https_calls_tunnel_through_the_proxy_with_its_credentials() {
    let vendor = Server::start(Role::Vendor).await;
    let proxy = Server::start(Role::Proxy).await;
    let config = ProxyConfig {
        all: Some(proxy_url(&proxy)),
        ..ProxyConfig::default()
    };
    // The local vendor speaks no TLS: the handshake inside the tunnel fails.
    let error = lookup(&knouds("https", &vendor, &config)).await;
    assert_eq!(error.reason, "UPSTREAM_UNREACHABLE", "{error:?}");
    assert_eq!(
        proxy.seen(),
        [format!("CONNECT {0} HTTP/1.1 | {BASIC}", vendor.addr)]
    );
}

#[tokio::test]
async fn no_proxy_hosts_are_reached_directly() {
    let vendor = Server::start(Role::Vendor).await;
    let proxy = Server::start(Role::Proxy).await;
    let config = ProxyConfig {
        all: Some(proxy_url(&proxy)),
        no: Some("example.com, 127.0.0.1".into()),
        ..ProxyConfig::default()
    };
    let error = lookup(&knouds("http", &vendor, &config)).await;
    assert_eq!(error.reason, "EXECUTION_NOT_FOUND", "{error:?}");
    assert_eq!(proxy.seen(), Vec::<String>::new());
    assert_eq!(
        vendor.seen(),
        ["GET /api/executions/3f0c9d1e-0000-4000-8000-000000000000 HTTP/1.1 | -".to_owned()]
    );
}

#[tokio::test]
async fn a_refusing_proxy_is_named_without_its_credentials() {
    let vendor = Server::start(Role::Vendor).await;
    let proxy = Server::start(Role::RefusingProxy).await;
    let config = ProxyConfig {
        https: Some(proxy_url(&proxy)),
        ..ProxyConfig::default()
    };
    let error = lookup(&knouds("https", &vendor, &config)).await;
    assert_eq!(error.reason, "UPSTREAM_UNREACHABLE", "{error:?}");
    assert_eq!(
        error.message,
        format!(
            "could not connect to kn through the proxy {}: tunnel error: proxy authorization required",
            proxy.addr
        )
    );
    let everything = format!("{error:?} {error}");
    for secret in [USER, PASSWORD, &BASIC[6..]] {
        assert!(!everything.contains(secret), "{everything}");
    }
    assert_eq!(vendor.seen(), Vec::<String>::new());
}

#[test]
fn proxies_other_than_http_are_refused_without_echoing_the_url() {
    for url in [
        "https://u:hunter2@proxy:443",
        "socks5://u:hunter2@proxy:1080",
    ] {
        let config = ProxyConfig {
            https: Some(url.into()),
            ..ProxyConfig::default()
        };
        let error = HttpClient::with_proxy(&config).unwrap_err().to_string();
        assert!(error.starts_with("HTTPS_PROXY names a "), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}

#[test]
fn all_proxy_is_only_checked_where_it_fills_a_gap() {
    // Both schemes named: an ALL_PROXY flowgate cannot use is not in the way.
    let both = ProxyConfig {
        all: Some("socks5://proxy:1080".into()),
        http: Some("http://proxy:3128".into()),
        https: Some("http://proxy:3128".into()),
        no: None,
    };
    assert!(HttpClient::with_proxy(&both).is_ok());
    // One scheme left to it: it is used, so it must be an http:// proxy.
    let gap = ProxyConfig {
        https: None,
        ..both
    };
    let error = HttpClient::with_proxy(&gap).unwrap_err().to_string();
    assert!(error.starts_with("ALL_PROXY names a socks5://"), "{error}");
}
