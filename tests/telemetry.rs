//! OpenTelemetry end to end, against a real OTLP/gRPC receiver started here
//! (opentelemetry-proto's generated TraceService and MetricsService servers
//! on 127.0.0.1:0): server and client spans in one trace, a caller's
//! `traceparent` continued, the upstream seeing the client span's context,
//! no secret in any span or log line, JSON logs carrying trace ids, the
//! Prometheus page and OTLP metrics.
//!
//! The tracing subscriber and the OpenTelemetry providers are
//! process-global, so this is its own test binary: telemetry is installed
//! once, on one shared runtime (the OTLP exporter's channel lives there),
//! and each test finds its own spans by trace id.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    io::Write,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use common::{deployment, inputs, slug, target, test_keys};
use flowgate::{admin, pb};
use flowgate_emulator::{Dialect, Fault};
use flowgate_telemetry::{SchemaCacheOutcome, metrics};
use flowgate_telemetry_setup::{LogFormat, Telemetry, TelemetrySettings};
use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::any_value::Value,
    trace::v1::{Span, span::SpanKind},
};
use serde_json::json;
use tokio::runtime::Runtime;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tonic_types::StatusExt as _;
use tracing_subscriber::fmt::MakeWriter;

// ------------------------------------------------------------ the receiver

/// What the collector received.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    service_names: Arc<Mutex<Vec<String>>>,
    metric_names: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        for resource_spans in request.into_inner().resource_spans {
            if let Some(resource) = &resource_spans.resource {
                for kv in &resource.attributes {
                    if kv.key == "service.name"
                        && let Some(Value::StringValue(name)) =
                            kv.value.as_ref().and_then(|v| v.value.clone())
                    {
                        self.service_names.lock().unwrap().push(name);
                    }
                }
            }
            for scope in resource_spans.scope_spans {
                self.spans.lock().unwrap().extend(scope.spans);
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        for resource_metrics in request.into_inner().resource_metrics {
            for scope in resource_metrics.scope_metrics {
                self.metric_names
                    .lock()
                    .unwrap()
                    .extend(scope.metrics.into_iter().map(|m| m.name));
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Log lines, captured.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// --------------------------------------------------------------- the setup

struct Env {
    runtime: Runtime,
    collector: Collector,
    telemetry: Telemetry,
    logs: LogBuffer,
    admin: std::net::SocketAddr,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let collector = Collector::default();
        let logs = LogBuffer::default();
        let (telemetry, admin) = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(collector.clone()))
                    .add_service(MetricsServiceServer::new(collector.clone()))
                    .serve_with_incoming(TcpListenerStream::new(listener)),
            );
            let settings = TelemetrySettings {
                log_format: LogFormat::Json,
                log_level: "info".into(),
                otlp_endpoint: Some(format!("http://{addr}")),
                service_name: Some("flowgate-under-test".into()),
                sample_ratio: None,
                prometheus: true,
            };
            let telemetry = Telemetry::builder(settings)
                .env(|_| None)
                .log_writer(logs.clone())
                .init()
                .unwrap();
            assert!(telemetry.traces_enabled() && telemetry.metrics_enabled());
            let admin = admin::spawn(
                "127.0.0.1:0".parse().unwrap(),
                telemetry.prometheus().unwrap(),
                admin::Readiness::default(),
            )
            .await
            .unwrap();
            let addr = admin.addr;
            std::mem::forget(admin); // serves for the whole test binary
            (telemetry, addr)
        });
        Env {
            runtime,
            collector,
            telemetry,
            logs,
            admin,
        }
    })
}

/// A fresh W3C trace id.
fn new_trace_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!(
        "{:016x}{:016x}",
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed) | 1
    )
}

/// Waits until the collector holds spans of `trace_id` for which `done`
/// says the trace is complete, and returns them.
async fn trace(trace_id: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
    let env = env();
    for _ in 0..100 {
        env.telemetry.flush().await;
        let spans: Vec<Span> = env
            .collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|span| hex(&span.trace_id) == trace_id)
            .cloned()
            .collect();
        if done(&spans) {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("trace {trace_id} never completed");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans
        .iter()
        .find(|span| span.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no span {name} in {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn str_attr<'a>(span: &'a Span, key: &str) -> &'a str {
    match attr(span, key) {
        Some(Value::StringValue(text)) => text,
        other => panic!("{}: {key} is {other:?}", span.name),
    }
}

fn int_attr(span: &Span, key: &str) -> i64 {
    match attr(span, key) {
        Some(Value::IntValue(value)) => *value,
        other => panic!("{}: {key} is {other:?}", span.name),
    }
}

/// `(trace id, parent id)` of a `traceparent` header.
fn parse_traceparent(header: &str) -> (String, String) {
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts.len(), 4, "{header}");
    assert_eq!(parts[0], "00");
    (parts[1].to_owned(), parts[2].to_owned())
}

fn with_traceparent<T>(message: T, trace_id: &str, span_id: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{span_id}-01").parse().unwrap(),
    );
    request
}

