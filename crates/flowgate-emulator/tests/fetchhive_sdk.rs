//! Runs the official Fetch Hive Python SDK (`fetch-hive-sdk`) against the
//! emulator through `tests/fetchhive_sdk.py`.
//!
//! Interpreter: `$FLOWGATE_PYTHON` (default `python3`). When the SDK is not
//! importable the test is skipped loudly, unless `FLOWGATE_REQUIRE_PYTHON=1`,
//! in which case it fails.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SDK_TIMEOUT: Duration = Duration::from_secs(60);
/// The script's exit code when `fetch_hive_sdk` cannot be imported.
const EXIT_SDK_MISSING: i32 = 77;

fn python() -> String {
    std::env::var("FLOWGATE_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn python_required() -> bool {
    std::env::var("FLOWGATE_REQUIRE_PYTHON").is_ok_and(|v| v == "1")
}

fn skip_or_fail(reason: &str) {
    assert!(!python_required(), "FLOWGATE_REQUIRE_PYTHON=1 but {reason}");
    let banner = "!".repeat(76);
    let notice = format!(
        "\n{banner}\n!! SKIPPED fetchhive_sdk: {reason}\n\
         !! Install it (pip install fetch-hive-sdk) and set FLOWGATE_PYTHON, or run\n\
         !! scripts/test.sh, which does both.\n{banner}\n"
    );
    // Written to the raw stderr handle so the test harness does not capture it.
    let _ = std::io::stderr().write_all(notice.as_bytes());
}

/// Runs `command` with a deadline; returns (exit code, stdout+stderr).
#[expect(clippy::unwrap_used, reason = "test helper: failures fail the test")]
fn run_bounded(mut command: Command, deadline: Duration) -> (Option<i32>, String) {
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let log = out_dir.join(format!("fetchhive_sdk-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the python interpreter: {e}"));
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("fetchhive_sdk.py timed out after {deadline:?}; output:\n{output}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    (code, output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_works_against_the_emulator() {
    let emulator = common::start(flowgate_emulator::EmulatorConfig {
        async_completion_delay: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fetchhive_sdk.py");
    let mut command = Command::new(python());
    command
        .arg(&script)
        .arg(emulator.fetchhive_base_url())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    let result = tokio::task::spawn_blocking(move || {
        // A missing interpreter counts as a missing SDK.
        if Command::new(python())
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            return Err(format!("python interpreter `{}` not found", python()));
        }
        Ok(run_bounded(command, SDK_TIMEOUT))
    })
    .await
    .unwrap();
    let (code, output) = match result {
        Ok(done) => done,
        Err(reason) => return skip_or_fail(&reason),
    };
    if code == Some(EXIT_SDK_MISSING) {
        return skip_or_fail(&format!(
            "fetch_hive_sdk is not importable with `{}`",
            python()
        ));
    }
    assert_eq!(code, Some(0), "fetchhive_sdk.py failed:\n{output}");
    assert!(output.contains("all checks passed"), "{output}");
    let invokes = emulator
        .requests()
        .iter()
        .filter(|r| r.path == "/fetchhive/v1/workflow/invoke")
        .count();
    assert!(invokes >= 4, "the SDK's requests reached the emulator");
}
