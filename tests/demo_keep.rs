//! `flowgate demo --keep` as a user runs it: a real process, the commands
//! it prints, a real gRPC call to the port it names with the key it prints,
//! and a clean stop on SIGTERM that frees every port.

// `flowgate demo` exists with the default `emulator` feature only.
#![cfg(feature = "emulator")]
#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod common;

use std::{
    io::{BufRead, BufReader, Read},
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::process::free_addr;
use flowgate::pb::{self, workflow_gateway_client::WorkflowGatewayClient};
use tonic::{Code, Request};

/// Kills the process if a test fails before stopping it.
struct Demo(Option<Child>);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(gateway: SocketAddr, emulator: SocketAddr, admin: SocketAddr) -> Demo {
    let child = Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .args(["demo", "--keep", "--listen", &gateway.to_string()])
        .args(["--emulator-listen", &emulator.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Demo(Some(child))
}

/// The text after `label` on the line holding it, up to `end`.
fn after<'a>(text: &'a str, label: &str, end: char) -> &'a str {
    let start = text
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"))
        + label.len();
    let rest = &text[start..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

/// Waits (bounded) for the process to exit.
fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs one printed command line in `sh`, with the repository's buf (the
/// test command installs it in `.tools`) on the PATH.
fn run_printed(line: &str) -> std::process::Output {
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/node_modules/.bin");
    let path = format!(
        "{}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("sh")
        .args(["-c", line])
        .env("PATH", path)
        .output()
        .unwrap()
}

#[tokio::test]
async fn demo_keep_serves_the_printed_commands_until_sigterm_then_frees_its_ports() {
    let (gateway, emulator, admin) = (free_addr(), free_addr(), free_addr());
    let mut demo = spawn(gateway, emulator, admin);
    let child = demo.0.as_mut().unwrap();

    // Everything it prints up to the last command to try (bounded).
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    let mut printed = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !printed.contains("curl -s http://") {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the commands were not printed in 30 s:\n{printed}"));
        printed.push_str(&line);
        printed.push('\n');
    }
    assert_eq!(
        after(&printed, "gateway (gRPC)  ", '\n'),
        gateway.to_string(),
        "{printed}"
    );
    let key = after(&printed, "-H 'authorization: Bearer ", '\'').to_owned();
    assert!(key.starts_with("fgk_"), "{printed}");
    let config_path = PathBuf::from(after(&printed, "config          ", '\n'));
    let config = std::fs::read_to_string(&config_path).unwrap();
    assert!(
        config.contains(&format!("listen = \"{gateway}\"")),
        "{config}"
    );

    // A real gRPC call to the printed port with the printed key.
    let mut client = WorkflowGatewayClient::connect(format!("http://{gateway}"))
        .await
        .unwrap();
    let invoke = || {
        Request::new(pb::InvokeRequest {
            target: common::target("knouds", common::slug("summarize-text")),
            inputs: common::inputs(serde_json::json!({"text": "hello"})),
            ..Default::default()
        })
    };
    let mut request = invoke();
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let answer = client.invoke(request).await.unwrap().into_inner();
    assert_eq!(answer.status(), pb::RunStatus::Completed);
    // Callers are configured: without the key the call is refused.
    let refused = client.invoke(invoke()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // The printed curl command shows the call just made.
    let curl = printed
        .lines()
        .find(|line| line.trim_start().starts_with("curl -s"))
        .unwrap();
    let metrics = run_printed(curl);
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains("rpc_method=\"Invoke\""),
        "{curl}\n{metrics}"
    );
    // The printed buf curl command, where the test command installed buf.
    if PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".tools/node_modules/.bin/buf")
        .exists()
    {
        let buf = printed
            .lines()
            .find(|line| line.trim_start().starts_with("buf curl"))
            .unwrap();
        let output = run_printed(buf);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("RUN_STATUS_COMPLETED"),
            "{buf}\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // A user's client disconnects when the server says GOAWAY; this one
    // could not while the test waits below.
    drop(client);
    // SIGTERM: a clean stop, every port free, the files removed.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_exit(child, Duration::from_secs(15));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status}: {stderr}");
    let rest: String = rx.try_iter().collect::<Vec<_>>().join("\n");
    assert!(rest.contains("stopped"), "{rest}");
    for addr in [gateway, emulator, admin] {
        TcpListener::bind(addr).unwrap_or_else(|err| panic!("{addr} still taken: {err}"));
    }
    assert!(!config_path.exists(), "{} was left", config_path.display());
    demo.0 = None;
}

#[test]
fn demo_keep_names_a_taken_port_and_fails() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let gateway = taken.local_addr().unwrap();
    let mut demo = spawn(gateway, free_addr(), free_addr());
    let child = demo.0.as_mut().unwrap();
    let status = wait_exit(child, Duration::from_secs(30));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("cannot listen on {gateway} for the gateway"))
            && stderr.contains("--listen"),
        "{stderr}"
    );
}