const SERVER: i32 = SpanKind::Server as i32;
const CLIENT: i32 = SpanKind::Client as i32;

// --------------------------------------------------------------- the tests

#[test]
fn one_invoke_is_one_trace_from_the_server_span_into_the_provider() {
    env().runtime.block_on(async {
        let mut h = common::start().await;
        let mut request = pb::InvokeRequest {
            target: target("kn", slug("render-video")),
            inputs: inputs(json!({"prompt": "a fox"})),
            ..Default::default()
        };
        request.async_options = Some(pb::AsyncOptions {
            enabled: true,
            callback_url: String::new(),
        });
        let response = h.client.invoke(request).await.unwrap().into_inner();

        // The upstream received the client span's context.
        let requests = h.emulator.requests();
        let sent = requests
            .iter()
            .find(|r| r.path.ends_with("/run"))
            .expect("the run request");
        assert_eq!(sent.query.as_deref(), Some("async=true"));
        let traceparent = sent.header("traceparent").expect("traceparent sent");
        assert!(traceparent.ends_with("-01"), "sampled: {traceparent}");
        let (trace_id, upstream_parent) = parse_traceparent(traceparent);

        let spans = trace(&trace_id, |spans| {
            spans.iter().any(|s| s.kind == SERVER) && spans.len() >= 3
        })
        .await;
        let server = named(&spans, "flowgate.v1.WorkflowGateway/Invoke");
        let invoke = named(&spans, "Invoke");
        let client = named(&spans, "POST");

        assert_eq!(server.kind, SERVER);
        assert!(server.parent_span_id.is_empty(), "a new trace is a root");
        assert_eq!(str_attr(server, "rpc.system"), "grpc");
        assert_eq!(
            str_attr(server, "rpc.service"),
            "flowgate.v1.WorkflowGateway"
        );
        assert_eq!(str_attr(server, "rpc.method"), "Invoke");
        assert_eq!(int_attr(server, "rpc.grpc.status_code"), 0);

        assert_eq!(invoke.parent_span_id, server.span_id);
        assert_eq!(str_attr(invoke, "flowgate.provider"), "kn");
        assert_eq!(str_attr(invoke, "flowgate.dialect"), "knouds");
        assert_eq!(str_attr(invoke, "flowgate.workflow"), "render-video");
        assert_eq!(str_attr(invoke, "flowgate.run_id"), response.run_id);
        assert_eq!(str_attr(invoke, "flowgate.run.status"), "running");
        assert_eq!(
            str_attr(invoke, "flowgate.schema_cache"),
            "miss",
            "the first call for the slug fetched its schema"
        );

        assert_eq!(client.kind, CLIENT);
        assert_eq!(client.parent_span_id, invoke.span_id);
        assert_eq!(hex(&client.span_id), upstream_parent);
        assert_eq!(str_attr(client, "http.request.method"), "POST");
        assert_eq!(str_attr(client, "server.address"), "127.0.0.1");
        assert_eq!(
            int_attr(client, "server.port"),
            i64::from(h.emulator.addr().port())
        );
        assert_eq!(
            str_attr(client, "url.path"),
            "/knouds/api/workflows/render-video/run",
            "no query string"
        );
        let status = int_attr(client, "http.response.status_code");
        assert!((200..300).contains(&status), "{status}");
        assert_eq!(str_attr(client, "flowgate.provider"), "kn");
        assert_eq!(str_attr(client, "flowgate.dialect"), "knouds");
        assert_eq!(int_attr(client, "flowgate.retry.attempt"), 1);
        if let Some(remaining) = response.rate_limit.and_then(|r| r.remaining) {
            assert_eq!(
                int_attr(client, "flowgate.rate_limit.remaining"),
                i64::try_from(remaining).unwrap()
            );
        }
        assert!(
            env()
                .collector
                .service_names
                .lock()
                .unwrap()
                .iter()
                .all(|name| name == "flowgate-under-test")
        );
    });
}

