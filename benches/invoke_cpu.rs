//! CPU cost of one Invoke in the gateway process, with every feature on.
//!
//! Starts `flowgate emulator --no-rate-limits` and `flowgate serve` as
//! separate processes on loopback, drives synchronous Knouds Invokes through
//! a tonic client from this process, and reads the gateway's CPU time
//! (user + system, from /proc/<pid>/stat) before and after: the number is
//! the gateway's own CPU per call, client and emulator excluded.
//!
//! For a fair yardstick the same harness then measures a *minimal
//! forwarder* (this binary re-executed as a bare tonic server that turns the
//! Invoke into one reqwest POST and decodes the JSON answer: no validation,
//! no schema, no resilience, no run records, no rich errors).
//!
//! `cargo bench --bench invoke_cpu` (Linux). Knobs: `FLOWGATE_BENCH_CALLS`
//! (default 20000), `FLOWGATE_BENCH_CONCURRENCY` (default 16),
//! `FLOWGATE_BENCH_PERF=<file>` to also `perf record` the gateway,
//! `FLOWGATE_BENCH_ROUNDS` (default 3), `FLOWGATE_BENCH_CALLGRIND=<dir>` to
//! run both servers under callgrind and also report instructions per call
//! (load-insensitive, unlike CPU time; use a few thousand calls and one
//! round: callgrind is ~50x slower).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a bench binary"
)]

mod harness;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use flowgate::pb::{self, workflow_gateway_client::WorkflowGatewayClient};
use harness::{Reaper, cpu_ticks, env_number, free_port, percentile, ticks_per_second};

fn request() -> pb::InvokeRequest {
    let inputs =
        harness::inputs(serde_json::json!({"text": "benchmark input text", "max_words": 20}));
    pb::InvokeRequest {
        target: Some(pb::WorkflowTarget {
            provider: "knouds".into(),
            workflow: Some(pb::workflow_target::Workflow::Slug("summarize-text".into())),
        }),
        inputs,
        ..Default::default()
    }
}

async fn drive(
    client: &WorkflowGatewayClient<tonic::transport::Channel>,
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
                let response = client.invoke(request()).await.expect("invoke");
                assert_eq!(response.into_inner().status(), pb::RunStatus::Completed);
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

/// The minimal forwarder: Invoke → one POST → JSON → InvokeResponse.
mod minimal {
    use flowgate::pb::{self, workflow_gateway_server::WorkflowGateway};
    use tonic::{Request, Response, Status};

    pub struct Forwarder {
        pub client: reqwest::Client,
        pub base: String,
        pub key: String,
    }

    type Events =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::RunStatusEvent, Status>> + Send>>;

    #[tonic::async_trait]
    impl WorkflowGateway for Forwarder {
        async fn invoke(
            &self,
            request: Request<pb::InvokeRequest>,
        ) -> Result<Response<pb::InvokeResponse>, Status> {
            let request = request.into_inner();
            let Some(pb::workflow_target::Workflow::Slug(slug)) =
                request.target.and_then(|t| t.workflow)
            else {
                return Err(Status::invalid_argument("slug"));
            };
            let mut ignored = flowgate_core::Violations::new();
            let inputs = request
                .inputs
                .map(|inputs| flowgate::convert::struct_to_json(inputs, "inputs", &mut ignored))
                .unwrap_or_default();
            let body = serde_json::to_vec(&serde_json::json!({ "inputs": inputs }))
                .map_err(|e| Status::internal(e.to_string()))?;
            let response = self
                .client
                .post(format!("{}/api/workflows/{slug}/run", self.base))
                .header("x-api-key", &self.key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let bytes = response
                .bytes()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let value: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| Status::internal(e.to_string()))?;
            Ok(Response::new(pb::InvokeResponse {
                status: pb::RunStatus::Completed.into(),
                output: value
                    .get("result")
                    .cloned()
                    .map(flowgate::convert::json_to_value),
                ..Default::default()
            }))
        }

        type InvokeStreamStream = std::pin::Pin<
            Box<dyn futures::Stream<Item = Result<pb::InvokeStreamEvent, Status>> + Send>,
        >;

        async fn invoke_stream(
            &self,
            _: Request<pb::InvokeRequest>,
        ) -> Result<Response<Self::InvokeStreamStream>, Status> {
            Err(Status::unimplemented(""))
        }

        type StreamStatusStream = Events;

        async fn stream_status(
            &self,
            _: Request<pb::StreamStatusRequest>,
        ) -> Result<Response<Events>, Status> {
            Err(Status::unimplemented(""))
        }

        async fn verify_webhook(
            &self,
            _: Request<pb::VerifyWebhookRequest>,
        ) -> Result<Response<pb::VerifyWebhookResponse>, Status> {
            Err(Status::unimplemented(""))
        }

        async fn get_workflow_schema(
            &self,
            _: Request<pb::GetWorkflowSchemaRequest>,
        ) -> Result<Response<pb::GetWorkflowSchemaResponse>, Status> {
            Err(Status::unimplemented(""))
        }
    }

    pub async fn serve(port: u16, base: String) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let forwarder = Forwarder {
            client: reqwest::Client::new(),
            base,
            key: flowgate_emulator::keys::KNOUDS_KEY.to_owned(),
        };
        tonic::transport::Server::builder()
            .add_service(pb::workflow_gateway_server::WorkflowGatewayServer::new(
                forwarder,
            ))
            .serve(([127, 0, 0, 1], port).into())
            .await
            .unwrap();
    }
}

