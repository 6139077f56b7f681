//! Every command block of README.md (```` ```sh ````, `bash`, `shell`,
//! `console`) is either run here, as written, against real processes on
//! 127.0.0.1, or listed in [`BLOCKS`] with the reason it is not run here.
//! A block that is neither fails the test, and so does an entry that no
//! longer matches a block: the README cannot drift from what works.
//!
//! The classification is a table keyed by a stable substring of each block
//! rather than markers in the README: running a block needs a setup (which
//! gateway) and an expected output, which live here anyway, and the README
//! stays free of test markup. What is rewritten before running: the
//! README's fixed loopback ports to free ones (the machine may run other
//! gateways), `./target/release/flowgate` to the binary under test, and
//! `examples/emulator.toml` to a copy with those ports. `buf` is
//! `$FLOWGATE_BUF` or `.tools/node_modules/.bin/buf` (a block needing it is
//! skipped without it, a failure under `FLOWGATE_REQUIRE_BUF=1`); `grpcurl`
//! runs where it is installed.

// `flowgate emulator` and `flowgate demo` exist with the `emulator` feature.
#![cfg(feature = "emulator")]
#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod common;

use std::{
    collections::HashMap,
    fs::File,
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{process::free_addr, temp_dir::TempDir};

/// Which gateway a block's `127.0.0.1:50051` and `127.0.0.1:9464` mean.
#[derive(Clone, Copy, PartialEq, Debug)]
enum On {
    /// `flowgate demo --keep` (a caller is configured: `$FLOWGATE_KEY` is
    /// the key it printed).
    Demo,
    /// `flowgate serve --config examples/emulator.toml` (no callers).
    Own,
}

/// How a block is run.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Each command on its own (`\` and trailing `|` continue a command);
    /// `emulator`, `serve` and `demo --keep` start in the background.
    Each,
    /// The whole block as one `sh` script.
    Whole,
}

#[derive(Clone, Copy, Debug)]
enum Plan {
    Run {
        on: On,
        mode: Mode,
        /// Whether every command exits 0 (an error example does not).
        succeeds: bool,
        /// Text the block's output (stdout and stderr) must show; see
        /// [`Session::run`] for blocks with optional tools.
        shows: &'static [&'static str],
    },
    Skip(&'static str),
}

