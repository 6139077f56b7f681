//! `flowgate demo --keep`: the emulator and the gateway on fixed loopback
//! ports, the configuration written to a file, three commands to try by
//! hand, and everything kept up until Ctrl-C or SIGTERM.

use std::os::unix::fs::DirBuilderExt as _;
use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use flowgate_emulator::{Emulator, EmulatorConfig, keys};
use flowgate_telemetry_setup::{LogFormat, Telemetry, TelemetrySettings};

use super::say;
use crate::{
    admin,
    auth::{KeyHash, key::generate_key},
    config::Config,
    server,
};

/// Where the kept demo listens (`--listen`, `--emulator-listen`,
/// `--admin-listen`; defaults 127.0.0.1:50051, :8700 and :9464).
#[derive(Debug, Clone, Copy)]
pub struct KeepAddrs {
    /// The gateway's gRPC listener.
    pub gateway: SocketAddr,
    /// The provider emulator.
    pub emulator: SocketAddr,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub admin: SocketAddr,
}

/// The directory holding the demo's configuration and key files, removed
/// when the demo stops.
#[derive(Debug)]
struct DemoDir(PathBuf);

impl DemoDir {
    fn create() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("flowgate-demo-{}", std::process::id()));
        // Private to this user (it holds the run-id secret), and refused if
        // the directory exists already (someone else may have made it).
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
        Ok(Self(dir))
    }

    /// Writes `text` to the file `name`; returns its path.
    fn write(&self, name: &str, text: &str) -> Result<PathBuf, String> {
        let path = self.0.join(name);
        std::fs::write(&path, text)
            .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
        Ok(path)
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a port that cannot be bound tells the user.
fn taken(what: &str, addr: SocketAddr, flag: &str, err: impl std::fmt::Display) -> String {
    format!(
        "cannot listen on {addr} for {what}: {err} (is another `flowgate demo --keep` or \
         `flowgate serve` running? stop it, or pick another port with {flag})"
    )
}

/// A TOML string (quoted and escaped).
fn toml_string(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// The demo's configuration: three providers on the emulator, their keys in
/// files beside it, and one caller whose key only the hash is kept of.
fn config_text(addrs: &KeepAddrs, emulator: &Emulator, key_hash: &str, dir: &DemoDir) -> String {
    let key_file = |name: &str| toml_string(&dir.0.join(name));
    format!(
        r#"# Written by `flowgate demo --keep` and served by it; removed when the demo
# stops. The provider keys are the emulator's test keys, in files beside
# this one (with the secret run ids are signed with). To serve a gateway of
# your own against `flowgate emulator`, start from examples/emulator.toml.

[server]
listen = "{gateway}"
admin_listen = "{admin}"
shutdown_grace = "5s"

[runs]
poll_initial = "200ms"
id_secret_file = {run_id_secret}

# The demo's one caller: the key was printed at start; only its hash is here.
[callers.demo]
key_hashes = ["{key_hash}"]
capabilities = ["invoke:*/*", "schemas:read", "runs:stream", "webhooks:verify"]

[providers.fetchhive]
kind = "fetchhive"
base_url = "{fetchhive}"
api_key_file = {fetchhive_key}

[providers.aitutor]
kind = "aitutor"
base_url = "{aitutor}"
api_key_file = {aitutor_key}

[providers.knouds]
kind = "knouds"
base_url = "{knouds}"
api_key_file = {knouds_key}
"#,
        gateway = addrs.gateway,
        admin = addrs.admin,
        fetchhive = emulator.fetchhive_base_url(),
        aitutor = emulator.aitutor_base_url(),
        knouds = emulator.knouds_base_url(),
        fetchhive_key = key_file("fetchhive.key"),
        aitutor_key = key_file("aitutor.key"),
        knouds_key = key_file("knouds.key"),
        run_id_secret = key_file("run-id.secret"),
    )
}

/// Three commands to try by hand against the running demo.
fn commands(addrs: &KeepAddrs, key: &str) -> String {
    let gateway = addrs.gateway;
    let admin = addrs.admin;
    format!(
        r#"Try it by hand (copy and paste):

  # grpcurl (server reflection; the key authenticates it too)
  grpcurl -plaintext -H 'authorization: Bearer {key}' -d '{{"target":{{"slug":"summarize-text"}},"inputs":{{"text":"hello"}}}}' {gateway} flowgate.v1.WorkflowGateway/Invoke

  # buf curl (--reflect-header '*': the key goes with the reflection requests too)
  buf curl --http2-prior-knowledge --protocol grpc -H 'authorization: Bearer {key}' --reflect-header '*' -d '{{"target":{{"deployment":{{"name":"summarize","variant":"default"}}}},"inputs":{{"topic":"hello"}}}}' http://{gateway}/flowgate.v1.WorkflowGateway/Invoke

  # curl: the calls counted so far (Prometheus); /healthz and /readyz answer too
  curl -s http://{admin}/metrics | grep '^flowgate_rpc_requests_total'
"#
    )
}

/// Runs the kept demo until `shutdown` resolves, then stops the gateway
/// (draining as `serve` does), the admin listener and the emulator, and
/// removes the files it wrote.
pub async fn keep(
    addrs: KeepAddrs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    // Warnings and errors on stderr; metrics for the admin page.
    let telemetry = Telemetry::builder(TelemetrySettings {
        prometheus: true,
        ..TelemetrySettings::logs_only(LogFormat::Text, "warn")
    })
    .init()
    .map_err(|err| format!("cannot start telemetry: {err}"))?;
    // A panic is one structured log event, as under `serve`.
    crate::logging::route_panics();
    let metrics = telemetry
        .prometheus()
        .ok_or("the Prometheus page was not set up")?;

    let emulator = Emulator::start(EmulatorConfig::default(), addrs.emulator)
        .await
        .map_err(|err| taken("the emulator", addrs.emulator, "--emulator-listen", err))?;
    let dir = DemoDir::create()?;
    dir.write("fetchhive.key", keys::FETCHHIVE_KEY)?;
    dir.write("aitutor.key", keys::AITUTOR_KEY)?;
    dir.write("knouds.key", keys::KNOUDS_KEY)?;
    dir.write("run-id.secret", &generate_key())?;
    let key = generate_key();
    let key_hash = KeyHash::of(key.as_bytes()).to_config();
    let config_text = config_text(&addrs, &emulator, &key_hash, &dir);
    let config_path = dir.write("flowgate.toml", &config_text)?;
    // What is served is what the file says.
    let config = Config::load(&config_path).map_err(|err| err.to_string())?;
    let app =
        server::build(&config, |var| std::env::var(var).ok()).map_err(|err| err.to_string())?;
    let listeners = server::Listeners::bind(&config)
        .await
        .map_err(|err| taken("the gateway", addrs.gateway, "--listen", err))?;
    let admin = admin::spawn(addrs.admin, metrics, app.readiness.clone())
        .await
        .map_err(|err| taken("the admin page", addrs.admin, "--admin-listen", err))?;

    say(format!(
        "flowgate demo --keep: running until Ctrl-C (or SIGTERM)\n\n\
         \x20 gateway (gRPC)  {gateway}\n\
         \x20 emulator        http://{emulator} (Fetch Hive /fetchhive/v1, AI Tutor /aitutor, Knouds /knouds)\n\
         \x20 admin           http://{admin_addr} (/metrics, /healthz, /readyz)\n\
         \x20 caller key      {key} (caller `demo`: send `authorization: Bearer <key>`; the config holds only its sha256)\n\
         \x20 config          {path}\n\n\
         --- {path}\n{config_text}---\n\n{commands}",
        gateway = addrs.gateway,
        emulator = emulator.addr(),
        admin_addr = admin.addr,
        path = config_path.display(),
        commands = commands(&addrs, &key),
    ));

    let served = server::serve(app, listeners, shutdown).await;
    admin.shutdown().await;
    emulator.shutdown().await;
    telemetry.shutdown().await;
    drop(dir);
    say("flowgate demo --keep: stopped (gateway, emulator and admin page; files removed)");
    served.map_err(|err| err.to_string())
}