#[test]
fn a_callers_traceparent_is_continued_into_the_provider() {
    env().runtime.block_on(async {
        let mut h = common::start().await;
        let trace_id = new_trace_id();
        let caller_span = "00f067aa0ba902b7";
        let request = pb::InvokeRequest {
            target: target("fh", deployment("summarize", "default")),
            inputs: inputs(json!({"topic": "tracing"})),
            ..Default::default()
        };
        h.client
            .invoke(with_traceparent(request, &trace_id, caller_span))
            .await
            .unwrap();

        let requests = h.emulator.requests();
        let sent = requests
            .iter()
            .find(|r| r.path.ends_with("/workflow/invoke"))
            .expect("the invoke request")
            .header("traceparent")
            .unwrap()
            .to_owned();
        let (upstream_trace, upstream_parent) = parse_traceparent(&sent);
        assert_eq!(upstream_trace, trace_id, "the caller's trace continues");

        let spans = trace(&trace_id, |spans| {
            spans.iter().any(|s| s.kind == SERVER) && spans.len() >= 3
        })
        .await;
        let server = named(&spans, "flowgate.v1.WorkflowGateway/Invoke");
        assert_eq!(hex(&server.parent_span_id), caller_span);
        let client = named(&spans, "POST");
        assert_eq!(hex(&client.span_id), upstream_parent);
        assert_eq!(
            str_attr(client, "url.path"),
            "/fetchhive/v1/workflow/invoke"
        );
        assert_eq!(str_attr(client, "flowgate.dialect"), "fetchhive");
    });
}

