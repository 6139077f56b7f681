//! CPU cost of the caller layer per call, without the network: API-key
//! verification (SHA-256 and a constant-time compare), the capability
//! check, and quota admission on the memory store (request window, run
//! lease and budgets, with the balance written as response metadata).
//!
//! Single-threaded and criterion-free: each step runs `FLOWGATE_BENCH_CALLS`
//! times (default 1000000) after a warm-up, timed with the thread's own
//! CPU clock (`/proc/thread-self/schedstat`, so a busy machine does not
//! inflate it; wall time where that file is missing), and prints ns per
//! call. The issue's
//! budget is 2 µs of CPU per call for the whole caller layer.
//!
//! `cargo bench --bench caller_auth`.

#![expect(clippy::unwrap_used, clippy::print_stdout, reason = "a bench binary")]

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

/// The CPU time this thread has run, in ns (Linux `schedstat`).
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// Measures this thread's CPU time (wall time without `schedstat`).
struct CpuTimer {
    wall: Instant,
    cpu: Option<Duration>,
}

impl CpuTimer {
    fn start() -> Self {
        Self {
            wall: Instant::now(),
            cpu: thread_cpu(),
        }
    }

    fn elapsed(&self) -> Duration {
        match (self.cpu, thread_cpu()) {
            (Some(start), Some(now)) => now.saturating_sub(start),
            _ => self.wall.elapsed(),
        }
    }
}

use flowgate::auth::{
    CallerEntry, CallerRegistry, Capabilities, Capability, KeyHash, ReflectionAccess,
    quota::CallerQuotas,
};
use flowgate_core::CallerQuota;
use tonic::Response;

/// Callers in the registry (the lookup is a hash map: the count barely
/// matters, but a realistic one keeps the bench honest).
const CALLERS: usize = 100;

fn key(index: usize) -> String {
    format!("fgk_bench_{index:04}_0123456789abcdefghijklmnopqrstuvwxyzABCDEF")
}

fn registry() -> CallerRegistry {
    let callers = (0..CALLERS)
        .map(|index| CallerEntry {
            name: format!("caller-{index}"),
            keys: vec![KeyHash::of(key(index).as_bytes())],
            identities: Vec::new(),
            capabilities: Capabilities::new(
                [
                    "invoke:knouds/render-*",
                    "invoke:kn/summarize-*",
                    "schemas:read",
                    "runs:stream",
                ]
                .iter()
                .map(|text| Capability::parse(text).unwrap())
                .collect(),
            ),
            quota: Some(CallerQuota {
                requests: Some((u32::MAX, Duration::from_secs(24 * 3600))),
                max_concurrent_runs: Some(16),
                credits_per_day: Some(1e12),
                credits_per_month: Some(1e12),
                ..CallerQuota::default()
            }),
        })
        .collect();
    CallerRegistry::new(callers, false, ReflectionAccess::Authenticated)
}

fn env_number(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn report(step: &str, calls: u32, elapsed: Duration) -> f64 {
    let ns = elapsed.as_secs_f64() * 1e9 / f64::from(calls);
    println!("{step:<58} {ns:>8.0} ns/call");
    ns
}

fn main() {
    let calls = env_number("FLOWGATE_BENCH_CALLS", 1_000_000);
    let registry = registry();
    let quotas = Arc::new(CallerQuotas::memory());
    let header = format!("Bearer {}", key(CALLERS / 2));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    let authenticate = || {
        registry
            .authenticate(Some(header.as_bytes()), None)
            .unwrap()
    };
    for _ in 0..calls / 10 {
        black_box(authenticate());
    }
    let started = CpuTimer::start();
    for _ in 0..calls {
        black_box(authenticate());
    }
    report("key verification", calls, started.elapsed());

    let started = CpuTimer::start();
    for _ in 0..calls {
        let caller = authenticate();
        black_box(caller.capabilities().may_invoke("kn", "summarize-text"));
    }
    report("+ capability check", calls, started.elapsed());

    let elapsed = runtime.block_on(async {
        let started = CpuTimer::start();
        for _ in 0..calls {
            let caller = authenticate();
            black_box(caller.capabilities().may_invoke("kn", "summarize-text"));
            let ticket = quotas.admit(&caller).await.unwrap();
            black_box(ticket.answer(Ok(Response::new(()))).unwrap());
        }
        started.elapsed()
    });
    let total = report(
        "+ quota admission (memory) and balance metadata",
        calls,
        elapsed,
    );

    let elapsed = runtime.block_on(async {
        let started = CpuTimer::start();
        for _ in 0..calls {
            let caller = authenticate();
            black_box(caller.capabilities().may_invoke("kn", "summarize-text"));
            let ticket = quotas.admit(&caller).await.unwrap();
            ticket.charge().run_started("kn", Some(0.5)).await;
            black_box(ticket.answer(Ok(Response::new(()))).unwrap());
        }
        started.elapsed()
    });
    report("+ charging a reported cost", calls, elapsed);
    println!(
        "caller layer (auth + capability + admission): {total:.0} ns/call, {} the 2 µs budget",
        if total <= 2000.0 { "within" } else { "OVER" }
    );
}
