//! What the Redis store adds to an Invoke, against the memory store, in one
//! run: CPU per call (the gateway process, and the redis-server process for
//! sizing) and latency, for
//!
//! - a sync Invoke (no shared limit, no key: the Redis store makes no round
//!   trip, so the difference should be noise);
//! - a sync Invoke with an `idempotency_key` (two round trips: the record
//!   before the upstream call, the answer after);
//! - an async Invoke (AI Tutor, gateway-run: the check and the insert
//!   before answering, then the background run's updates and event),
//!   counted until the gateway is idle again, so its background run is in
//!   the CPU figure while the latency is the Invoke answer's.
//!
//! Starts `flowgate emulator --no-rate-limits`, one `redis-server`
//! (flowgate_redis::testing, 127.0.0.1) and two `flowgate serve` processes
//! on loopback (`[state] store = "memory"` and `"redis"`), and alternates
//! them per round so background load hits both alike; reports the median
//! round. CPU is user + system time from /proc/<pid>/stat (Linux).
//!
//! `cargo bench --bench state_store`. Knobs: `FLOWGATE_BENCH_CALLS`
//! (default 5000 per case and round), `FLOWGATE_BENCH_CONCURRENCY` (16),
//! `FLOWGATE_BENCH_ROUNDS` (3). A smoke run in the dev profile:
//! `FLOWGATE_BENCH_CALLS=50 FLOWGATE_BENCH_ROUNDS=1 cargo test --bench state_store`.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a bench binary"
)]

mod harness;

use std::{
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use flowgate::pb::{self, workflow_gateway_client::WorkflowGatewayClient};
use flowgate_redis::testing::RedisServer;
use harness::{Reaper, cpu_ticks, env_number, free_port, ticks_per_second, wait_for_port};
use tonic::transport::Channel;

/// Waits until `pid` used no CPU for 300 ms (its background work is done),
/// at most 30 s.
async fn wait_until_idle(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = cpu_ticks(pid);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = cpu_ticks(pid);
        if now == last {
            return;
        }
        last = now;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Sync,
    SyncKeyed,
    Async,
}

impl Case {
    const ALL: [Self; 3] = [Self::Sync, Self::SyncKeyed, Self::Async];

    fn name(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::SyncKeyed => "sync + idempotency_key",
            Self::Async => "async (gateway-run)",
        }
    }
}

/// Unique idempotency keys across the whole run.
static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

fn request(case: Case) -> pb::InvokeRequest {
    let inputs =
        match flowgate::convert::json_to_value(serde_json::json!({"story": "a dragon"})).kind {
            Some(prost_types::value::Kind::StructValue(object)) => Some(object),
            _ => None,
        };
    pb::InvokeRequest {
        target: Some(pb::WorkflowTarget {
            provider: "tutor".into(),
            workflow: Some(pb::workflow_target::Workflow::WorkflowId("wf_story".into())),
        }),
        inputs,
        async_options: (case == Case::Async).then(|| pb::AsyncOptions {
            enabled: true,
            callback_url: String::new(),
        }),
        idempotency_key: if case == Case::SyncKeyed {
            format!("bench-{}", NEXT_KEY.fetch_add(1, Ordering::Relaxed))
        } else {
            String::new()
        },
        ..Default::default()
    }
}

