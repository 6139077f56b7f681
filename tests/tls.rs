//! TLS and mTLS on the gRPC listener, with a CA made here (rcgen): real
//! tonic clients over TLS to a real gateway on 127.0.0.1, client
//! certificates accepted and refused at the handshake, the identity of a
//! verified certificate reaching each request, slow and garbage handshakes,
//! and certificates rotated on disk under an open stream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use common::{
    captured_logs::CapturedLogs,
    deployment, inputs,
    pki::{Ca, Issued},
    target,
    temp_dir::{TempDir, toml_path},
};
use flowgate::{
    auth::peer::PeerIdentity,
    config::Config,
    pb::{self, workflow_gateway_client::WorkflowGatewayClient},
    server::{self, RunningServer},
    tls::{PeerIdentityLayer, TlsIncoming, TlsMaterial},
};
use flowgate_emulator::{Emulator, EmulatorConfig};
use hyper_util::rt::TokioIo;
use rcgen::{ExtendedKeyUsagePurpose, SanType};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

// ---------------------------------------------------------------- logs ----

/// Every log line of this test binary (all threads), for the identity
/// line and the "no key material" checks.
fn logs() -> &'static CapturedLogs {
    static LOGS: OnceLock<CapturedLogs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = CapturedLogs::default();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                "debug,h2=info,hyper=info,hyper_util=info,tower=info,reqwest=info,tonic=info",
            )
            .with_ansi(false)
            .with_writer(logs.clone())
            .try_init();
        logs
    })
}

fn log_text() -> String {
    logs().text()
}

/// The base64 body lines of a PEM private key: none may appear in a log.
fn assert_key_absent_from_logs(key_pem: &str) {
    let text = log_text();
    for line in key_pem.lines().filter(|line| !line.starts_with("-----")) {
        let probe = &line[..line.len().min(24)];
        assert!(!text.contains(probe), "private key material in the logs");
    }
}

// ------------------------------------------------------------ test PKI ----

/// A CI runner's client certificate: a SPIFFE URI SAN and a DNS SAN.
fn runner_cert(ca: &Ca, spiffe: &str, expired: bool) -> Issued {
    ca.issue(
        vec![
            SanType::URI(spiffe.try_into().unwrap()),
            SanType::DnsName("runner.ci.svc".try_into().unwrap()),
        ],
        ExtendedKeyUsagePurpose::ClientAuth,
        7,
        expired,
    )
}

// -------------------------------------------------------------- client ----

/// What a client presents and trusts.
#[derive(Clone)]
struct ClientTls {
    config: Arc<ClientConfig>,
    /// The server certificate (leaf) of every connection made, in order.
    seen: Arc<Mutex<Vec<CertificateDer<'static>>>>,
}

impl ClientTls {
    fn new(trust: &str, identity: Option<&Issued>) -> Self {
        Self::with_versions(trust, identity, rustls::DEFAULT_VERSIONS)
    }

    fn with_versions(
        trust: &str,
        identity: Option<&Issued>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Self {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(trust.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots);
        let mut config = match identity {
            Some(issued) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(issued.cert.as_bytes())
                        .map(Result::unwrap)
                        .collect(),
                    PrivateKeyDer::from_pem_slice(issued.key.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Self {
            config: Arc::new(config),
            seen: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// A TLS connection to `addr` (server name `localhost`).
    async fn connect_raw(
        &self,
        addr: SocketAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.config));
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        if let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
            self.seen.lock().unwrap().push(leaf.clone().into_owned());
        }
        Ok(tls)
    }

    /// A gRPC channel over TLS to `addr`, connected now.
    async fn channel(&self, addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
        Endpoint::from_static("http://localhost")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(Connector {
                tls: self.clone(),
                addr,
            })
            .await
    }

    /// The serial number of the server certificate of each connection.
    fn serials(&self) -> Vec<u64> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|cert| {
                webpki::EndEntityCert::try_from(cert)
                    .unwrap()
                    .serial()
                    .iter()
                    .fold(0u64, |serial, byte| (serial << 8) | u64::from(*byte))
            })
            .collect()
    }
}

#[derive(Clone)]
struct Connector {
    tls: ClientTls,
    addr: SocketAddr,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(TokioIo::new(this.tls.connect_raw(this.addr).await?)) })
    }
}

// ------------------------------------------------------------- gateway ----

struct Gateway {
    _emulator: Emulator,
    server: RunningServer,
}