/// Every command block of the README, keyed by a substring found in it
/// only, in README order.
const BLOCKS: &[(&str, Plan)] = &[
    (
        "cargo run --release -- demo",
        Plan::Skip(
            "a release build and the whole suite (scripts/test.sh); the demo is run below as `demo --keep`",
        ),
    ),
    (
        "./target/release/flowgate demo --keep",
        Plan::Run {
            on: On::Demo,
            mode: Mode::Each,
            succeeds: true,
            shows: &[],
        },
    ),
    (
        "./target/release/flowgate emulator ",
        Plan::Run {
            on: On::Own,
            mode: Mode::Each,
            succeeds: true,
            shows: &[],
        },
    ),
    (
        "check-config examples/emulator.toml",
        Plan::Run {
            on: On::Own,
            mode: Mode::Each,
            succeeds: true,
            shows: &["OK (3 providers"],
        },
    ),
    (
        "127.0.0.1:9464/metrics | grep",
        Plan::Run {
            on: On::Own,
            mode: Mode::Each,
            succeeds: true,
            shows: &["rpc_method=\"Invoke\""],
        },
    ),
    (
        "check-config examples/vendors.toml",
        Plan::Skip("real vendor keys; tests/examples.rs runs this check-config with stand-ins"),
    ),
    (
        "flowgate hash-key --generate",
        Plan::Skip(
            "the command reference, on your own flowgate.toml; each command is run in its own section here and in tests/cli.rs",
        ),
    ),
    (
        "export OTEL_EXPORTER_OTLP_ENDPOINT",
        Plan::Skip("needs an OpenTelemetry collector; tests/telemetry.rs exports to a real one"),
    ),
    (
        "describe google.rpc.ErrorInfo",
        Plan::Run {
            on: On::Demo,
            mode: Mode::Each,
            succeeds: true,
            shows: &[],
        },
    ),
    (
        "--protocol grpc \\\n-H \"authorization: Bearer $FLOWGATE_KEY\" --reflect-header '*' \\\n-d '{\"target\":{\"provider\":\"knouds\",\"slug\":\"no-such-flow\"",
        Plan::Run {
            on: On::Demo,
            mode: Mode::Each,
            succeeds: false,
            shows: &["google.rpc.ErrorInfo", "not_found"],
        },
    ),
    (
        "buf curl --protocol connect \\\n-H \"authorization: Bearer $FLOWGATE_KEY\"",
        Plan::Run {
            on: On::Demo,
            mode: Mode::Each,
            succeeds: false,
            // The reason in clear text (the Connect door's `debug`).
            shows: &["\"reason\": \"WORKFLOW_NOT_FOUND\""],
        },
    ),
    (
        "buf convert third_party/googleapis",
        Plan::Run {
            on: On::Own,
            mode: Mode::Whole,
            succeeds: true,
            shows: &["\"reason\":\"WORKFLOW_NOT_FOUND\""],
        },
    ),
    (
        "python -m grpc_tools.protoc",
        Plan::Skip("needs grpcio-tools (the .venv); tests/python_client.rs generates the stubs so"),
    ),
    (
        "application/connect+json",
        Plan::Run {
            on: On::Demo,
            mode: Mode::Whole,
            succeeds: true,
            // The unary answer; the stream's end-of-stream envelope (flags
            // 0x02, as `xxd` shows it) for the placeholder run id.
            shows: &["RUN_STATUS_COMPLETED", "00000000: 02"],
        },
    ),
    (
        "docker build",
        Plan::Skip("needs docker and a registry; scripts/deploy/check.sh builds the image"),
    ),
    (
        "kubectl -n flowgate create secret",
        Plan::Skip("needs a Kubernetes cluster"),
    ),
    (
        "cargo bench",
        Plan::Skip("a benchmark: minutes of measurement"),
    ),
];

/// The command blocks of `readme`: their text, each with its line number.
fn command_blocks(readme: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, bool, String)> = None;
    for (number, line) in readme.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(lang)) => {
                let command = matches!(lang.trim(), "sh" | "bash" | "shell" | "console");
                open = Some((number + 1, command, String::new()));
            }
            (Some((start, command, text)), Some(_)) => {
                if *command {
                    // The closing fence too: a key may anchor on a block's end.
                    blocks.push((*start, format!("{text}```")));
                }
                open = None;
            }
            (Some((_, _, text)), None) => {
                text.push_str(line.trim_start());
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "README.md: a code block is not closed");
    blocks
}

/// The commands of a block: comment lines dropped, continuations joined.
fn commands(block: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines().filter(|line| !line.starts_with("```")) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            continue;
        }
        current.push_str(line);
        if line.ends_with('|') {
            current.push(' ');
            continue;
        }
        commands.push(std::mem::take(&mut current));
    }
    assert!(current.is_empty(), "a command continues past its block");
    commands
}

