//! What Kubernetes needs from a real `flowgate serve` process: secret files
//! rotated the way a Secret volume rotates them (the `..data` symlink
//! swapped) take effect without a restart, a broken one keeps the old key
//! and is counted; the admin port answers `/healthz`, `/readyz` and
//! `process_*` metrics over HTTP; logs written to a pipe carry no colours
//! and JSON lines hold plain values.

#![expect(clippy::unwrap_used, reason = "test helpers fail fast with a message")]

mod common;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use common::{inputs, slug, target};
use flowgate::pb::{self, workflow_gateway_client::WorkflowGatewayClient};
use flowgate_emulator::{Emulator, EmulatorConfig, keys};
use tonic::Code;
use tonic_types::StatusExt as _;

/// Longest wait for anything the gateway does on its own (start, a reload
/// every second).
const PATIENCE: Duration = Duration::from_secs(20);

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "flowgate-ops-{name}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Secret volume as the kubelet lays it out: `<name> -> ..data/<name>`,
/// `..data -> ..<version>`; an update writes a new version directory and
/// swaps `..data` in one rename.
struct SecretVolume {
    dir: PathBuf,
    versions: u32,
}

impl SecretVolume {
    fn new(dir: &Path, name: &str, value: &str) -> Self {
        let mut volume = Self {
            dir: dir.to_owned(),
            versions: 0,
        };
        volume.update(&[(name, value)]);
        std::os::unix::fs::symlink(Path::new("..data").join(name), dir.join(name)).unwrap();
        volume
    }

    /// Swaps in a version holding `files` (a name left out is missing).
    fn update(&mut self, files: &[(&str, &str)]) {
        self.versions += 1;
        let version = format!("..2026_12_01_{:02}", self.versions);
        std::fs::create_dir(self.dir.join(&version)).unwrap();
        for (name, value) in files {
            std::fs::write(self.dir.join(&version).join(name), value).unwrap();
        }
        let staged = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &staged).unwrap();
        std::fs::rename(&staged, self.dir.join("..data")).unwrap();
    }
}

/// A `flowgate serve` child process with its stderr captured line by line.
struct Gateway {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    grpc: SocketAddr,
    admin: SocketAddr,
}

impl Gateway {
    /// Starts `flowgate serve` on `config` and waits for its start-up line.
    /// With `json` (the config sets `log.format = "json"`) the bound gRPC
    /// and admin addresses are read from that line; otherwise they stay
    /// unknown (port 0).
    async fn start(dir: &Path, config: &str, json: bool) -> Self {
        Self::start_with_env(dir, config, json, &[]).await
    }