/// The emulator and a gateway whose `[server.tls]` table is `tls`.
async fn gateway(tls: &str) -> Gateway {
    logs();
    let emulator = Emulator::start(EmulatorConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let text = format!("{}\n[server.tls]\n{tls}\n", common::config_text(&emulator));
    let config = Config::parse(&text, Vec::new()).expect("config parses");
    let keys = common::test_keys();
    let app = server::build(&config, |var| keys.get(var).cloned()).unwrap();
    let server = server::spawn(app).await.expect("gateway starts");
    Gateway {
        _emulator: emulator,
        server,
    }
}

async fn health(channel: Channel) -> Result<ServingStatus, tonic::Status> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await?;
    Ok(response.into_inner().status())
}

/// The server's answer to a client that tried to connect: the first read
/// after the handshake (a TLS 1.3 client learns of a refused certificate
/// only then).
async fn refusal(client: &ClientTls, addr: SocketAddr) -> String {
    match client.connect_raw(addr).await {
        Err(err) => err.to_string(),
        Ok(mut tls) => {
            let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
            let mut buf = [0u8; 64];
            match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
                Ok(Err(err)) => err.to_string(),
                Ok(Ok(n)) => format!("read {n} bytes"),
                Err(_) => "no answer".to_owned(),
            }
        }
    }
}

// --------------------------------------------------------------- tests ----

#[tokio::test]
async fn tls_serves_health_and_invoke_and_plaintext_clients_are_refused() {
    let ca = Ca::new("flowgate test CA");
    let server_cert = ca.server(101);
    let dir = TempDir::new("tls-basic");
    let cert = dir.write("tls.crt", &server_cert.cert);
    let key = dir.write("tls.key", &server_cert.key);
    let gw = gateway(&format!(
        "cert_file = {}\nkey_file = {}\n",
        toml_path(&cert),
        toml_path(&key)
    ))
    .await;
    let addr = gw.server.addr;

    let client = ClientTls::new(&ca.pem, None);
    let channel = client.channel(addr).await.expect("TLS connection");
    assert_eq!(
        health(channel.clone()).await.unwrap(),
        ServingStatus::Serving
    );
    let response = WorkflowGatewayClient::new(channel)
        .invoke(pb::InvokeRequest {
            target: target("fh", deployment("summarize", "default")),
            inputs: inputs(serde_json::json!({"topic": "TLS"})),
            ..Default::default()
        })
        .await
        .expect("Invoke over TLS")
        .into_inner();
    assert_eq!(response.status(), pb::RunStatus::Completed);
    assert_eq!(client.serials(), vec![101]);

    // TLS 1.3 by default, TLS 1.2 for clients that only speak it; h2 both.
    let tls13 = client.connect_raw(addr).await.unwrap();
    let tls12 = ClientTls::with_versions(&ca.pem, None, &[&rustls::version::TLS12])
        .connect_raw(addr)
        .await
        .unwrap();
    for (tls, version) in [
        (&tls13, rustls::ProtocolVersion::TLSv1_3),
        (&tls12, rustls::ProtocolVersion::TLSv1_2),
    ] {
        assert_eq!(tls.get_ref().1.protocol_version(), Some(version));
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    }
    // A client that cannot speak HTTP/2 is refused.
    let mut http1 = ClientTls::new(&ca.pem, None);
    Arc::get_mut(&mut http1.config).unwrap().alpn_protocols = vec![b"http/1.1".to_vec()];
    let refused = refusal(&http1, addr).await;
    assert!(refused.contains("NoApplicationProtocol"), "{refused}");

    // A plaintext gRPC client gets nowhere.
    let plaintext = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        assert!(health(channel).await.is_err());
    }
    // Still serving after it.
    let channel = client.channel(addr).await.unwrap();
    assert_eq!(health(channel).await.unwrap(), ServingStatus::Serving);

    gw.server.shutdown().await.unwrap();
    assert_key_absent_from_logs(&server_cert.key);
}