#[test]
fn health_gets_a_server_span_and_errors_their_status_code() {
    env().runtime.block_on(async {
        let mut h = common::start().await;
        let trace_id = new_trace_id();
        let mut health = tonic_health::pb::health_client::HealthClient::new(h.channel().await);
        health
            .check(with_traceparent(
                tonic_health::pb::HealthCheckRequest::default(),
                &trace_id,
                "1111111111111111",
            ))
            .await
            .unwrap();
        let spans = trace(&trace_id, |spans| !spans.is_empty()).await;
        let check = named(&spans, "grpc.health.v1.Health/Check");
        assert_eq!(str_attr(check, "rpc.service"), "grpc.health.v1.Health");
        assert_eq!(int_attr(check, "rpc.grpc.status_code"), 0);

        // An unknown provider: NOT_FOUND (5), a caller error, not a span error.
        let trace_id = new_trace_id();
        let request = pb::InvokeRequest {
            target: target("nope", slug("summarize-text")),
            inputs: inputs(json!({"text": "x"})),
            ..Default::default()
        };
        let status = h
            .client
            .invoke(with_traceparent(request, &trace_id, "2222222222222222"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        let spans = trace(&trace_id, |spans| spans.iter().any(|s| s.kind == SERVER)).await;
        let server = named(&spans, "flowgate.v1.WorkflowGateway/Invoke");
        assert_eq!(int_attr(server, "rpc.grpc.status_code"), 5);
        assert!(spans.iter().all(|s| s.kind != CLIENT), "no upstream call");
        assert_eq!(str_attr(named(&spans, "Invoke"), "error.type"), "not_found");
    });
}

#[test]
fn no_secret_reaches_a_span_or_a_log_line_and_json_logs_carry_trace_ids() {
    env().runtime.block_on(async {
        let mut h = common::start().await;
        // A rejected key (logged as a failed call) in a trace we know.
        let trace_id = new_trace_id();
        let request = pb::InvokeRequest {
            target: target("kn-badkey", slug("summarize-text")),
            inputs: inputs(json!({"text": "x"})),
            ..Default::default()
        };
        let status = h
            .client
            .invoke(with_traceparent(request, &trace_id, "3333333333333333"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        // Every dialect's key in use, and a webhook secret issued.
        let mut secrets: Vec<String> = test_keys().into_values().collect();
        let mut request = pb::InvokeRequest {
            target: target("fh", deployment("summarize", "default")),
            inputs: inputs(json!({"topic": "secrets"})),
            ..Default::default()
        };
        request.async_options = Some(pb::AsyncOptions {
            enabled: true,
            callback_url: "https://hooks.example.com/flowgate".into(),
        });
        let response = h.client.invoke(request).await.unwrap().into_inner();
        assert!(response.webhook_secret.starts_with("whsec_"));
        secrets.push(response.webhook_secret.clone());
        for (provider, workflow, input) in [
            (
                "tutor",
                common::workflow_id("wf_story"),
                json!({"topic": "x"}),
            ),
            (
                "tutor-badkey",
                common::workflow_id("wf_story"),
                json!({"topic": "x"}),
            ),
            (
                "fh-badkey",
                deployment("summarize", "default"),
                json!({"topic": "x"}),
            ),
            ("kn", slug("summarize-text"), json!({"text": "x"})),
        ] {
            let _ = h
                .client
                .invoke(pb::InvokeRequest {
                    target: target(provider, workflow),
                    inputs: inputs(input),
                    ..Default::default()
                })
                .await;
        }

        // Upstream strings echoing the provider key: the error code (the
        // reason, also logged), `X-Request-Id`, a message long enough to be
        // cut near the key, a FAILED run's error, and a redirect.
        // (`FLOWGATE_SIGNING_SECRET`, among `test_keys`, is also the run id
        // secret of the test config.)
        let kn_key = h.keys["KN_KEY"].clone();
        let echo = json!({"error": format!("{}{kn_key}", "m".repeat(280)), "code": kn_key});
        h.emulator.inject_fault(
            Fault::status(Dialect::Knouds, 500, echo.to_string())
                .with_path("/run")
                .with_header("X-Request-Id", kn_key.clone())
                .with_times(1),
        );
        h.emulator.inject_fault(
            Fault::status(Dialect::Knouds, 307, "")
                .with_path("/run")
                .with_header("Location", format!("http://127.0.0.1:1/?key={kn_key}"))
                .with_times(1),
        );
        let mut shown = String::new();
        for _ in 0..2 {
            let status = h
                .client
                .invoke(pb::InvokeRequest {
                    target: target("kn", slug("summarize-text")),
                    inputs: inputs(json!({"text": "x"})),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            shown.push_str(&format!(
                "{} {:?} {:?}\n",
                status.message(),
                status.get_error_details(),
                status.metadata()
            ));
        }
        h.emulator.inject_fault(
            Fault::status(
                Dialect::Knouds,
                200,
                json!({"executionId": "7e1e0000-0000-4000-8000-00000000007e", "status": "failed",
                       "error": {"code": kn_key, "message": format!("{}{kn_key}", "f".repeat(295))}})
                .to_string(),
            )
            .with_path("/api/executions/7e1e0000-0000-4000-8000-00000000007e")
            .with_header("X-Request-Id", kn_key.clone()),
        );
        let run_id = common::sign_run_id(&flowgate_core::RunId::new("kn", "7e1e0000-0000-4000-8000-00000000007e"));
        let mut events = h
            .client
            .stream_status(pb::StreamStatusRequest { run_id })
            .await
            .unwrap()
            .into_inner();
        let failed = events.message().await.unwrap().unwrap();
        assert_eq!(failed.status(), pb::RunStatus::Failed);
        shown.push_str(&format!("{failed:?}"));
        h.emulator.clear_faults();

        trace(&trace_id, |spans| spans.iter().any(|s| s.kind == SERVER)).await;
        env().telemetry.flush().await;
        let exported = format!("{:?}", env().collector.spans.lock().unwrap());
        let logs = env().logs.text();
        assert!(!logs.is_empty());
        for secret in &secrets {
            assert!(!exported.contains(secret.as_str()), "a secret in a span");
            assert!(!logs.contains(secret.as_str()), "a secret in a log line");
            assert!(!shown.contains(secret.as_str()), "a secret in a status");
        }
        // Not even a 10-character piece of the echoed key.
        for at in 0..=kn_key.len() - 10 {
            let piece = &kn_key[at..at + 10];
            assert!(!exported.contains(piece), "a key fragment in a span");
            assert!(!logs.contains(piece), "a key fragment in a log line");
            assert!(!shown.contains(piece), "a key fragment in a status: {shown}");
        }

        // The failed call's log line is JSON with this trace's ids.
        let line = logs
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|line| line["trace_id"] == trace_id.as_str() && line["message"] == "call failed")
            .unwrap_or_else(|| panic!("no log line of trace {trace_id} in\n{logs}"));
        assert_eq!(line["message"], "call failed");
        assert_eq!(line["reason"], "UPSTREAM_CREDENTIAL_REJECTED");
        assert_eq!(line["span_id"].as_str().unwrap().len(), 16);
    });
}

#[test]
fn prometheus_and_otlp_carry_the_named_metrics() {
    env().runtime.block_on(async {
        let mut h = common::start().await;
        let response = h
            .client
            .invoke(pb::InvokeRequest {
                target: target("kn", slug("summarize-text")),
                inputs: inputs(json!({"text": "metrics"})),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        // The hooks the schema cache and StreamStatus call.
        metrics().schema_cache("kn", SchemaCacheOutcome::Hit);
        metrics().schema_cache("kn", SchemaCacheOutcome::Miss);
        let stream = metrics().stream_opened();

        let page = reqwest::get(format!("http://{}/metrics", env().admin))
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        assert!(
            page.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let page = page.text().await.unwrap();
        let has = |name: &str, labels: &[&str]| {
            page.lines().any(|line| {
                line.starts_with(name) && labels.iter().all(|label| line.contains(label))
            })
        };
        assert!(
            has(
                "flowgate_rpc_requests_total{",
                &["rpc_method=\"Invoke\"", "rpc_grpc_status_code=\"0\""]
            ),
            "{page}"
        );
        assert!(has(
            "flowgate_rpc_duration_seconds_bucket{",
            &["rpc_method=\"Invoke\""]
        ));
        assert!(has(
            "flowgate_upstream_requests_total{",
            &[
                "flowgate_provider=\"kn\"",
                "flowgate_dialect=\"knouds\"",
                "http_response_status_code=\"200\""
            ]
        ));
        assert!(has(
            "flowgate_upstream_duration_seconds_bucket{",
            &["flowgate_provider=\"kn\""]
        ));
        assert!(has(
            "flowgate_schema_cache_hits_total{",
            &["flowgate_provider=\"kn\""]
        ));
        assert!(has(
            "flowgate_schema_cache_misses_total{",
            &["flowgate_provider=\"kn\""]
        ));
        assert!(has("flowgate_circuit_open{", &["flowgate_provider=\"kn\""]));
        assert!(has("flowgate_streams_active", &[]));
        if response.rate_limit.and_then(|r| r.remaining).is_some() {
            assert!(has(
                "flowgate_upstream_rate_limit_remaining{",
                &["flowgate_provider=\"kn\""]
            ));
        }
        assert!(!page.contains(&response.run_id), "no run ids as labels");
        assert!(!page.contains("summarize-text"), "no workflows as labels");
        drop(stream);

        // The same instruments reach the OTLP collector.
        env().telemetry.flush().await;
        let names = env().collector.metric_names.lock().unwrap().clone();
        for name in [
            "flowgate.rpc.requests",
            "flowgate.rpc.duration",
            "flowgate.upstream.requests",
            "flowgate.upstream.duration",
            "flowgate.schema_cache.hits",
            "flowgate.circuit.open",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
        }
    });
}

#[test]
fn streams_and_background_polls_link_back_to_the_run_trace() {
    env().runtime.block_on(async {
        let mut h = common::start().await;
        let request = pb::InvokeRequest {
            target: target("kn", slug("render-video")),
            inputs: inputs(json!({"prompt": "linked"})),
            async_options: Some(pb::AsyncOptions {
                enabled: true,
                callback_url: String::new(),
            }),
            ..Default::default()
        };
        let trace_id = new_trace_id();
        let response = h
            .client
            .invoke(with_traceparent(request, &trace_id, "00f067aa0ba902b7"))
            .await
            .unwrap()
            .into_inner();
        let mut events = h
            .client
            .stream_status(pb::StreamStatusRequest {
                run_id: response.run_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        while events.message().await.unwrap().is_some() {}

        let linked_to_run = |span: &Span| {
            span.links
                .iter()
                .any(|link| hex(&link.trace_id) == trace_id)
        };
        let mut found = (false, false);
        for _ in 0..100 {
            env().telemetry.flush().await;
            let spans = env().collector.spans.lock().unwrap().clone();
            found = (
                spans.iter().any(|s| {
                    s.name == "flowgate.v1.WorkflowGateway/StreamStatus" && linked_to_run(s)
                }),
                spans
                    .iter()
                    .any(|s| s.name == "flowgate.poll" && linked_to_run(s)),
            );
            if found == (true, true) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            found,
            (true, true),
            "(StreamStatus span linked, poll span linked)"
        );
    });
}
