//! The configurations in examples/ do what their comments say:
//! `examples/emulator.toml` serves against the emulator as it is (only its
//! ports rewritten to free ones), and `examples/vendors.toml` passes
//! `check-config` once the secrets it names exist.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod common;

use std::{path::PathBuf, process::Command};

use common::{process::GatewayProcess, temp_dir::TempDir};
use flowgate::pb;
use flowgate_emulator::{Emulator, EmulatorConfig};

// Multi-threaded: the emulator keeps answering while the test waits for
// the README's commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_example_serves_calls_against_the_emulator() {
    // Bound on port 0: a port picked and released first can be taken by
    // another test in between (seen once as AddrInUse in CI).
    let emulator = Emulator::start(EmulatorConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let gateway = common::process::free_addr();
    let example = std::fs::read_to_string("examples/emulator.toml").unwrap();
    // Only the ports change; the key files are read from examples/ as a
    // user started in the repository root reads them.
    let config = example
        .replace("127.0.0.1:8700", &emulator.addr().to_string())
        .replace("127.0.0.1:50051", &gateway.to_string())
        .replace("127.0.0.1:9464", &common::process::free_addr().to_string())
        .replace("127.0.0.1:8780", &common::process::free_addr().to_string());
    for port in ["8700", "50051", "9464", "8780"] {
        assert!(!config.contains(&format!("127.0.0.1:{port}\"")), "{config}");
    }
    let mut process = GatewayProcess::spawn("example", gateway, &config);
    process.ready().await;
    let mut client = process.client().await;
    for (target, inputs) in [
        (
            common::target("knouds", common::slug("summarize-text")),
            serde_json::json!({"text": "hello"}),
        ),
        (
            common::target("fetchhive", common::deployment("summarize", "")),
            serde_json::json!({"topic": "hello"}),
        ),
        (
            common::target("aitutor", common::workflow_id("wf_research")),
            serde_json::json!({"topic": "hello"}),
        ),
    ] {
        let answer = client
            .invoke(pb::InvokeRequest {
                target,
                inputs: common::inputs(inputs),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("{status:?}\n{}", process.output()))
            .into_inner();
        assert_eq!(answer.status(), pb::RunStatus::Completed, "{answer:?}");
    }

    // The commands of the README's "Call it", as written but for the ports
    // (buf where scripts/test.sh installed it, grpcurl where installed).
    let admin = config
        .lines()
        .find_map(|line| line.strip_prefix("admin_listen = \""))
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    for command in readme_call_it() {
        let tool = command.split_whitespace().next().unwrap_or_default();
        let Some(path) = tool_path(tool) else {
            continue;
        };
        let command = command
            .replace("127.0.0.1:50051", &gateway.to_string())
            .replace("127.0.0.1:9464", &admin);
        let output = Command::new("sh")
            .args(["-c", &command])
            .env("PATH", path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let expected = if tool == "curl" {
            "rpc_method=\"Invoke\""
        } else {
            "COMPLETED"
        };
        assert!(
            output.status.success() && stdout.contains(expected),
            "{command}\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    drop(process);
    emulator.shutdown().await;
}

/// The commands of the README's "Call it" block, continuation lines joined.
fn readme_call_it() -> Vec<String> {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let block = readme.split("**Call it.**").nth(1).unwrap();
    let block = block.split("```sh\n").nth(1).unwrap();
    let block = block.split("```").next().unwrap();
    let commands: Vec<String> = block
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    assert!(commands.len() >= 3, "{commands:?}");
    commands
}

/// A PATH under which `tool` is found: the repository's `.tools` (buf) and
/// the system's; `None` when it is not installed here.
fn tool_path(tool: &str) -> Option<String> {
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/node_modules/.bin");
    let path = format!(
        "{}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::env::split_paths(&path)
        .any(|dir| dir.join(tool).is_file())
        .then_some(path)
}

#[test]
fn the_vendors_example_passes_check_config_once_its_secrets_exist() {
    let dir = TempDir::new("vendors-example");
    dir.write("knouds-api-key", "knouds_live_example\n");
    dir.write("run-id", "run-id-secret-of-32-bytes-000000\n");
    dir.write("webhook-signing", &format!("{}\n", common::SIGNING_SECRET));
    let example = std::fs::read_to_string("examples/vendors.toml")
        .unwrap()
        .replace(
            "/var/run/secrets/flowgate/",
            &format!("{}/", dir.0.display()),
        );
    let config = dir.write("vendors.toml", &example);
    let output = Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .arg("check-config")
        .arg(&config)
        .env_clear()
        .envs([
            ("FETCHHIVE_API_KEY", "fhk_example"),
            ("AITUTOR_API_KEY", "sk_example"),
            ("KNOUDS_WEBHOOK_SECRET", "knouds_whsec_example"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("OK (3 providers"), "{stdout}");
}