#[tokio::test]
async fn mtls_accepts_the_ca_s_clients_and_refuses_others_at_the_handshake() {
    let ca = Ca::new("flowgate test CA");
    let server_cert = ca.server(201);
    let dir = TempDir::new("tls-mtls");
    let cert = dir.write("tls.crt", &server_cert.cert);
    let key = dir.write("tls.key", &server_cert.key);
    let client_ca = dir.write("ca.crt", &ca.pem);
    let gw = gateway(&format!(
        "cert_file = {}\nkey_file = {}\nclient_ca_file = {}\n",
        toml_path(&cert),
        toml_path(&key),
        toml_path(&client_ca)
    ))
    .await;
    let addr = gw.server.addr;

    // A certificate of the CA: served, and its SANs reach the request.
    let spiffe = "spiffe://cluster.local/ns/ci/sa/runner-mtls-test";
    let good = runner_cert(&ca, spiffe, false);
    let client = ClientTls::new(&ca.pem, Some(&good));
    let channel = client.channel(addr).await.expect("mTLS connection");
    assert_eq!(health(channel).await.unwrap(), ServingStatus::Serving);
    let logged = log_text();
    let line = logged
        .lines()
        .find(|line| line.contains("mTLS client certificate identity") && line.contains(spiffe))
        .unwrap_or_else(|| panic!("no identity line for {spiffe}"));
    assert!(line.contains("runner.ci.svc"), "{line}");

    // No certificate, another CA's, an expired one: refused at the handshake.
    let none = ClientTls::new(&ca.pem, None);
    let refused = refusal(&none, addr).await;
    assert!(refused.contains("CertificateRequired"), "{refused}");
    let other_ca = Ca::new("some other CA");
    let stranger = ClientTls::new(&ca.pem, Some(&runner_cert(&other_ca, spiffe, false)));
    let refused = refusal(&stranger, addr).await;
    assert!(refused.contains("UnknownCA"), "{refused}");
    let expired = ClientTls::new(&ca.pem, Some(&runner_cert(&ca, spiffe, true)));
    let refused = refusal(&expired, addr).await;
    assert!(refused.contains("CertificateExpired"), "{refused}");
    for client in [&stranger, &expired] {
        let result = match client.channel(addr).await {
            Ok(channel) => health(channel).await.map_err(|status| status.to_string()),
            Err(err) => Err(err.to_string()),
        };
        assert!(result.is_err(), "a refused certificate got an answer");
    }

    // The good client still gets through.
    let channel = client.channel(addr).await.unwrap();
    assert_eq!(health(channel).await.unwrap(), ServingStatus::Serving);
    gw.server.shutdown().await.unwrap();
    for issued in [&server_cert, &good] {
        assert_key_absent_from_logs(&issued.key);
    }
}

/// The seam the auth layer reads: [`PeerIdentity`] in the request's
/// extensions, exactly the certificate's SANs, and none without one.
#[tokio::test]
async fn the_verified_identity_is_a_request_extension() {
    logs();
    let ca = Ca::new("flowgate test CA");
    let server_cert = ca.server(301);
    let dir = TempDir::new("tls-seam");
    let settings: Config = Config::parse(
        &format!(
            "[providers.kn]\nkind = \"knouds\"\napi_key_env = \"K\"\n\
             [server.tls]\ncert_file = {}\nkey_file = {}\nclient_ca_file = {}\n\
             client_auth = \"optional\"\n",
            toml_path(&dir.write("tls.crt", &server_cert.cert)),
            toml_path(&dir.write("tls.key", &server_cert.key)),
            toml_path(&dir.write("ca.crt", &ca.pem)),
        ),
        Vec::new(),
    )
    .unwrap();
    let material = TlsMaterial::load(settings.server.tls.as_ref().unwrap()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(PeerIdentityLayer)
            .layer(CaptureLayer(Arc::clone(&seen)))
            .add_service(health_service)
            .serve_with_incoming_shutdown(TlsIncoming::new(listener, material), async {
                let _ = stopped.await;
            }),
    );

    let spiffe = "spiffe://cluster.local/ns/ci/sa/runner";
    let with_cert = ClientTls::new(&ca.pem, Some(&runner_cert(&ca, spiffe, false)));
    health(with_cert.channel(addr).await.unwrap())
        .await
        .unwrap();
    let without = ClientTls::new(&ca.pem, None);
    health(without.channel(addr).await.unwrap()).await.unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].0,
        Some(PeerIdentity {
            uris: vec![spiffe.to_owned()],
            dns_names: vec!["runner.ci.svc".to_owned()],
        })
    );
    assert_eq!(seen[1].0, None, "no certificate, no identity");
    // tonic's remote_addr() keeps working over TLS.
    assert!(seen.iter().all(|(_, remote)| remote.is_some()));
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// What each request carried: its identity and remote address.
type Seen = Arc<Mutex<Vec<(Option<PeerIdentity>, Option<SocketAddr>)>>>;

#[derive(Clone)]
struct CaptureLayer(Seen);

impl<S> tower::Layer<S> for CaptureLayer {
    type Service = Capture<S>;
    fn layer(&self, inner: S) -> Capture<S> {
        Capture {
            inner,
            seen: Arc::clone(&self.0),
        }
    }
}

