//! The Python client (`clients/python`) against a real `flowgate serve`
//! process and the emulator on 127.0.0.1: `clients/python/tests/run.py`
//! regenerates the stubs from `proto/` with grpcio-tools and runs the
//! client's tests (per dialect a sync invoke, async runs streamed to their
//! terminal event, a typed error per class with its details decoded, a
//! deadline, and the retry helper retrying a safe error and refusing an
//! unsafe one).
//!
//! Interpreter: `$FLOWGATE_PYTHON`, else the repository's `.venv/bin/python`
//! when present (scripts/test.sh makes it), else `python3`. The test is
//! skipped, loudly, only when that interpreter cannot be started (and then
//! fails too when `FLOWGATE_REQUIRE_PYTHON=1`); a missing package (grpcio,
//! grpcio-tools, grpcio-status) is a failure.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod common;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::process::{GatewayProcess, free_addr};
use flowgate::auth::KeyHash;
use flowgate_emulator::{Emulator, EmulatorConfig};

/// The whole Python run (stub generation included) must end within this.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(180);

/// The callers the Python tests call as: (name, key, capabilities, quota).
const CALLERS: &[(&str, &str, &str, &str)] = &[
    (
        "app",
        "fgk_py_app_0123456789abcdefghijklmnopqrstuvwxyz012",
        r#"["invoke:*/*", "runs:stream", "schemas:read"]"#,
        "requests_per_window = 1000\nwindow = \"1m\"\ncredits_per_day = 1000.0",
    ),
    (
        "narrow",
        "fgk_py_narrow_0123456789abcdefghijklmnopqrstuvwxy",
        r#"["invoke:kn/no-input"]"#,
        "",
    ),
    (
        "tight",
        "fgk_py_tight_0123456789abcdefghijklmnopqrstuvwxyz",
        r#"["invoke:*/*"]"#,
        "requests_per_window = 1\nwindow = \"1h\"",
    ),
    (
        "metered",
        "fgk_py_metered_0123456789abcdefghijklmnopqrstuvwx",
        r#"["invoke:*/*"]"#,
        "requests_per_window = 1\nwindow = \"2s\"",
    ),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    if let Ok(python) = std::env::var("FLOWGATE_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = repo().join(".venv/bin/python");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

fn skip(reason: &str) {
    assert!(
        std::env::var("FLOWGATE_REQUIRE_PYTHON").as_deref() != Ok("1"),
        "FLOWGATE_REQUIRE_PYTHON=1 but {reason}"
    );
    let banner = "!".repeat(76);
    let notice = format!(
        "\n{banner}\n!! SKIPPED python_client: {reason}\n\
         !! Install Python 3 and run scripts/test.sh (it makes .venv with\n\
         !! scripts/requirements-test.txt), or set FLOWGATE_PYTHON.\n{banner}\n"
    );
    // The raw stderr handle: the test harness does not capture it.
    let _ = std::io::stderr().write_all(notice.as_bytes());
}

fn gateway_config(emulator: &Emulator, addr: std::net::SocketAddr) -> String {
    let text = common::config_text(emulator);
    assert_eq!(text.matches("listen = \"127.0.0.1:0\"").count(), 1);
    let mut text = text.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{addr}\"\nadmin_listen = \"127.0.0.1:0\""),
    );
    // A failed schema fetch is remembered 200 ms (not 10 s), so a retry of
    // GetWorkflowSchema can reach the emulator again.
    text.push_str("\n[schemas]\nfailure_ttl = \"200ms\"\n");
    for (name, key, capabilities, quota) in CALLERS {
        let hash = KeyHash::of(key.as_bytes()).to_config();
        text.push_str(&format!(
            "\n[callers.{name}]\nkey_hashes = [\"{hash}\"]\ncapabilities = {capabilities}\n"
        ));
        if !quota.is_empty() {
            text.push_str(&format!("[callers.{name}.quota]\n{quota}\n"));
        }
    }
    text
}

/// Runs `command` to its end or `deadline` (then kills it); returns its exit
/// code and output.
fn run_bounded(mut command: Command, log: &Path, deadline: Duration) -> (Option<i32>, String) {
    let file = std::fs::File::create(log).unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let output = std::fs::read_to_string(log).unwrap_or_default();
            panic!("the Python client tests timed out after {deadline:?}; output:\n{output}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(log).unwrap_or_default();
    let _ = std::fs::remove_file(log);
    (code, output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_against_a_real_gateway() {
    let python = python();
    let found = Command::new(&python)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        return skip(&format!(
            "python interpreter `{}` not found",
            python.display()
        ));
    }

    let emulator = Emulator::start(
        EmulatorConfig {
            async_completion_delay: Duration::from_millis(200),
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let addr = free_addr();
    let mut gateway = GatewayProcess::spawn("py", addr, &gateway_config(&emulator, addr));
    gateway.ready().await;

    let mut command = Command::new(&python);
    command
        .arg(repo().join("clients/python/tests/run.py"))
        .env("FLOWGATE_ADDR", addr.to_string())
        .env("FLOWGATE_EMULATOR", format!("http://{}", emulator.addr()))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    for (name, key, _, _) in CALLERS {
        command.env(format!("FLOWGATE_KEY_{}", name.to_uppercase()), key);
    }
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("python_client-{}.log", std::process::id()));
    let (code, output) =
        tokio::task::spawn_blocking(move || run_bounded(command, &log, PYTHON_TIMEOUT))
            .await
            .unwrap();
    assert_eq!(
        code,
        Some(0),
        "the Python client tests failed:\n{output}\n--- gateway ---\n{}",
        gateway.output()
    );
    assert!(output.contains("python client: all "), "{output}");
    drop(gateway);
    emulator.shutdown().await;
}
