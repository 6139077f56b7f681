//! What the process benches share: child processes reaped on exit, free
//! loopback ports, a process's CPU time from /proc, the emulator and a
//! gateway started as real processes, and the `FLOWGATE_BENCH_*` knobs.

#![allow(dead_code, reason = "each bench uses its own subset")]

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// Children killed and waited for when dropped.
pub struct Reaper(pub Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

pub fn ticks_per_second() -> u64 {
    let output = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(100)
}

pub async fn wait_for_port(port: u16) {
    // Under callgrind a server takes many times longer to start.
    let tries = if callgrind_dir().is_some() {
        2_400
    } else {
        200
    };
    for _ in 0..tries {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("port {port} never opened");
}

pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The `flowgate` binary under bench.
pub const BINARY: &str = env!("CARGO_BIN_EXE_flowgate");

/// Starts `flowgate emulator --no-rate-limits` on a free port.
pub async fn emulator(children: &mut Reaper) -> u16 {
    let port = free_port();
    children.0.push(
        Command::new(BINARY)
            .args(["emulator", "--no-rate-limits", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port).await;
    port
}

/// A gateway config file listening on `port` with `providers` (TOML
/// `[providers.…]` sections); the signing secret comes from `BENCH_SIGNING`.
pub fn config_file(port: u16, providers: &str) -> PathBuf {
    let config =
        std::env::temp_dir().join(format!("flowgate-bench-{}-{port}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [webhooks]\nsigning_secret_env = \"BENCH_SIGNING\"\n{providers}"
        ),
    )
    .unwrap();
    config
}

/// `FLOWGATE_BENCH_CALLGRIND=<dir>`: server processes run under
/// `valgrind --tool=callgrind`, their profiles written to `<dir>`.
pub fn callgrind_dir() -> Option<PathBuf> {
    std::env::var_os("FLOWGATE_BENCH_CALLGRIND").map(PathBuf::from)
}

/// `program` as a command, under callgrind when `FLOWGATE_BENCH_CALLGRIND`
/// is set (profile `<dir>/callgrind.<name>.<pid>`).
pub fn server_command(program: &std::path::Path, name: &str) -> Command {
    match callgrind_dir() {
        Some(dir) => {
            let mut command = Command::new("valgrind");
            command
                .arg("--tool=callgrind")
                .arg(format!(
                    "--callgrind-out-file={}/callgrind.{name}.%p",
                    dir.display()
                ))
                .arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// The instructions (`Ir`) `pid` executed while `work` ran, when it runs
/// under callgrind: counters zeroed before, dumped after, the dump's total
/// read back.
pub async fn instructions<F: std::future::Future>(pid: u32, work: F) -> (F::Output, Option<u64>) {
    let Some(dir) = callgrind_dir() else {
        return (work.await, None);
    };
    let control = |flag: &str| {
        Command::new("callgrind_control")
            .args([flag, &pid.to_string()])
            .stdout(Stdio::null())
            .status()
            .unwrap();
    };
    control("-z");
    let output = work.await;
    control("-d");
    // The newest dump of this pid: `callgrind.<name>.<pid>.<n>`.
    let newest = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.contains(&format!(".{pid}.")) && !name.ends_with(".0")
        })
        .max_by_key(|entry| entry.metadata().and_then(|m| m.modified()).ok())
        .unwrap();
    let dump = std::fs::read_to_string(newest.path()).unwrap();
    let total = dump
        .lines()
        .find_map(|line| {
            line.strip_prefix("summary: ")
                .or(line.strip_prefix("totals: "))
        })
        .and_then(|value| value.split_whitespace().next()?.parse().ok());
    (output, total)
}

/// Starts `flowgate serve` on `port` with `providers` whose key variables
/// are `keys`; answers its pid once it listens.
pub async fn gateway(
    children: &mut Reaper,
    port: u16,
    providers: &str,
    keys: &[(&str, &str)],
) -> u32 {
    let config = config_file(port, providers);
    let gateway = server_command(std::path::Path::new(BINARY), "flowgate")
        .args(["serve", "--config"])
        .arg(&config)
        .envs(keys.iter().copied())
        .env("BENCH_SIGNING", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = gateway.id();
    children.0.push(gateway);
    wait_for_port(port).await;
    // Read at start-up; not needed once it listens.
    let _ = std::fs::remove_file(config);
    pid
}

/// The value at `p` (0..=1) of sorted `values`.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    values[((values.len() as f64 * p) as usize).min(values.len() - 1)]
}

/// A JSON object as the `inputs` of an InvokeRequest.
pub fn inputs(value: serde_json::Value) -> Option<prost_types::Struct> {
    match flowgate::convert::json_to_value(value).kind {
        Some(prost_types::value::Kind::StructValue(object)) => Some(object),
        _ => None,
    }
}