#[derive(Clone)]
struct Capture<S> {
    inner: S,
    seen: Seen,
}

impl<S, B> tower::Service<http::Request<B>> for Capture<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let remote = request
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|info| info.remote_addr());
        let peer = request.extensions().get::<PeerIdentity>().cloned();
        self.seen.lock().unwrap().push((peer, remote));
        self.inner.call(request)
    }
}

#[tokio::test]
async fn slow_and_garbage_handshakes_do_not_wedge_the_listener() {
    let ca = Ca::new("flowgate test CA");
    let server_cert = ca.server(401);
    let dir = TempDir::new("tls-slow");
    let gw = gateway(&format!(
        "cert_file = {}\nkey_file = {}\nhandshake_timeout = \"1s\"\nmax_handshakes = 4\n",
        toml_path(&dir.write("tls.crt", &server_cert.cert)),
        toml_path(&dir.write("tls.key", &server_cert.key))
    ))
    .await;
    let addr = gw.server.addr;

    // Garbage: closed without an answer worth reading.
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0x16, 3, 1, 0xff, 0xff, 1],
    ] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(junk).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "garbage connection left open");
    }
    // Silent clients, as many as the handshake bound: each is cut at the
    // handshake timeout, and a real client gets in meanwhile or just after.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let started = Instant::now();
    let client = ClientTls::new(&ca.pem, None);
    let channel = client.channel(addr).await.expect("a client gets through");
    assert_eq!(health(channel).await.unwrap(), ServingStatus::Serving);
    assert!(started.elapsed() < Duration::from_secs(4));
    for mut tcp in silent {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "a silent connection outlived the handshake timeout"
        );
    }
    gw.server.shutdown().await.unwrap();
}

/// Kubernetes mounts a Secret as `tls.crt -> ..data/tls.crt` with `..data`
/// a symlink swapped atomically to a new directory on rotation.
#[cfg(unix)]
fn mount(dir: &TempDir, version: &str, issued: &Issued) {
    let data = dir.0.join(version);
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("tls.crt"), &issued.cert).unwrap();
    std::fs::write(data.join("tls.key"), &issued.key).unwrap();
    let tmp = dir.0.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&data, &tmp).unwrap();
    std::fs::rename(&tmp, dir.0.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        let link = dir.0.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(dir.0.join("..data").join(name), &link).unwrap();
        }
    }
}

