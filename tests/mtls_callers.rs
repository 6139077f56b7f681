//! mTLS identities mapped to callers, end to end: a real tonic client over
//! mTLS (a CA made here with rcgen) to a real gateway and the emulator on
//! 127.0.0.1. A certificate's SPIFFE id or DNS SAN names a caller, whose
//! capabilities then decide; an unknown identity is UNAUTHENTICATED; a
//! bearer key, when present, decides instead of the certificate; the
//! access log names the caller. The TLS listener itself is tested in
//! `tls.rs`, the callers over plaintext in `callers.rs`.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail loudly"
)]

mod common;

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Duration,
};

use common::{
    captured_logs::CapturedLogs,
    deployment, inputs,
    pki::{Ca, Issued},
    slug, target,
    temp_dir::{TempDir, toml_path},
};
use flowgate::{
    auth::KeyHash,
    config::Config,
    pb::{self, workflow_gateway_client::WorkflowGatewayClient},
    server::{self, RunningServer},
};
use flowgate_emulator::{Emulator, EmulatorConfig};
use hyper_util::rt::TokioIo;
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use tokio::net::TcpStream;
use tonic::{
    Code, Request, Status,
    transport::{Channel, Endpoint, Uri},
};
use tonic_types::StatusExt as _;

const RUNNER: &str = "spiffe://test.local/ns/ci/sa/runner";
const OPS_KEY: &str = "fgk_ops_key_0123456789abcdefghijklmnopqrstuvwxy";

/// `runner` (a SPIFFE id) may run Knouds `summarize-*`; `builder` (a DNS
/// SAN) may run the Fetch Hive `summarize` deployment; `ops` (a key only)
/// may run anything.
fn callers() -> String {
    format!(
        "[callers.runner]\nidentities = [\"{RUNNER}\"]\n\
         capabilities = [\"invoke:kn/summarize-*\"]\n\
         [callers.builder]\nidentities = [\"dns:builder.ci.svc\"]\n\
         capabilities = [\"invoke:fh/summarize\"]\n\
         [callers.ops]\nkey_hashes = [\"{}\"]\ncapabilities = [\"invoke:*/*\"]\n",
        KeyHash::of(OPS_KEY.as_bytes()).to_config()
    )
}

// ---------------------------------------------------------------- logs ----

/// Everything every test of this binary logs, as JSON lines.
fn logs() -> &'static CapturedLogs {
    static LOGS: OnceLock<CapturedLogs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = CapturedLogs::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(captured.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    })
}

