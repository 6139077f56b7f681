//! `[log]` and `[telemetry]`.

use super::*;

/// `[log]`. A missing key takes its value from [`Default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `flowgate=debug,info`;
    /// `RUST_LOG` wins when set. Default `info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: "info".to_owned(),
        }
    }
}

pub use flowgate_telemetry_setup::LogFormat;

/// `[telemetry]`: traces and metrics. Each key wins over its standard
/// `OTEL_*` variable; unset keys defer to them (see `flowgate_telemetry`).
/// A missing key takes its value from [`Default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector endpoint, e.g. `http://otel-collector:4317`, for
    /// traces and metrics. Unset: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`;
    /// none of them: no export. `""` turns export off.
    pub otlp_endpoint: Option<String>,
    /// `service.name`. Unset: `OTEL_SERVICE_NAME`, else `flowgate`.
    pub service_name: Option<String>,
    /// Share of new traces recorded, 0.0 to 1.0 (a caller's sampling
    /// decision is kept). Unset: `OTEL_TRACES_SAMPLER`, else all.
    pub sample_ratio: Option<f64>,
    /// Serve `GET /metrics` (Prometheus) on `server.admin_listen`.
    /// Default true.
    pub prometheus: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: None,
            sample_ratio: None,
            prometheus: true,
        }
    }
}

impl Config {
    /// What telemetry should do: `[log]` and `[telemetry]` combined.
    pub fn telemetry_settings(&self) -> flowgate_telemetry_setup::TelemetrySettings {
        flowgate_telemetry_setup::TelemetrySettings {
            log_format: self.log.format,
            log_level: self.log.level.clone(),
            otlp_endpoint: self.telemetry.otlp_endpoint.clone(),
            service_name: self.telemetry.service_name.clone(),
            sample_ratio: self.telemetry.sample_ratio,
            prometheus: self.telemetry.prometheus,
        }
    }
}