#[cfg(unix)]
#[tokio::test]
async fn rotated_certificates_serve_new_connections_and_keep_open_streams() {
    let ca = Ca::new("flowgate test CA");
    let first = ca.server(501);
    let dir = TempDir::new("tls-rotate");
    mount(&dir, "v1", &first);
    let gw = gateway(&format!(
        "cert_file = {}\nkey_file = {}\nreload_interval = \"1s\"\n",
        toml_path(&dir.0.join("tls.crt")),
        toml_path(&dir.0.join("tls.key"))
    ))
    .await;
    let addr = gw.server.addr;

    // An open Health.Watch stream on the first certificate's connection.
    let old = ClientTls::new(&ca.pem, None);
    let old_channel = old.channel(addr).await.unwrap();
    let mut watch = HealthClient::new(old_channel.clone())
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let status = watch.message().await.unwrap().unwrap();
    assert_eq!(status.status(), ServingStatus::Serving);

    // Rotate: a new connection sees the new certificate within a few
    // reload intervals.
    let second = ca.server(502);
    mount(&dir, "v2", &second);
    let fresh = ClientTls::new(&ca.pem, None);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let channel = fresh.channel(addr).await.unwrap();
        assert_eq!(health(channel).await.unwrap(), ServingStatus::Serving);
        if fresh.serials().last() == Some(&502) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never saw the rotated certificate"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The old connection is untouched: same single connection, the stream
    // still open, unary calls still answered.
    let pending = tokio::time::timeout(Duration::from_millis(300), watch.message()).await;
    assert!(pending.is_err(), "the open stream ended: {pending:?}");
    assert_eq!(
        health(old_channel.clone()).await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(old.serials(), vec![501], "no reconnection");

    // A bad rotation (a key that is not the certificate's) keeps the
    // current certificate and says so, without the key.
    let third = ca.server(503);
    let mismatched = Issued {
        cert: third.cert.clone(),
        key: ca.server(504).key,
    };
    mount(&dir, "v3", &mismatched);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !log_text().contains("still serving the previous certificate") {
        assert!(Instant::now() < deadline, "no warning for the bad files");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let channel = fresh.channel(addr).await.unwrap();
    assert_eq!(health(channel).await.unwrap(), ServingStatus::Serving);
    assert_eq!(fresh.serials().last(), Some(&502));
    let pending = tokio::time::timeout(Duration::from_millis(100), watch.message()).await;
    assert!(pending.is_err(), "the open stream ended: {pending:?}");

    // Shutdown still drains: the open stream says NOT_SERVING, then ends
    // with UNAVAILABLE.
    gw.server.shutdown().await.unwrap();
    let mut ended = None;
    for _ in 0..3 {
        match tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("the stream ends at shutdown")
        {
            Ok(Some(status)) => assert_eq!(status.status(), ServingStatus::NotServing),
            end => {
                ended = Some(end);
                break;
            }
        }
    }
    match ended {
        Some(Err(status)) => assert_eq!(status.code(), tonic::Code::Unavailable),
        other => panic!("the stream did not end with UNAVAILABLE: {other:?}"),
    }
    for issued in [&first, &second, &mismatched] {
        assert_key_absent_from_logs(&issued.key);
    }
}

#[tokio::test]
async fn unusable_files_are_reported_with_their_paths() {
    let ca = Ca::new("flowgate test CA");
    let server_cert = ca.server(601);
    let other = ca.server(602);
    let dir = TempDir::new("tls-bad");
    let cert = dir.write("tls.crt", &server_cert.cert);
    let wrong_key = dir.write("wrong.key", &other.key);
    let not_pem = dir.write("junk.pem", "not PEM at all");
    let load = |tls: String| {
        let text =
            format!("[providers.kn]\nkind = \"knouds\"\napi_key_env = \"K\"\n[server.tls]\n{tls}");
        let config = Config::parse(&text, Vec::new()).unwrap();
        match TlsMaterial::load(config.server.tls.as_ref().unwrap()) {
            Ok(_) => Vec::new(),
            Err(err) => err
                .issues
                .into_iter()
                .map(|issue| format!("{}: {}", issue.path, issue.message))
                .collect::<Vec<_>>(),
        }
    };
    let missing = load(format!(
        "cert_file = {}\nkey_file = {}\nclient_ca_file = {}\n",
        toml_path(&dir.0.join("absent.crt")),
        toml_path(&dir.0.join("absent.key")),
        toml_path(&not_pem),
    ));
    assert_eq!(missing.len(), 2, "{missing:?}");
    assert!(missing[0].starts_with("server.tls.cert_file: cannot read"));
    assert!(missing[1].starts_with("server.tls.key_file: cannot read"));
    let mismatch = load(format!(
        "cert_file = {}\nkey_file = {}\n",
        toml_path(&cert),
        toml_path(&wrong_key)
    ));
    assert_eq!(mismatch.len(), 1, "{mismatch:?}");
    assert!(mismatch[0].starts_with("server.tls.key_file: unusable"));
    let junk = load(format!(
        "cert_file = {}\nkey_file = {}\nclient_ca_file = {}\n",
        toml_path(&not_pem),
        toml_path(&not_pem),
        toml_path(&not_pem)
    ));
    let paths: Vec<_> = junk
        .iter()
        .map(|line| line.split(':').next().unwrap())
        .collect();
    assert_eq!(
        paths,
        vec![
            "server.tls.cert_file",
            "server.tls.key_file",
            "server.tls.client_ca_file"
        ],
        "{junk:?}"
    );
}

#[test]
fn check_config_reads_the_tls_files() {
    let dir = TempDir::new("tls-check-config");
    let ca = Ca::new("flowgate test CA");
    let server_cert = ca.server(701);
    let run = |tls: String| {
        let path = dir.write(
            "flowgate.toml",
            &format!(
                "[providers.kn]\nkind = \"knouds\"\napi_key_env = \"KN\"\n[server.tls]\n{tls}"
            ),
        );
        std::process::Command::new(env!("CARGO_BIN_EXE_flowgate"))
            .arg("check-config")
            .arg(path)
            .env("KN", "knouds_live_x")
            .output()
            .unwrap()
    };
    let output = run(format!(
        "cert_file = {}\nkey_file = {}\n",
        toml_path(&dir.0.join("absent.crt")),
        toml_path(&dir.write("tls.key", &server_cert.key))
    ));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("server.tls.cert_file: cannot read"),
        "{stderr}"
    );
    assert!(!stderr.contains("server.tls.key_file"), "{stderr}");
    let output = run(format!(
        "cert_file = {}\nkey_file = {}\n",
        toml_path(&dir.write("tls.crt", &server_cert.cert)),
        toml_path(&dir.0.join("tls.key"))
    ));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