    /// [`Gateway::start`] with `env` added to its environment.
    async fn start_with_env(dir: &Path, config: &str, json: bool, env: &[(&str, &str)]) -> Self {
        let path = dir.join("flowgate.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowgate"))
            .args(["serve", "--config"])
            .arg(&path)
            .env_remove("RUST_LOG")
            .env("KN_ENV_KEY", keys::KNOUDS_KEY)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().unwrap().push(std::mem::take(&mut line));
            }
        });
        let mut gateway = Self {
            child,
            lines,
            grpc: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
        };
        let serving = gateway.wait_for_line("flowgate serving").await;
        if json {
            let serving: serde_json::Value = serde_json::from_str(&serving).unwrap();
            gateway.grpc = serving["listen"].as_str().unwrap().parse().unwrap();
            gateway.admin = serving["admin"].as_str().unwrap().parse().unwrap();
        }
        gateway
    }

    /// The first line containing `needle`, waiting for it (bounded).
    async fn wait_for_line(&mut self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(line) = self.lines().into_iter().find(|line| line.contains(needle)) {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("flowgate exited ({status}):\n{}", self.lines().concat());
            }
            assert!(
                started.elapsed() < PATIENCE,
                "no line with {needle:?}:\n{}",
                self.lines().concat()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many lines contain `needle` so far.
    fn count_lines(&self, needle: &str) -> usize {
        self.lines()
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// Waits until `count` lines contain `needle`.
    async fn wait_for_lines(&mut self, needle: &str, count: usize) {
        let started = Instant::now();
        while self.count_lines(needle) < count {
            assert!(
                started.elapsed() < PATIENCE,
                "fewer than {count} lines with {needle:?}:\n{}",
                self.lines().concat()
            );
            assert!(self.child.try_wait().unwrap().is_none(), "flowgate exited");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    async fn client(&self) -> WorkflowGatewayClient<tonic::transport::Channel> {
        WorkflowGatewayClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }

    /// Stops the process (SIGTERM, then SIGKILL after a bounded wait) and
    /// returns everything it logged.
    fn stop(mut self) -> Vec<String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while self.child.try_wait().unwrap().is_none() && started.elapsed() < PATIENCE {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader thread sees EOF once the process is gone.
        std::thread::sleep(Duration::from_millis(100));
        self.lines()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on `addr` over plain HTTP/1.1: status and body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// The value of the first sample line of `name` on a metrics page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find(|line| line.starts_with(name) && !line.starts_with('#'))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

fn summarize() -> pb::InvokeRequest {
    pb::InvokeRequest {
        target: target("kn", slug("summarize-text")),
        inputs: inputs(serde_json::json!({"text": "hello"})),
        ..Default::default()
    }
}

async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn config(emulator: &Emulator, provider_key: &str, log_format: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         secret_reload_interval = \"1s\"\nshutdown_grace = \"2s\"\n\
         [log]\nformat = \"{log_format}\"\n\
         [providers.kn]\nkind = \"knouds\"\nbase_url = \"{}\"\n{provider_key}\n",
        emulator.knouds_base_url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_file_is_used_without_a_restart_and_a_broken_one_keeps_the_old_key() {
    let emulator = emulator().await;
    let dir = TempDir::new("rotate");
    let secrets = dir.0.join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    let mut volume = SecretVolume::new(&secrets, "knouds-api-key", keys::KNOUDS_KEY);
    let key_file = format!(
        "api_key_file = {:?}",
        secrets.join("knouds-api-key").display().to_string()
    );
    let mut gateway = Gateway::start(&dir.0, &config(&emulator, &key_file, "json"), true).await;
    let pid = gateway.child.id();
    let mut client = gateway.client().await;
    client.invoke(summarize()).await.unwrap();

    // A key the vendor does not know: the next calls are refused upstream,
    // which proves they carry the new key.
    volume.update(&[("knouds-api-key", "knouds_live_rotated_out_0001\n")]);
    gateway.wait_for_lines("secret file changed", 1).await;
    let status = client.invoke(summarize()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        status.get_error_details().error_info().unwrap().reason,
        "UPSTREAM_CREDENTIAL_REJECTED"
    );
    assert!(!status.message().contains("rotated_out"), "{status:?}");

    // The next rotation brings a valid key: calls succeed again.
    volume.update(&[("knouds-api-key", keys::KNOUDS_KEY_PRO)]);
    gateway.wait_for_lines("secret file changed", 2).await;
    client.invoke(summarize()).await.unwrap();

    // Broken rotations (an empty file, then no file) keep the key in use;
    // each is logged once and counted.
    volume.update(&[("knouds-api-key", "  \n")]);
    gateway.wait_for_lines("cannot be used", 1).await;
    client.invoke(summarize()).await.unwrap();
    volume.update(&[]);
    gateway.wait_for_lines("cannot be used", 2).await;
    client.invoke(summarize()).await.unwrap();
    // A few more reload intervals: the same problem is not logged again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(gateway.count_lines("cannot be used"), 2);
    let (status, page) = http_get(gateway.admin, "/metrics");
    assert_eq!(status, 200);
    let failures = page
        .lines()
        .find(|line| {
            line.starts_with("flowgate_config_reload_failures_total{")
                && line.contains("kind=\"api_key\"")
        })
        .unwrap_or_else(|| panic!("no reload failure counter:\n{page}"));
    assert!(failures.ends_with(" 2"), "{failures}");

    assert_eq!(gateway.child.id(), pid);
    assert!(
        gateway.child.try_wait().unwrap().is_none(),
        "never restarted"
    );
    let lines = gateway.stop();
    let text = lines.concat();
    for key in [
        keys::KNOUDS_KEY,
        keys::KNOUDS_KEY_PRO,
        "knouds_live_rotated_out",
    ] {
        assert!(!text.contains(key), "a key was logged:\n{text}");
    }
    let warning = lines
        .iter()
        .find(|line| line.contains("cannot be used"))
        .unwrap();
    let warning: serde_json::Value = serde_json::from_str(warning).unwrap();
    assert_eq!(warning["field"], "providers.kn.api_key_file");
    assert!(
        warning["problem"].as_str().unwrap().contains("is empty"),
        "{warning}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_serves_liveness_readiness_and_process_metrics() {
    let emulator = emulator().await;
    let dir = TempDir::new("admin");
    let gateway = Gateway::start(
        &dir.0,
        &config(&emulator, "api_key_env = \"KN_ENV_KEY\"", "json"),
        true,
    )
    .await;
    assert_eq!(http_get(gateway.admin, "/healthz"), (200, "ok\n".into()));
    assert_eq!(http_get(gateway.admin, "/readyz"), (200, "ready\n".into()));
    let (status, page) = http_get(gateway.admin, "/metrics");
    assert_eq!(status, 200);
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            page.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{page}"
        );
    }
    assert!(sample(&page, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(sample(&page, "process_open_fds").unwrap() >= 3.0);
    assert!(sample(&page, "process_cpu_seconds_total").unwrap() >= 0.0);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = sample(&page, "process_start_time_seconds").unwrap();
    assert!(
        started <= now + 2.0 && started > now - 120.0,
        "{started} vs {now}"
    );
    gateway.stop();
}

/// Readiness follows the health service: not ready before serving, ready
/// while serving, not ready again once shutdown begins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_health_service_through_shutdown() {
    let emulator = emulator().await;
    let config = flowgate::config::Config::parse(
        &config(&emulator, "api_key_env = \"KN_ENV_KEY\"", "text"),
        Vec::new(),
    )
    .unwrap();
    let app = flowgate::server::build(&config, |var| {
        (var == "KN_ENV_KEY").then(|| keys::KNOUDS_KEY.to_owned())
    })
    .unwrap();
    let readiness = app.readiness.clone();
    assert!(!readiness.is_ready(), "not ready before serving");
    let server = flowgate::server::spawn(app).await.unwrap();
    let started = Instant::now();
    while !readiness.is_ready() {
        assert!(started.elapsed() < PATIENCE, "never ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.shutdown().await.unwrap();
    assert!(!readiness.is_ready(), "not ready after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_on_a_pipe_have_no_colours_and_json_lines_hold_plain_values() {
    let emulator = emulator().await;
    let dir = TempDir::new("logs");
    let gateway = Gateway::start(
        &dir.0,
        &config(&emulator, "api_key_env = \"KN_ENV_KEY\"", "text"),
        false,
    )
    .await;
    let text = gateway.stop().concat();
    assert!(text.contains("flowgate serving"), "{text}");
    assert!(!text.contains('\x1b'), "colours on a pipe:\n{text:?}");

    let gateway = Gateway::start(
        &dir.0,
        &config(&emulator, "api_key_env = \"KN_ENV_KEY\"", "json"),
        true,
    )
    .await;
    let (grpc, admin) = (gateway.grpc, gateway.admin);
    let lines = gateway.stop();
    assert!(lines.len() >= 2, "{lines:?}");
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line:?}"));
        assert!(value.is_object(), "{line}");
        assert!(!line.contains("Some("), "a Debug-formatted field: {line}");
        assert!(!line.contains('\x1b'), "{line:?}");
    }
    let serving = lines
        .iter()
        .find(|line| line.contains("flowgate serving"))
        .unwrap();
    let serving: serde_json::Value = serde_json::from_str(serving).unwrap();
    assert_eq!(serving["listen"], grpc.to_string());
    assert_eq!(serving["admin"], admin.to_string());
    assert_ne!(grpc.port(), 0, "the bound port, not the configured 0");
    assert_eq!(serving["providers"], "kn");
    assert!(
        serving.get("ingress").is_none(),
        "no ingress configured: {serving}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_is_warned_about_once_while_running_and_plainly_at_exit() {
    let emulator = emulator().await;
    let dir = TempDir::new("otlp");
    // A loopback port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = format!(
        "{}[telemetry]\notlp_endpoint = \"http://{closed}\"\n",
        config(&emulator, "api_key_env = \"KN_ENV_KEY\"", "json")
    );
    let mut gateway = Gateway::start_with_env(
        &dir.0,
        &config,
        true,
        &[
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    )
    .await;
    // Spans to export, and a call that fails: its log line is in a trace.
    let mut client = gateway.client().await;
    client.invoke(summarize()).await.unwrap();
    let mut bad = summarize();
    bad.inputs = inputs(serde_json::json!({"prompt": 1}));
    client.invoke(bad).await.unwrap_err();

    let warning = gateway.wait_for_line("OTLP export failed").await;
    let warning: serde_json::Value = serde_json::from_str(&warning).unwrap();
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert_eq!(warning["endpoint"], format!("http://{closed}"), "{warning}");
    assert!(
        warning["error"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{warning}"
    );
    // Metrics are exported every 200 ms: wait for several failed exports.
    // One warning for the whole streak, every failure counted.
    let started = Instant::now();
    let metric_failures = |page: &str| {
        sample(
            page,
            "flowgate_telemetry_export_failures_total{signal=\"metrics\"}",
        )
        .unwrap_or(0.0)
    };
    while metric_failures(&http_get(gateway.admin, "/metrics").1) < 3.0 {
        assert!(
            started.elapsed() < PATIENCE,
            "{}",
            http_get(gateway.admin, "/metrics").1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metric_warnings = gateway
        .lines()
        .iter()
        .filter(|line| {
            line.contains("OTLP export failed") && line.contains("\"signal\":\"metrics\"")
        })
        .count();
    assert_eq!(metric_warnings, 1, "{}", gateway.lines().concat());

    // The log line of the failed call: the README's shape, with the trace.
    let lines = gateway.stop();
    let failed = lines
        .iter()
        .find(|line| line.contains("\"call failed\""))
        .unwrap_or_else(|| panic!("no call failed line:\n{}", lines.concat()));
    let failed: serde_json::Value = serde_json::from_str(failed).unwrap();
    assert_eq!(failed["target"], "flowgate::service", "{failed}");
    assert_eq!(failed["trace_id"].as_str().unwrap().len(), 32, "{failed}");
    assert_eq!(failed["span_id"].as_str().unwrap().len(), 16, "{failed}");
    assert!(failed.get("span").is_none() && failed.get("spans").is_none());

    // At exit: a plain sentence naming the collector, not the SDK's
    // `InternalFailure("Failed to shutdown")`.
    let text = lines.concat();
    assert!(
        text.contains("OTLP collector unreachable at shutdown"),
        "{text}"
    );
    assert!(!text.contains("Failed to shutdown"), "{text}");
}
