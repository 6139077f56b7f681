//! Installing telemetry: the global subscriber, the trace and meter
//! providers, and their shutdown.

use std::fmt;

use opentelemetry::{metrics::MeterProvider as _, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{
    Resource,
    metrics::{MeterProviderBuilder, SdkMeterProvider, reader::MetricReader},
    trace::{Sampler, SdkTracerProvider, SpanExporter, TracerProviderBuilder},
};
use tracing::Level;
use tracing_subscriber::{
    EnvFilter, Layer as _,
    filter::filter_fn,
    filter::{LevelFilter, Targets},
    fmt::{self as tracing_fmt, MakeWriter, format::JsonFields, writer::BoxMakeWriter},
    prelude::*,
};

use crate::{
    export_watch::{ExportHealth, WatchedMetrics, WatchedSpans},
    json_log::JsonWithTraceIds,
    settings::{LogFormat, Signal, TelemetrySettings},
};

/// Telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (e.g. a malformed endpoint).
    #[error("OTLP exporter: {0}")]
    Otlp(#[from] opentelemetry_otlp::ExporterBuildError),
    /// The Prometheus exporter could not be built.
    #[error("Prometheus exporter: {0}")]
    Prometheus(String),
}

type TracerHook = Box<dyn FnOnce(TracerProviderBuilder) -> TracerProviderBuilder + Send>;
type MeterHook = Box<dyn FnOnce(MeterProviderBuilder) -> MeterProviderBuilder + Send>;
type Env = Box<dyn Fn(&str) -> Option<String> + Send>;

/// Configures [`Telemetry`]; see [`Telemetry::builder`].
pub struct TelemetryBuilder {
    settings: TelemetrySettings,
    env: Env,
    span_exporter: Option<TracerHook>,
    metric_reader: Option<MeterHook>,
    log_writer: Option<BoxMakeWriter>,
}

impl fmt::Debug for TelemetryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryBuilder")
            .field("settings", &self.settings)
            .field("span_exporter", &self.span_exporter.is_some())
            .field("metric_reader", &self.metric_reader.is_some())
            .field("log_writer", &self.log_writer.is_some())
            .finish_non_exhaustive()
    }
}

impl TelemetryBuilder {
    /// Reads `OTEL_*` variables through `env` instead of the process
    /// environment.
    pub fn env(mut self, env: impl Fn(&str) -> Option<String> + Send + 'static) -> Self {
        self.env = Box::new(env);
        self
    }

    /// Exports spans to `exporter` (synchronously, as they end) instead of
    /// OTLP; tracing is on whatever the endpoint settings say. For tests.
    pub fn span_exporter<E: SpanExporter + 'static>(mut self, exporter: E) -> Self {
        self.span_exporter = Some(Box::new(move |builder| {
            builder.with_simple_exporter(exporter)
        }));
        self
    }

    /// Adds a metric reader (e.g. a test's manual reader).
    pub fn metric_reader<R: MetricReader>(mut self, reader: R) -> Self {
        self.metric_reader = Some(Box::new(move |builder| builder.with_reader(reader)));
        self
    }

    /// Writes log lines to `writer` instead of stderr.
    pub fn log_writer<W>(mut self, writer: W) -> Self
    where
        W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    {
        self.log_writer = Some(BoxMakeWriter::new(writer));
        self
    }

    /// Builds the providers and installs the global subscriber. Call once,
    /// inside the Tokio runtime (the OTLP exporter's gRPC channel lives
    /// there). If a global subscriber is already installed it stays, and
    /// this one's spans and logs go nowhere.
    pub fn init(self) -> Result<Telemetry, TelemetryError> {
        let env = &*self.env;
        let settings = &self.settings;
        let resource = Resource::builder()
            .with_service_name(settings.service_name(env))
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();

        let traces_endpoint = settings.endpoint(Signal::Traces, env);
        let mut traces_health = None;
        let tracer = if self.span_exporter.is_some() || traces_endpoint.is_some() {
            let mut builder = SdkTracerProvider::builder().with_resource(resource.clone());
            if let Some(ratio) = settings.sample_ratio {
                builder = builder.with_sampler(Sampler::ParentBased(Box::new(
                    Sampler::TraceIdRatioBased(ratio),
                )));
            }
            builder = match (self.span_exporter, traces_endpoint) {
                (Some(hook), _) => hook(builder),
                (None, Some(endpoint)) => {
                    let health = ExportHealth::new("traces", &endpoint);
                    traces_health = Some(health.clone());
                    builder.with_batch_exporter(WatchedSpans {
                        inner: opentelemetry_otlp::SpanExporter::builder()
                            .with_tonic()
                            .with_endpoint(endpoint)
                            .build()?,
                        health,
                    })
                }
                (None, None) => builder,
            };
            Some(builder.build())
        } else {
            None
        };

        let metrics_endpoint = settings.endpoint(Signal::Metrics, env);
        let mut prometheus = None;
        let mut metrics_health = None;
        let meter =
            if settings.prometheus || metrics_endpoint.is_some() || self.metric_reader.is_some() {
                let mut builder = SdkMeterProvider::builder().with_resource(resource);
                if settings.prometheus {
                    let registry = prometheus::Registry::new();
                    let exporter = opentelemetry_prometheus::exporter()
                        .with_registry(registry.clone())
                        .scope_info_enabled(false)
                        .build()
                        .map_err(|err| TelemetryError::Prometheus(err.to_string()))?;
                    builder = builder.with_reader(exporter);
                    prometheus = Some(PrometheusMetrics { registry });
                }
                if let Some(endpoint) = metrics_endpoint {
                    let health = ExportHealth::new("metrics", &endpoint);
                    metrics_health = Some(health.clone());
                    builder = builder.with_periodic_exporter(WatchedMetrics {
                        inner: opentelemetry_otlp::MetricExporter::builder()
                            .with_tonic()
                            .with_endpoint(endpoint)
                            .build()?,
                        health,
                    });
                }
                if let Some(hook) = self.metric_reader {
                    builder = hook(builder);
                }
                let provider = builder.build();
                flowgate_telemetry::install_meter(&provider.meter("flowgate"));
                Some(provider)
            } else {
                None
            };

        let filter = EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(&settings.log_level))
            .unwrap_or_else(|_| EnvFilter::new("info"));
        // The exporter's own stack (tonic, hyper, h2, tower, the SDK) must
        // never export spans about exporting, whatever RUST_LOG says.
        let exporter_stack = Targets::new().with_default(Level::TRACE).with_targets(
            [
                "h2",
                "hyper",
                "hyper_util",
                "tonic",
                "tower",
                "opentelemetry",
                "opentelemetry_sdk",
                "opentelemetry_otlp",
            ]
            .map(|target| (target, LevelFilter::OFF)),
        );
        let otel = tracer.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("flowgate"))
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_filter(exporter_stack)
        });
        // Colours only for a person at a terminal: a pipe, a file or a
        // container runtime's log collector gets plain text.
        let ansi =
            self.log_writer.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
        let writer = self
            .log_writer
            .unwrap_or_else(|| BoxMakeWriter::new(std::io::stderr));
        // The log layer sees events only. A formatting layer that also saw
        // spans would format and store every span's fields on every call
        // (most of telemetry's CPU cost per Invoke in the benchmark) just in
        // case a log line is written inside it. Log lines carry their own
        // fields; span context lives in the traces, and JSON lines carry
        // the trace and span ids to join the two.
        let logs = match settings.log_format {
            LogFormat::Text => tracing_fmt::layer()
                .with_ansi(ansi)
                .with_writer(writer)
                .with_filter(filter_fn(|metadata| metadata.is_event()))
                .boxed(),
            LogFormat::Json => tracing_fmt::layer()
                .event_format(JsonWithTraceIds::new())
                .fmt_fields(JsonFields::new())
                .with_ansi(false)
                .with_writer(writer)
                .with_filter(filter_fn(|metadata| metadata.is_event()))
                .boxed(),
        };
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(otel)
            .with(logs)
            .try_init();

        Ok(Telemetry {
            tracer,
            meter,
            prometheus,
            traces_health,
            metrics_health,
        })
    }
}