/// The `flowgate::access` lines logged so far.
fn access_lines() -> Vec<String> {
    logs()
        .text()
        .lines()
        .filter(|line| line.contains(r#""target":"flowgate::access""#))
        .map(str::to_owned)
        .collect()
}

// -------------------------------------------------------------- client ----

/// Connects to `addr` over TLS with a client config (trust and identity).
#[derive(Clone)]
struct Connector {
    config: Arc<ClientConfig>,
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
        Box::pin(async move {
            let tcp = TcpStream::connect(this.addr).await?;
            let tls = tokio_rustls::TlsConnector::from(this.config)
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// A gRPC client over mTLS to `addr`, presenting `identity`.
async fn client(ca: &Ca, identity: &Issued, addr: SocketAddr) -> WorkflowGatewayClient<Channel> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(identity.cert.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(identity.key.as_bytes()).unwrap(),
            )
            .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let channel = Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect_with_connector(Connector {
            config: Arc::new(config),
            addr,
        })
        .await
        .expect("mTLS connection");
    WorkflowGatewayClient::new(channel)
}

// ------------------------------------------------------------- gateway ----

/// The emulator and a gateway with mTLS required (client CA `ca`) and the
/// callers of [`callers`].
struct Gateway {
    emulator: Emulator,
    server: RunningServer,
    _dir: TempDir,
}

async fn gateway(ca: &Ca, name: &str) -> Gateway {
    logs();
    let dir = TempDir::new(&format!("mtls-callers-{name}"));
    let server_cert = ca.server(1);
    let emulator = Emulator::start(EmulatorConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let text = format!(
        "{}\n[server.tls]\ncert_file = {}\nkey_file = {}\nclient_ca_file = {}\n{}",
        common::config_text(&emulator),
        toml_path(&dir.write("tls.crt", &server_cert.cert)),
        toml_path(&dir.write("tls.key", &server_cert.key)),
        toml_path(&dir.write("ca.crt", &ca.pem)),
        callers(),
    );
    let config = Config::parse(&text, Vec::new()).expect("config parses");
    let keys = common::test_keys();
    let app = server::build(&config, |var| keys.get(var).cloned()).expect("gateway builds");
    let server = server::spawn(app).await.expect("gateway starts");
    Gateway {
        emulator,
        server,
        _dir: dir,
    }
}

// ------------------------------------------------------------- answers ----

fn kn_summarize() -> pb::InvokeRequest {
    pb::InvokeRequest {
        target: target("kn", slug("summarize-text")),
        inputs: inputs(serde_json::json!({"text": "hello over mTLS"})),
        ..Default::default()
    }
}

fn fh_summarize() -> pb::InvokeRequest {
    pb::InvokeRequest {
        target: target("fh", deployment("summarize", "default")),
        inputs: inputs(serde_json::json!({"topic": "mTLS"})),
        ..Default::default()
    }
}

fn with_key<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

fn assert_unauthenticated(status: &Status) {
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let details = status.get_error_details();
    assert_eq!(
        details.error_info().unwrap().reason,
        "CALLER_UNAUTHENTICATED"
    );
}

fn assert_denied(status: &Status, required: &str) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().unwrap();
    assert_eq!(info.reason, "CALLER_CAPABILITY_DENIED");
    assert_eq!(info.metadata.get("required_capability").unwrap(), required);
}

// --------------------------------------------------------------- tests ----

#[tokio::test]
async fn a_spiffe_identity_runs_its_workflow_and_nothing_else() {
    let ca = Ca::new("flowgate mTLS callers test CA");
    let gw = gateway(&ca, "spiffe").await;
    let mut runner = client(&ca, &ca.client_uri(RUNNER), gw.server.addr).await;

    let ok = runner
        .invoke(kn_summarize())
        .await
        .expect("runner may run kn/summarize-*")
        .into_inner();
    assert_eq!(ok.provider, "kn");
    assert_eq!(ok.status(), pb::RunStatus::Completed);

    // Another workflow, another provider: denied before any upstream call,
    // naming the capability that would allow it.
    let calls_before = gw.emulator.requests().len();
    let mut render = kn_summarize();
    render.target = target("kn", slug("render-video"));
    let status = runner.invoke(render).await.unwrap_err();
    assert_denied(&status, "invoke:kn/render-video");
    let status = runner.invoke(fh_summarize()).await.unwrap_err();
    assert_denied(&status, "invoke:fh/summarize");
    assert_eq!(
        gw.emulator.requests().len(),
        calls_before,
        "no denied call reached a provider"
    );
    gw.server.shutdown().await.unwrap();

    // The access log names the caller the certificate mapped to.
    let access = access_lines();
    let runner_line = |code: &str, workflow: &str| {
        access.iter().any(|line| {
            line.contains(r#""caller":"runner""#)
                && line.contains(&format!(r#""code":"{code}""#))
                && line.contains(&format!(r#""workflow":"{workflow}""#))
                && line.contains(r#""method":"flowgate.v1.WorkflowGateway/Invoke""#)
        })
    };
    assert!(runner_line("OK", "summarize-text"), "{access:#?}");
    assert!(
        runner_line("PERMISSION_DENIED", "render-video"),
        "{access:#?}"
    );
    assert!(runner_line("PERMISSION_DENIED", "summarize"), "{access:#?}");
}

#[tokio::test]
async fn an_unknown_identity_of_the_trusted_ca_is_unauthenticated() {
    let ca = Ca::new("flowgate mTLS callers test CA");
    let gw = gateway(&ca, "unknown").await;
    let addr = gw.server.addr;
    let calls_before = gw.emulator.requests().len();

    // The handshake succeeds (same CA), but no caller has this identity.
    let stranger_id = "spiffe://test.local/ns/ci/sa/stranger";
    let mut stranger = client(&ca, &ca.client_uri(stranger_id), addr).await;
    let status = stranger.invoke(kn_summarize()).await.unwrap_err();
    assert_unauthenticated(&status);
    // A DNS SAN nobody named, and a prefix of a configured SPIFFE id.
    for issued in [
        ca.client_dns("stranger.ci.svc"),
        ca.client_uri("spiffe://test.local/ns/ci/sa/run"),
    ] {
        let mut other = client(&ca, &issued, addr).await;
        let refused = other.invoke(kn_summarize()).await.unwrap_err();
        assert_unauthenticated(&refused);
        assert_eq!(refused.message(), status.message(), "never says which");
    }
    assert_eq!(
        gw.emulator.requests().len(),
        calls_before,
        "nothing reached a provider"
    );

    // A bearer key decides instead of the certificate: a valid one is its
    // caller whatever the certificate, an invalid one is refused even
    // with a known certificate.
    stranger
        .invoke(with_key(fh_summarize(), OPS_KEY))
        .await
        .expect("the key's caller, ops");
    let mut runner = client(&ca, &ca.client_uri(RUNNER), addr).await;
    let status = runner
        .invoke(with_key(kn_summarize(), &format!("{OPS_KEY}0")))
        .await
        .unwrap_err();
    assert_unauthenticated(&status);
    gw.server.shutdown().await.unwrap();

    let access = access_lines();
    assert!(
        access.iter().any(|line| line.contains(r#""caller":"ops""#)
            && line.contains(r#""code":"OK""#)
            && line.contains(r#""provider":"fh""#)),
        "{access:#?}"
    );
    assert!(
        !access.iter().any(|line| line.contains(OPS_KEY)),
        "a key in the access log"
    );
}

#[tokio::test]
async fn a_dns_san_maps_to_its_caller() {
    let ca = Ca::new("flowgate mTLS callers test CA");
    let gw = gateway(&ca, "dns").await;
    let addr = gw.server.addr;

    // A certificate with only a DNS SAN, in any case (DNS names are
    // case-insensitive).
    for name in ["builder.ci.svc", "Builder.CI.svc"] {
        let mut builder = client(&ca, &ca.client_dns(name), addr).await;
        let ok = builder
            .invoke(fh_summarize())
            .await
            .unwrap_or_else(|status| panic!("{name} may run fh/summarize: {status:?}"))
            .into_inner();
        assert_eq!(ok.provider, "fh");
        // It is `builder`, not `runner`: Knouds summarize is not its own.
        let status = builder.invoke(kn_summarize()).await.unwrap_err();
        assert_denied(&status, "invoke:kn/summarize-text");
    }
    gw.server.shutdown().await.unwrap();

    let access = access_lines();
    assert!(
        access
            .iter()
            .any(|line| line.contains(r#""caller":"builder""#)
                && line.contains(r#""code":"OK""#)
                && line.contains(r#""provider":"fh""#)),
        "{access:#?}"
    );
}
