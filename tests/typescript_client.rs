//! The TypeScript client (clients/typescript) against a real gateway and
//! the emulator on 127.0.0.1: its code is generated from proto/ with buf
//! and protoc-gen-es, type-checked, and its node test suite
//! (clients/typescript/test) runs over gRPC and the Connect protocol (JSON
//! and binary).
//!
//! Needs node and npm. Without node the test is skipped loudly, unless
//! `FLOWGATE_REQUIRE_NODE=1` (scripts/test.sh sets it and installs the
//! package's dependencies first); without `node_modules` it runs `npm ci`.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::temp_dir::TempDir;

/// Two more providers: one whose local rate window holds one call a
/// second (errors with RetryInfo that the gateway answers before any
/// upstream call), and one for the emulator's outage deployment without
/// circuit breaking or gateway retries (every call reaches the upstream,
/// so the client's own retries can be counted).
const EXTRA_PROVIDERS: &str = r#"
[providers.kn-limited]
kind = "knouds"
base_url = "KN_BASE"
api_key_env = "KN_KEY"

[providers.kn-limited.limits]
requests_per_window = 1
window = "1s"

[providers.fh-outage]
kind = "fetchhive"
base_url = "FH_BASE"
api_key_env = "FH_KEY"

[providers.fh-outage.retry]
max_attempts = 1

[providers.fh-outage.circuit_breaker]
failure_threshold = 0
"#;

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/typescript")
}

fn node_required() -> bool {
    std::env::var("FLOWGATE_REQUIRE_NODE").is_ok_and(|v| v == "1")
}

/// Runs `program args` in the client's directory within `limit`, its
/// output kept in `logs`; panics with the output when it fails.
fn run(logs: &Path, program: &str, args: &[&str], env: &[(&str, &str)], limit: Duration) {
    let name = format!("{program}-{}.log", args.join("-").replace('/', "_"));
    let log_path = logs.join(&name);
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(program)
        .args(args)
        .current_dir(client_dir())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|err| panic!("{program} {args:?} did not start: {err}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    match status {
        Some(status) if status.success() => eprintln!("{program} {args:?}:\n{output}"),
        Some(status) => panic!("{program} {args:?} failed ({status}):\n{output}"),
        None => panic!("{program} {args:?} took longer than {limit:?}:\n{output}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_client_over_grpc_and_connect() {
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|out| out.status.success()) {
        assert!(
            !node_required(),
            "FLOWGATE_REQUIRE_NODE=1 but node is not installed"
        );
        eprintln!("SKIPPED: node is not installed; the TypeScript client was not tested");
        return;
    }
    let logs = TempDir::new("typescript-client");
    let logs_dir = logs.0.clone();
    tokio::task::spawn_blocking(move || {
        if !client_dir().join("node_modules").is_dir() {
            let args = ["ci", "--no-audit", "--no-fund"];
            run(&logs_dir, "npm", &args, &[], Duration::from_secs(300));
        }
        run(
            &logs_dir,
            "npm",
            &["run", "generate"],
            &[],
            Duration::from_secs(120),
        );
        run(
            &logs_dir,
            "npm",
            &["run", "typecheck"],
            &[],
            Duration::from_secs(120),
        );
    })
    .await
    .unwrap();

    let h = common::start_with_config(Default::default(), |emulator| {
        common::config_text(emulator)
            + &EXTRA_PROVIDERS
                .replace("KN_BASE", &emulator.knouds_base_url())
                .replace("FH_BASE", &emulator.fetchhive_base_url())
    })
    .await;
    let url = format!("http://{}", h.server.addr);
    let logs_dir = logs.0.clone();
    tokio::task::spawn_blocking(move || {
        let env = [("FLOWGATE_URL", url.as_str())];
        run(&logs_dir, "npm", &["test"], &env, Duration::from_secs(240));
    })
    .await
    .unwrap();
}