async fn drive(
    client: &WorkflowGatewayClient<Channel>,
    case: Case,
    calls: usize,
    concurrency: usize,
) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let mut client = client.clone();
        let share = calls / concurrency + usize::from(worker < calls % concurrency);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            for _ in 0..share {
                let started = Instant::now();
                let response = client.invoke(request(case)).await.expect("invoke");
                let expected = if case == Case::Async {
                    pb::RunStatus::Running
                } else {
                    pb::RunStatus::Completed
                };
                assert_eq!(response.into_inner().status(), expected);
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(calls);
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

struct Measured {
    gateway_cpu: Duration,
    redis_cpu: Duration,
    p50: Duration,
    p99: Duration,
}

/// One measured batch of `case` on the gateway `pid`.
async fn measure(
    client: &WorkflowGatewayClient<Channel>,
    pid: u32,
    redis_pid: u32,
    case: Case,
    calls: usize,
    concurrency: usize,
) -> Measured {
    wait_until_idle(pid).await;
    let (gateway_before, redis_before) = (cpu_ticks(pid), cpu_ticks(redis_pid));
    let mut latencies = drive(client, case, calls, concurrency).await;
    if case == Case::Async {
        wait_until_idle(pid).await;
    }
    let per_call = |ticks: u64| {
        Duration::from_secs_f64(ticks as f64 / ticks_per_second() as f64 / calls as f64)
    };
    let gateway_cpu = per_call(cpu_ticks(pid) - gateway_before);
    let redis_cpu = per_call(cpu_ticks(redis_pid) - redis_before);
    latencies.sort();
    let percentile =
        |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    Measured {
        gateway_cpu,
        redis_cpu,
        p50: percentile(0.5),
        p99: percentile(0.99),
    }
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// Starts `flowgate serve` with the AI Tutor provider and `state`.
fn gateway(binary: &str, emulator_port: u16, port: u16, name: &str, state: &str) -> Child {
    let config = std::env::temp_dir().join(format!(
        "flowgate-bench-state-{name}-{}.toml",
        std::process::id()
    ));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             [runs]\nmax_background_runs = 100000\n\
             [providers.tutor]\nkind = \"aitutor\"\nbase_url = \"http://127.0.0.1:{emulator_port}/aitutor\"\napi_key_env = \"BENCH_KEY\"\n\
             [state]\n{state}\n",
            admin = free_port(),
        ),
    )
    .unwrap();
    Command::new(binary)
        .args(["serve", "--config"])
        .arg(&config)
        .env("BENCH_KEY", flowgate_emulator::keys::AITUTOR_KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::main]
async fn main() {
    let calls = env_number("FLOWGATE_BENCH_CALLS", 5_000);
    let concurrency = env_number("FLOWGATE_BENCH_CONCURRENCY", 16).max(1);
    let rounds = env_number("FLOWGATE_BENCH_ROUNDS", 3).max(1);
    let binary = env!("CARGO_BIN_EXE_flowgate");
    let emulator_port = free_port();
    let mut children = Reaper(Vec::new());
    children.0.push(
        Command::new(binary)
            .args(["emulator", "--no-rate-limits", "--listen"])
            .arg(format!("127.0.0.1:{emulator_port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let redis = RedisServer::start().expect("redis-server starts");
    let redis_pid = redis.pid().expect("redis-server runs");
    wait_for_port(emulator_port).await;

    let stores = [
        ("memory", "store = \"memory\"".to_owned()),
        (
            "redis",
            format!("store = \"redis\"\nurl = \"{}\"", redis.url()),
        ),
    ];
    let mut gateways = Vec::new();
    for (name, state) in &stores {
        let port = free_port();
        let child = gateway(binary, emulator_port, port, name, state);
        let pid = child.id();
        children.0.push(child);
        wait_for_port(port).await;
        let client = WorkflowGatewayClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();
        // Warm up: connections, caches, the Redis scripts.
        for case in Case::ALL {
            drive(&client, case, 500.min(calls), concurrency).await;
        }
        gateways.push((*name, pid, client));
    }

    println!(
        "Invoke, AI Tutor via the emulator on loopback, {calls} calls per case x {rounds} rounds (median), concurrency {concurrency}; CPU per call of the gateway (and of redis-server):"
    );
    for case in Case::ALL {
        let mut results: Vec<Vec<Measured>> = gateways.iter().map(|_| Vec::new()).collect();
        for _ in 0..rounds {
            for ((_, pid, client), rounds) in gateways.iter().zip(&mut results) {
                rounds.push(measure(client, *pid, redis_pid, case, calls, concurrency).await);
            }
        }
        let medians: Vec<Measured> = results
            .into_iter()
            .map(|mut rounds| {
                rounds.sort_by_key(|m| m.gateway_cpu);
                rounds.swap_remove(rounds.len() / 2)
            })
            .collect();
        println!("  {}:", case.name());
        for ((name, ..), m) in gateways.iter().zip(&medians) {
            println!(
                "    {name:<7} gateway CPU/call {:>7.1} µs   redis CPU/call {:>6.1} µs   p50 {:>9.3?}   p99 {:>9.3?}",
                micros(m.gateway_cpu),
                micros(m.redis_cpu),
                m.p50,
                m.p99
            );
        }
        let (memory, redis) = (&medians[0], &medians[1]);
        println!(
            "    added by Redis: gateway CPU {:+.1} µs/call, p50 {:+.3} ms, p99 {:+.3} ms",
            micros(redis.gateway_cpu) - micros(memory.gateway_cpu),
            (redis.p50.as_secs_f64() - memory.p50.as_secs_f64()) * 1e3,
            (redis.p99.as_secs_f64() - memory.p99.as_secs_f64()) * 1e3,
        );
    }
    for (name, ..) in &stores {
        let _ = std::fs::remove_file(std::env::temp_dir().join(format!(
            "flowgate-bench-state-{name}-{}.toml",
            std::process::id()
        )));
    }
}