#[test]
fn every_readme_command_block_is_run_or_listed_with_a_reason() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let blocks = command_blocks(&readme);
    let mut plans = Vec::new();
    let mut unclassified = Vec::new();
    for (line, text) in &blocks {
        let found: Vec<_> = BLOCKS
            .iter()
            .filter(|(key, _)| text.contains(key))
            .collect();
        match found.as_slice() {
            [(_, plan)] => plans.push((*line, text.as_str(), *plan)),
            [] => unclassified.push(format!("README.md:{line}\n{text}")),
            many => panic!("README.md:{line}: matched by several keys {many:?}"),
        }
    }
    assert!(
        unclassified.is_empty(),
        "command blocks neither run nor listed in tests/readme_commands.rs BLOCKS:\n{}",
        unclassified.join("\n")
    );
    for (key, _) in BLOCKS {
        let matches = blocks.iter().filter(|(_, text)| text.contains(key)).count();
        assert_eq!(matches, 1, "BLOCKS key {key:?} matches {matches} blocks");
    }

    let mut session = Session::new();
    for (line, text, plan) in plans {
        match plan {
            Plan::Skip(reason) => eprintln!("README.md:{line}: not run here: {reason}"),
            Plan::Run {
                on,
                mode,
                succeeds,
                shows,
            } => {
                let Some(output) = session.run(on, mode, succeeds, text) else {
                    continue;
                };
                for wanted in shows {
                    assert!(
                        output.contains(wanted),
                        "README.md:{line}: no {wanted:?} in the output of\n{text}\n{output}"
                    );
                }
            }
        }
    }
    session.stop();
}

/// The processes and addresses the README's commands run against.
struct Session {
    /// First, so that it is stopped before `dir` is removed.
    background: Vec<Background>,
    dir: TempDir,
    /// The README's address → the one used here, per gateway.
    ports: HashMap<&'static str, SocketAddr>,
    demo: [SocketAddr; 3],
    own_config: PathBuf,
    /// A directory holding `buf`, when there is one.
    tools: Option<PathBuf>,
    key: Option<String>,
}

impl Session {
    fn new() -> Self {
        let dir = TempDir::new("readme-commands");
        let ports: HashMap<_, _> = [
            "127.0.0.1:8700",
            "127.0.0.1:50051",
            "127.0.0.1:9464",
            "127.0.0.1:8780",
        ]
        .into_iter()
        .map(|readme| (readme, free_addr()))
        .collect();
        let mut example = std::fs::read_to_string("examples/emulator.toml").unwrap();
        for (readme, used) in &ports {
            example = example.replace(readme, &used.to_string());
        }
        let own_config = dir.write("emulator.toml", &example);
        let tools = buf().map(|buf| {
            let bin = dir.0.join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::os::unix::fs::symlink(&buf, bin.join("buf")).unwrap();
            bin
        });
        Self {
            dir,
            ports,
            demo: [free_addr(), free_addr(), free_addr()],
            own_config,
            tools,
            key: None,
            background: Vec::new(),
        }
    }

    /// `text` as it runs here against gateway `on`.
    fn rewrite(&self, on: On, text: &str) -> String {
        let mut text = text
            .replace("./target/release/flowgate", env!("CARGO_BIN_EXE_flowgate"))
            .replace(
                "examples/emulator.toml",
                &self.own_config.display().to_string(),
            );
        if on == On::Demo {
            text = text
                .replace("127.0.0.1:50051", &self.demo[0].to_string())
                .replace("127.0.0.1:9464", &self.demo[2].to_string());
        }
        for (readme, used) in &self.ports {
            text = text.replace(readme, &used.to_string());
        }
        text
    }

    fn path(&self) -> String {
        let system = std::env::var("PATH").unwrap_or_default();
        match &self.tools {
            Some(bin) => format!("{}:{system}", bin.display()),
            None => system,
        }
    }

    /// Whether the tools `script` starts are here (`buf` required under
    /// `FLOWGATE_REQUIRE_BUF=1`).
    fn has_tools(&self, script: &str) -> bool {
        for tool in ["buf", "grpcurl"] {
            let used = script
                .split(['\n', '|', ';'])
                .any(|command| command.split_whitespace().next() == Some(tool));
            let here = std::env::split_paths(&self.path()).any(|dir| dir.join(tool).is_file());
            if used && !here {
                let required = tool == "buf"
                    && std::env::var("FLOWGATE_REQUIRE_BUF").is_ok_and(|value| value == "1");
                assert!(!required, "{tool} is required (FLOWGATE_REQUIRE_BUF=1)");
                eprintln!("not run ({tool} is not installed here): {script}");
                return false;
            }
        }
        true
    }

