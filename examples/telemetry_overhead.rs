//! Rough CPU cost of telemetry per Invoke: the emulator, the gateway and a
//! client in one process, N sequential Knouds calls, process CPU time
//! (Linux `/proc/self/stat`) divided by N. Run in release:
//! `cargo run --release --example telemetry_overhead -- off|logs|full`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use flowgate::{config::Config, pb, server};
use flowgate_emulator::{Emulator, keys};
use flowgate_telemetry_setup::{LogFormat, Telemetry, TelemetrySettings};

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "off".into());
    let sink = std::io::sink;
    let _telemetry = match mode.as_str() {
        "off" => None,
        "logs" => Some(
            Telemetry::builder(TelemetrySettings::logs_only(LogFormat::Json, "info"))
                .log_writer(sink)
                .init()
                .unwrap(),
        ),
        _ => {
            // Export to a port nobody listens on: the cost of recording and
            // batching spans, not of a collector.
            let settings = TelemetrySettings {
                log_format: LogFormat::Json,
                log_level: "info".into(),
                otlp_endpoint: Some("http://127.0.0.1:9".into()),
                service_name: None,
                sample_ratio: None,
                prometheus: true,
            };
            Some(
                Telemetry::builder(settings)
                    .env(|_| None)
                    .log_writer(sink)
                    .init()
                    .unwrap(),
            )
        }
    };
    let emulator_config = flowgate_emulator::EmulatorConfig {
        knouds_window: std::time::Duration::from_millis(50),
        ..Default::default()
    };
    let emulator = Emulator::start(emulator_config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let config = Config::parse(
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[providers.kn]\nkind = \"knouds\"\nbase_url = \"{}\"\napi_key_env = \"K\"\n",
            emulator.knouds_base_url()
        ),
        Vec::new(),
    )
    .unwrap();
    let app = server::build(&config, |_| Some(keys::KNOUDS_KEY.to_owned())).unwrap();
    let running = server::spawn(app).await.unwrap();
    let mut client = pb::workflow_gateway_client::WorkflowGatewayClient::connect(format!(
        "http://{}",
        running.addr
    ))
    .await
    .unwrap();
    let request = || pb::InvokeRequest {
        target: Some(pb::WorkflowTarget {
            provider: "kn".into(),
            workflow: Some(pb::workflow_target::Workflow::Slug("summarize-text".into())),
        }),
        inputs: flowgate::convert::json_to_value(serde_json::json!({"text": "hello"}))
            .kind
            .and_then(|kind| match kind {
                prost_types::value::Kind::StructValue(object) => Some(object),
                _ => None,
            }),
        ..Default::default()
    };
    for _ in 0..500 {
        client.invoke(request()).await.unwrap();
        emulator.clear_requests();
    }
    let calls = 3000;
    let start = cpu_seconds();
    for _ in 0..calls {
        client.invoke(request()).await.unwrap();
        emulator.clear_requests();
    }
    let per_call = (cpu_seconds() - start) / f64::from(calls) * 1e6;
    println!("{mode}: {per_call:.1} µs CPU per Invoke (gateway + emulator + client)");
}