/// Installed telemetry: keep it for the life of the process and call
/// [`Telemetry::shutdown`] after the server drained, so buffered spans and
/// metrics are exported.
#[derive(Debug)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    prometheus: Option<PrometheusMetrics>,
    /// The OTLP exporters' state, for a plain message at shutdown.
    traces_health: Option<ExportHealth>,
    metrics_health: Option<ExportHealth>,
}

impl Telemetry {
    /// Starts configuring telemetry from `settings` and the process
    /// environment.
    pub fn builder(settings: TelemetrySettings) -> TelemetryBuilder {
        TelemetryBuilder {
            settings,
            env: Box::new(|name| std::env::var(name).ok()),
            span_exporter: None,
            metric_reader: None,
            log_writer: None,
        }
    }

    /// True when spans are exported (and trace context propagated).
    pub fn traces_enabled(&self) -> bool {
        self.tracer.is_some()
    }

    /// True when metrics are collected (OTLP or Prometheus).
    pub fn metrics_enabled(&self) -> bool {
        self.meter.is_some()
    }

    /// The Prometheus page, when `prometheus` is on.
    pub fn prometheus(&self) -> Option<PrometheusMetrics> {
        self.prometheus.clone()
    }

    /// Exports everything buffered now.
    pub async fn flush(&self) {
        let tracer = self.tracer.clone();
        let meter = self.meter.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(tracer) = tracer {
                let _ = tracer.force_flush();
            }
            if let Some(meter) = meter {
                let _ = meter.force_flush();
            }
        })
        .await;
    }

    /// Flushes and stops the exporters (their background threads end). A
    /// final flush that fails is logged in plain words: the signal, the
    /// collector and the cause (see `export_watch`).
    pub async fn shutdown(self) {
        let Self {
            tracer,
            meter,
            traces_health,
            metrics_health,
            ..
        } = self;
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(tracer) = tracer {
                let result = tracer.shutdown();
                match &traces_health {
                    Some(health) => health.at_shutdown(result),
                    None => {
                        if let Err(err) = result {
                            tracing::warn!(error = %err, "flushing traces at shutdown failed");
                        }
                    }
                }
            }
            if let Some(meter) = meter {
                let result = meter.shutdown();
                match &metrics_health {
                    Some(health) => health.at_shutdown(result),
                    None => {
                        if let Err(err) = result {
                            tracing::warn!(error = %err, "flushing metrics at shutdown failed");
                        }
                    }
                }
            }
        })
        .await;
    }
}

/// The Prometheus text exposition of flowgate's metrics.
#[derive(Debug, Clone)]
pub struct PrometheusMetrics {
    registry: prometheus::Registry,
}

impl PrometheusMetrics {
    /// The `Content-Type` of [`PrometheusMetrics::render`]'s output.
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    /// The current values, in the Prometheus text format.
    pub fn render(&self) -> String {
        use prometheus::Encoder as _;
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