    /// Runs a block; returns its output (stdout and stderr), or `None` when
    /// nothing ran. A command whose tool is not here ends the block (what
    /// follows may depend on it), so a block checks what its first commands
    /// show and puts commands of optional tools (grpcurl) last.
    fn run(&mut self, on: On, mode: Mode, succeeds: bool, block: &str) -> Option<String> {
        let scripts = match mode {
            Mode::Each => commands(block),
            Mode::Whole => vec![block.replace("```", "")],
        };
        let mut output = String::new();
        for script in scripts {
            // A background command's trailing comment would swallow the
            // flags added to it.
            let server = script.split(" #").next().unwrap_or_default().trim_end();
            if server.ends_with(" emulator") {
                let addr = self.ports["127.0.0.1:8700"];
                let command = format!("{} --listen {addr}", self.rewrite(on, server));
                self.start(&command, addr);
            } else if server.contains(" serve ") {
                let command = self.rewrite(on, server);
                self.start(&command, self.ports["127.0.0.1:50051"]);
            } else if server.ends_with(" demo --keep") {
                self.start_demo(&self.rewrite(on, server));
            } else if !self.has_tools(&script) {
                return (!output.is_empty()).then_some(output);
            } else {
                assert!(
                    on == On::Own || self.key.is_some(),
                    "run `demo --keep` first"
                );
                let ran = Command::new("sh")
                    .args(["-c", &self.rewrite(on, &script)])
                    .env("PATH", self.path())
                    .env("FLOWGATE_KEY", self.key.as_deref().unwrap_or_default())
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                let shown = format!(
                    "{}{}",
                    String::from_utf8_lossy(&ran.stdout),
                    String::from_utf8_lossy(&ran.stderr)
                );
                assert_eq!(ran.status.success(), succeeds, "{script}\n{shown}");
                output.push_str(&shown);
            }
        }
        Some(output)
    }

    /// Starts a server command in the background; waits (bounded) until it
    /// accepts connections on `addr`.
    fn start(&mut self, command: &str, addr: SocketAddr) {
        let log = self.dir.0.join(format!("{}.log", self.background.len()));
        let file = File::create(&log).unwrap();
        let child = Command::new("sh")
            .args(["-c", &format!("exec {command}")])
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        self.background.push(Background(Some(child)));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "{command}: not listening on {addr} in 30 s:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `demo --keep` on the demo's ports; keeps the key it prints.
    fn start_demo(&mut self, command: &str) {
        let [gateway, emulator, admin] = self.demo;
        let command = format!(
            "exec {command} --listen {gateway} --emulator-listen {emulator} --admin-listen {admin}"
        );
        let mut child = Command::new("sh")
            .args(["-c", &command])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        self.background.push(Background(Some(child)));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line.unwrap_or_default()).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut printed = String::new();
        while !printed.contains("curl -s http://") {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{command}: no commands printed in 30 s:\n{printed}"));
            printed.push_str(&line);
            printed.push('\n');
        }
        let key = printed
            .split("-H 'authorization: Bearer ")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .unwrap_or_else(|| panic!("no key printed:\n{printed}"));
        assert!(key.starts_with("fgk_"), "{printed}");
        self.key = Some(key.to_owned());
    }

    /// Stops every background process (SIGTERM: the demo removes its files).
    fn stop(&mut self) {
        for mut process in self.background.drain(..).rev() {
            process.stop();
        }
    }
}

/// A background process, stopped when dropped (also when a test fails).
struct Background(Option<Child>);

impl Background {
    fn stop(&mut self) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The buf binary: `$FLOWGATE_BUF`, else the test command's `.tools`.
fn buf() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FLOWGATE_BUF") {
        return Some(path.into());
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/node_modules/.bin/buf");
    local.is_file().then_some(local)
}
