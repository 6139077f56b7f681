//! Operating the Redis store, through real `flowgate serve` processes (the
//! emulator runs in this process, Redis as real `redis-server`s):
//!
//! - store health on the Prometheus page: `flowgate_state_store_up` goes to
//!   0 with Redis stopped (and failures count in
//!   `flowgate_state_store_errors_total`), then back to 1 after a restart
//!   without any traffic;
//! - the Redis password from `[state] password_file`; a wrong one is a
//!   clear warning at start (kind `Auth`) and a 0 gauge, never the password
//!   in a log line;
//! - `rediss://` with a private CA in `[state] tls_ca_file`;
//! - unusable password or CA files are reported by `check-config` with
//!   their field.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod common;

use std::{
    net::{IpAddr, Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{config_text, inputs, target, test_keys, workflow_id};
use flowgate::pb::{self, workflow_gateway_client::WorkflowGatewayClient};
use flowgate_emulator::{Emulator, EmulatorConfig};
use flowgate_redis::testing::{RedisServer, ServerOptions, ServerTls};
use serde_json::json;
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt as _;

/// A directory for config, secret and log files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("flowgate-redis-ops-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn toml_path(path: &Path) -> String {
    path.display().to_string().replace('\\', "\\\\")
}

/// A `flowgate serve` process, killed on drop; its log lines go to a file.
struct Gateway {
    child: Child,
    client: WorkflowGatewayClient<Channel>,
    admin: u16,
    log: PathBuf,
}

impl Gateway {
    /// Starts `flowgate serve` with the tests' providers on `emulator` and
    /// `state` as its `[state]` section, and waits until it serves.
    async fn start(scratch: &Scratch, name: &str, emulator: &Emulator, state: &str) -> Self {
        let (port, admin) = (free_port(), free_port());
        let config = config_text(emulator).replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\""),
        );
        let config = scratch.write(
            &format!("{name}.toml"),
            &format!("{config}\n[state]\n{state}\n"),
        );
        let log = scratch.0.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_flowgate"))
            .args(["serve", "--config"])
            .arg(&config)
            .envs(test_keys())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(scratch.0.join(format!("{name}.out"))).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            if let Ok(client) =
                WorkflowGatewayClient::connect(format!("http://127.0.0.1:{port}")).await
            {
                break client;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Self {
            child,
            client,
            admin,
            log,
        }
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of the sample of `name` whose labels contain `labels`.
    async fn sample(&self, name: &str, labels: &[&str]) -> Option<f64> {
        self.metrics().await.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            if !labels.iter().all(|label| rest.contains(label)) {
                return None;
            }
            rest.rsplit(' ').next()?.parse().ok()
        })
    }

    /// Waits (bounded) until `flowgate_state_store_up` reads `up`.
    async fn wait_for_up(&self, up: f64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let value = self.sample("flowgate_state_store_up", &[]).await;
            if value == Some(up) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "flowgate_state_store_up is {value:?}, not {up}:\n{}",
                self.metrics().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn story(async_run: bool) -> pb::InvokeRequest {
    pb::InvokeRequest {
        target: target("tutor", workflow_id("wf_story")),
        inputs: inputs(json!({"story": "a dragon"})),
        async_options: async_run.then(|| pb::AsyncOptions {
            enabled: true,
            callback_url: String::new(),
        }),
        ..Default::default()
    }
}

/// An async AI Tutor run followed to its end: proves the store works.
async fn async_run_completes(gateway: &mut Gateway) {
    let started = gateway
        .client
        .invoke(story(true))
        .await
        .unwrap()
        .into_inner();
    follow_to_completion(gateway, started.run_id).await;
}

/// After an outage: as a caller honouring RetryInfo would, retries
/// STATE_STORE_UNAVAILABLE (a connection may reconnect a moment after
/// another one reported Redis up) for at most ten seconds, then follows the
/// run to its end.
async fn async_run_completes_after_recovery(gateway: &mut Gateway) {
    for _ in 0..10 {
        match gateway.client.invoke(story(true)).await {
            Ok(started) => return follow_to_completion(gateway, started.into_inner().run_id).await,
            Err(status) => {
                let reason = status
                    .get_error_details()
                    .error_info()
                    .map(|info| info.reason.clone());
                assert_eq!(
                    reason.as_deref(),
                    Some("STATE_STORE_UNAVAILABLE"),
                    "{status:?}"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    panic!("async runs did not recover within 10 s of Redis coming back");
}

async fn follow_to_completion(gateway: &mut Gateway, run_id: String) {
    let started = pb::InvokeResponse {
        run_id,
        ..Default::default()
    };
    let mut events = gateway
        .client
        .stream_status(pb::StreamStatusRequest {
            run_id: started.run_id,
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(event) = events.message().await.unwrap() {
        last = Some(event.status());
    }
    assert_eq!(last, Some(pb::RunStatus::Completed));
}

async fn async_run_is_refused(gateway: &mut Gateway) {
    let status = gateway.client.invoke(story(true)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.get_error_details().error_info().unwrap().reason,
        "STATE_STORE_UNAVAILABLE"
    );
}

async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_health_on_the_prometheus_page_follows_a_redis_outage() {
    let scratch = Scratch::new("health");
    let emulator = emulator().await;
    let mut redis = RedisServer::start().unwrap();
    let state = format!(
        "store = \"redis\"\nurl = \"{}\"\nop_timeout = \"300ms\"",
        redis.url()
    );
    let mut gateway = Gateway::start(&scratch, "health", &emulator, &state).await;
    // The start-up round trip sets the gauge.
    gateway.wait_for_up(1.0).await;
    async_run_completes(&mut gateway).await;

    redis.stop();
    async_run_is_refused(&mut gateway).await;
    gateway.wait_for_up(0.0).await;
    let failures = gateway
        .sample(
            "flowgate_state_store_errors_total",
            &["kind=\"connection\""],
        )
        .await
        .unwrap_or_default()
        + gateway
            .sample("flowgate_state_store_errors_total", &["kind=\"timeout\""])
            .await
            .unwrap_or_default();
    assert!(failures >= 1.0, "{}", gateway.metrics().await);
    // Sync calls go on.
    let sync = gateway
        .client
        .invoke(story(false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sync.status(), pb::RunStatus::Completed);

    // Back: the gauge recovers by itself (no call is made meanwhile), then
    // async runs work again.
    redis.restart().unwrap();
    gateway.wait_for_up(1.0).await;
    async_run_completes_after_recovery(&mut gateway).await;
    let log = gateway.log_text();
    assert!(log.contains("state store (Redis) unreachable"), "{log}");
    assert!(log.contains("state store (Redis) reachable"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_comes_from_a_file_and_a_wrong_one_is_clear_and_never_logged() {
    let scratch = Scratch::new("password");
    let emulator = emulator().await;
    let right = "pw-from-a-file-7d1e";
    let redis = RedisServer::start_with(ServerOptions {
        password: Some(right.into()),
        ..ServerOptions::default()
    })
    .unwrap();
    // Written as a Kubernetes Secret or `echo` would: a trailing newline.
    let file = scratch.write("redis-password", &format!("{right}\n"));
    let state = format!(
        "store = \"redis\"\nurl = \"{}\"\npassword_file = \"{}\"",
        redis.url(),
        toml_path(&file)
    );
    let mut good = Gateway::start(&scratch, "good", &emulator, &state).await;
    good.wait_for_up(1.0).await;
    async_run_completes(&mut good).await;

    let wrong = "wrong-pw-9c4b";
    let file = scratch.write("wrong-password", &format!("{wrong}\n"));
    let state = format!(
        "store = \"redis\"\nurl = \"{}\"\npassword_file = \"{}\"\nop_timeout = \"300ms\"",
        redis.url(),
        toml_path(&file)
    );
    let mut bad = Gateway::start(&scratch, "bad", &emulator, &state).await;
    // Starts (Redis trouble is a degraded state, not a failed start) and
    // says why at once, without a call.
    bad.wait_for_up(0.0).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bad.log_text().contains("unreachable") {
        assert!(Instant::now() < deadline, "{}", bad.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = bad.log_text();
    assert!(log.contains("(Auth)"), "{log}");
    assert!(
        bad.sample("flowgate_state_store_errors_total", &["kind=\"auth\""])
            .await
            .is_some_and(|count| count >= 1.0),
        "{}",
        bad.metrics().await
    );
    async_run_is_refused(&mut bad).await;
    let sync = bad.client.invoke(story(false)).await.unwrap().into_inner();
    assert_eq!(sync.status(), pb::RunStatus::Completed);
    drop(bad);
    drop(good);
    for name in ["good.log", "good.out", "bad.log", "bad.out"] {
        let text = std::fs::read_to_string(scratch.0.join(name)).unwrap();
        assert!(
            !text.contains(right) && !text.contains(wrong),
            "{name}: {text}"
        );
    }
}

/// A CA made by the test and a server certificate for 127.0.0.1 it signed.
fn test_pki() -> (String, ServerTls) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SanType,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "flowgate test Redis CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = leaf
        .signed_by(&key, &Issuer::from_params(&ca, &ca_key))
        .unwrap()
        .pem();
    (
        ca_pem,
        ServerTls {
            cert_pem: cert,
            key_pem: key.serialize_pem(),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_file_serves_async_runs() {
    let scratch = Scratch::new("tls");
    let emulator = emulator().await;
    let (ca_pem, server_tls) = test_pki();
    let redis = RedisServer::start_with(ServerOptions {
        password: Some("tls-pw-51aa".into()),
        tls: Some(server_tls),
    })
    .unwrap();
    let ca = scratch.write("redis-ca.pem", &ca_pem);
    let password = scratch.write("redis-password", "tls-pw-51aa\n");
    let state = format!(
        "store = \"redis\"\nurl = \"{}\"\npassword_file = \"{}\"\ntls_ca_file = \"{}\"",
        redis.tls_url().unwrap(),
        toml_path(&password),
        toml_path(&ca)
    );
    let mut gateway = Gateway::start(&scratch, "tls", &emulator, &state).await;
    gateway.wait_for_up(1.0).await;
    async_run_completes(&mut gateway).await;
    assert!(!gateway.log_text().contains("tls-pw-51aa"));
}

#[test]
fn check_config_names_unusable_password_and_ca_files() {
    let scratch = Scratch::new("check");
    let not_pem = scratch.write("not-a-ca.pem", "hello\n");
    let empty = scratch.write("empty-password", "\n");
    let base =
        "[providers.kn]\nkind = \"knouds\"\napi_key_env = \"KN\"\n[state]\nstore = \"redis\"\n";
    let check = |state: String| {
        let config = scratch.write("check.toml", &format!("{base}{state}\n"));
        let output = Command::new(env!("CARGO_BIN_EXE_flowgate"))
            .arg("check-config")
            .arg(&config)
            .env("KN", "knouds_live_x")
            .env("REDIS_PW", "from-env")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{state}");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    let shown = check(format!(
        "url = \"redis://r:6379\"\npassword_env = \"REDIS_PW\"\npassword_file = \"{}\"",
        toml_path(&empty)
    ));
    assert!(
        shown.contains("state.password_env") && shown.contains("not both"),
        "{shown}"
    );
    let shown = check(format!(
        "url = \"redis://r:6379\"\npassword_file = \"{}\"",
        toml_path(&empty)
    ));
    assert!(
        shown.contains("state.password_file") && shown.contains("is empty"),
        "{shown}"
    );
    let shown = check("url = \"redis://r:6379\"\npassword_file = \"/nonexistent/pw\"".into());
    assert!(
        shown.contains("state.password_file") && shown.contains("/nonexistent/pw"),
        "{shown}"
    );
    let shown = check(format!(
        "url = \"rediss://r:6380\"\ntls_ca_file = \"{}\"",
        toml_path(&not_pem)
    ));
    assert!(
        shown.contains("state.tls_ca_file") && shown.contains("no PEM certificate"),
        "{shown}"
    );
    let shown = check(format!(
        "url = \"redis://r:6379\"\ntls_ca_file = \"{}\"",
        toml_path(&not_pem)
    ));
    assert!(
        shown.contains("state.tls_ca_file") && shown.contains("rediss://"),
        "{shown}"
    );
    assert!(!shown.contains("from-env"));
}