struct Measured {
    cpu_per_call: Duration,
    instructions_per_call: Option<u64>,
    throughput: f64,
    p50: Duration,
    p99: Duration,
}

fn report(name: &str, measured: &Measured) {
    println!(
        "  {name:<18} CPU/call {:>6.1} µs   {:>6.0} calls/s   p50 {:>8.3?}   p99 {:>8.3?}",
        measured.cpu_per_call.as_secs_f64() * 1e6,
        measured.throughput,
        measured.p50,
        measured.p99
    );
    if let Some(instructions) = measured.instructions_per_call {
        println!("  {name:<18} instructions/call {instructions}");
    }
}

/// Warms the server on `port` up, then measures its process `pid`.
async fn measure(
    pid: u32,
    port: u16,
    calls: usize,
    concurrency: usize,
    perf_output: Option<String>,
) -> Measured {
    let client = WorkflowGatewayClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    drive(&client, 2_000.min(calls), concurrency).await;
    let perf = perf_output.map(|output| {
        let child = Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "4000", "-g", "-p"])
            .arg(pid.to_string())
            .args(["-o", &output])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        child
    });
    let before = cpu_ticks(pid);
    let started = Instant::now();
    let (mut latencies, instructions) =
        harness::instructions(pid, drive(&client, calls, concurrency)).await;
    let wall = started.elapsed();
    let ticks = cpu_ticks(pid) - before;
    if let Some(mut perf) = perf {
        let _ = Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let _ = perf.wait();
    }
    latencies.sort();
    Measured {
        cpu_per_call: Duration::from_secs_f64(
            ticks as f64 / ticks_per_second() as f64 / calls as f64,
        ),
        instructions_per_call: instructions.map(|total| total / calls as u64),
        throughput: calls as f64 / wall.as_secs_f64(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--minimal-forwarder") {
        minimal::serve(args[2].parse().unwrap(), args[3].clone()).await;
        return;
    }
    let calls = env_number("FLOWGATE_BENCH_CALLS", 20_000);
    let concurrency = env_number("FLOWGATE_BENCH_CONCURRENCY", 16);
    let mut children = Reaper(Vec::new());
    let emulator_port = harness::emulator(&mut children).await;
    let gateway_port = free_port();
    let pid = harness::gateway(
        &mut children,
        gateway_port,
        &format!(
            "[providers.knouds]\nkind = \"knouds\"\nbase_url = \"http://127.0.0.1:{emulator_port}/knouds\"\napi_key_env = \"BENCH_KEY\"\n"
        ),
        &[("BENCH_KEY", flowgate_emulator::keys::KNOUDS_KEY)],
    )
    .await;
    let forwarder_port = free_port();
    let forwarder = harness::server_command(&std::env::current_exe().unwrap(), "forwarder")
        .arg("--minimal-forwarder")
        .arg(forwarder_port.to_string())
        .arg(format!("http://127.0.0.1:{emulator_port}/knouds"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let forwarder_pid = forwarder.id();
    children.0.push(forwarder);
    harness::wait_for_port(forwarder_port).await;

    // Alternate the two servers over several rounds so background load on
    // the machine hits both alike; report the median round of each.
    let rounds = env_number("FLOWGATE_BENCH_ROUNDS", 3);
    let mut flowgate_rounds = Vec::new();
    let mut baseline_rounds = Vec::new();
    for round in 0..rounds {
        let perf = (round == 0)
            .then(|| std::env::var("FLOWGATE_BENCH_PERF").ok())
            .flatten();
        baseline_rounds
            .push(measure(forwarder_pid, forwarder_port, calls, concurrency, None).await);
        flowgate_rounds.push(measure(pid, gateway_port, calls, concurrency, perf).await);
    }
    let median = |mut rounds: Vec<Measured>| {
        rounds.sort_by_key(|m| m.cpu_per_call);
        rounds.swap_remove(rounds.len() / 2)
    };
    let flowgate = median(flowgate_rounds);
    let baseline = median(baseline_rounds);

    println!(
        "Invoke, Knouds sync via the emulator on loopback, {calls} calls x {rounds} rounds (median), concurrency {concurrency}, server-process CPU only:"
    );
    report("flowgate", &flowgate);
    report("minimal forwarder", &baseline);
    println!(
        "  flowgate / minimal: {:.2}x CPU per call",
        flowgate.cpu_per_call.as_secs_f64() / baseline.cpu_per_call.as_secs_f64()
    );
}
