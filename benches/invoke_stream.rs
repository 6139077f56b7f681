//! InvokeStream's cost: the time to the first delta the gateway adds, and
//! the gateway's CPU per streamed call and per forwarded chunk.
//!
//! Starts `flowgate emulator --no-rate-limits` and `flowgate serve` (one AI
//! Tutor provider, default config: spans at `info`, metrics on) as separate
//! processes on loopback (see `harness`).
//!
//! - **Time to first delta**: one call at a time, alternating a direct
//!   client (reqwest: token GET, stream POST, first body chunk) and
//!   InvokeStream through the gateway (until the first `output_delta`);
//!   the medians and their difference.
//! - **CPU**: concurrent InvokeStream calls of a short and a long story
//!   (the emulator sends one word per chunk, 5 ms apart); the gateway's own
//!   CPU per call, and per chunk as the difference between the two
//!   workloads divided by the difference in chunks (per-call costs cancel).
//!
//! `cargo bench --bench invoke_stream` (Linux). Knobs:
//! `FLOWGATE_BENCH_CALLS` (480 per workload), `FLOWGATE_BENCH_CONCURRENCY`
//! (16), `FLOWGATE_BENCH_SAMPLES` (200 first-delta samples per path).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a bench binary"
)]

mod harness;

use std::time::{Duration, Instant};

use flowgate::pb::{
    self, invoke_stream_event::Event, workflow_gateway_client::WorkflowGatewayClient,
};
use harness::{Reaper, cpu_ticks, env_number, free_port, percentile, ticks_per_second};
use tonic::transport::Channel;

fn request(words: usize) -> pb::InvokeRequest {
    let inputs = harness::inputs(serde_json::json!({ "story": vec!["word"; words].join(" ") }));
    pb::InvokeRequest {
        target: Some(pb::WorkflowTarget {
            provider: "tutor".into(),
            workflow: Some(pb::workflow_target::Workflow::WorkflowId("wf_story".into())),
        }),
        inputs,
        ..Default::default()
    }
}

/// One InvokeStream call: time to the first delta, and the deltas seen.
async fn stream_once(client: &mut WorkflowGatewayClient<Channel>, words: usize) -> (Duration, u64) {
    let started = Instant::now();
    let mut events = client
        .invoke_stream(request(words))
        .await
        .unwrap()
        .into_inner();
    let mut first = None;
    let mut deltas = 0;
    while let Some(event) = events.message().await.unwrap() {
        if let Some(Event::OutputDelta(_)) = event.event {
            first.get_or_insert_with(|| started.elapsed());
            deltas += 1;
        }
    }
    (first.expect("a delta"), deltas)
}

/// The same call straight to the emulator: time to the first body chunk.
async fn direct_once(client: &reqwest::Client, base: &str, words: usize) -> Duration {
    let started = Instant::now();
    let token: serde_json::Value = client
        .get(format!("{base}/api/v1/token?ttl=60"))
        .bearer_auth(flowgate_emulator::keys::AITUTOR_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap();
    let mut response = client
        .post(format!("{base}/api/v1/run/wf_story/stream?token={token}"))
        .json(&serde_json::json!({ "story": vec!["word"; words].join(" ") }))
        .send()
        .await
        .unwrap();
    response.chunk().await.unwrap().expect("a chunk");
    let first = started.elapsed();
    while response.chunk().await.unwrap().is_some() {}
    first
}

/// Gateway CPU and deltas for `calls` concurrent streams of `words` words.
async fn cpu_run(
    channel: &Channel,
    pid: u32,
    calls: usize,
    concurrency: usize,
    words: usize,
) -> (f64, u64) {
    let before = cpu_ticks(pid);
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let mut client = WorkflowGatewayClient::new(channel.clone());
        let share = calls / concurrency + usize::from(worker < calls % concurrency);
        tasks.push(tokio::spawn(async move {
            let mut deltas = 0;
            for _ in 0..share {
                deltas += stream_once(&mut client, words).await.1;
            }
            deltas
        }));
    }
    let mut deltas = 0;
    for task in tasks {
        deltas += task.await.unwrap();
    }
    let seconds = (cpu_ticks(pid) - before) as f64 / ticks_per_second() as f64;
    (seconds, deltas)
}

#[tokio::main]
async fn main() {
    let calls = env_number("FLOWGATE_BENCH_CALLS", 480);
    let concurrency = env_number("FLOWGATE_BENCH_CONCURRENCY", 16);
    let samples = env_number("FLOWGATE_BENCH_SAMPLES", 200);
    let mut children = Reaper(Vec::new());
    let emulator_port = harness::emulator(&mut children).await;
    let base = format!("http://127.0.0.1:{emulator_port}/aitutor");
    let gateway_port = free_port();
    let pid = harness::gateway(
        &mut children,
        gateway_port,
        &format!("[providers.tutor]\nkind = \"aitutor\"\nbase_url = \"{base}\"\napi_key_env = \"BENCH_KEY\"\n"),
        &[("BENCH_KEY", flowgate_emulator::keys::AITUTOR_KEY)],
    )
    .await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{gateway_port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut client = WorkflowGatewayClient::new(channel.clone());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let direct = reqwest::Client::new();

    // Warm both paths up, then alternate them.
    for _ in 0..20 {
        stream_once(&mut client, 10).await;
        direct_once(&direct, &base, 10).await;
    }
    let mut through = Vec::with_capacity(samples);
    let mut straight = Vec::with_capacity(samples);
    for _ in 0..samples {
        straight.push(direct_once(&direct, &base, 10).await);
        through.push(stream_once(&mut client, 10).await.0);
    }
    through.sort();
    straight.sort();
    let (through_p50, straight_p50) = (percentile(&through, 0.5), percentile(&straight, 0.5));
    println!(
        "InvokeStream, AI Tutor via the emulator on loopback, {samples} sequential calls per path:"
    );
    println!(
        "  time to first delta: direct p50 {straight_p50:.3?} (p99 {:.3?}), through flowgate p50 {through_p50:.3?} (p99 {:.3?}): +{:.3?} at p50",
        percentile(&straight, 0.99),
        percentile(&through, 0.99),
        through_p50.saturating_sub(straight_p50)
    );

    let (short_words, long_words) = (5, 100);
    cpu_run(&channel, pid, concurrency * 2, concurrency, short_words).await;
    let (short_cpu, short_deltas) = cpu_run(&channel, pid, calls, concurrency, short_words).await;
    let (long_cpu, long_deltas) = cpu_run(&channel, pid, calls, concurrency, long_words).await;
    let micros = |seconds: f64| seconds * 1e6;
    println!("  gateway CPU, {calls} calls each, concurrency {concurrency}:");
    println!(
        "    short story: {:.1} µs/call ({:.1} deltas/call)",
        micros(short_cpu / calls as f64),
        short_deltas as f64 / calls as f64
    );
    println!(
        "    long story:  {:.1} µs/call ({:.1} deltas/call)",
        micros(long_cpu / calls as f64),
        long_deltas as f64 / calls as f64
    );
    println!(
        "    per forwarded chunk: {:.2} µs",
        micros((long_cpu - short_cpu) / (long_deltas.saturating_sub(short_deltas)).max(1) as f64)
    );
}
