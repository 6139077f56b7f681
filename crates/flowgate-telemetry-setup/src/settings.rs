//! What telemetry is configured to do, and how the standard `OTEL_*`
//! environment variables combine with flowgate's own `[telemetry]` keys.
//!
//! Precedence, highest first: the configuration file (including its
//! `FLOWGATE__TELEMETRY__…` overrides), then the standard `OTEL_*`
//! variables, then the defaults. `OTEL_SDK_DISABLED=true` turns OTLP export
//! off whatever the file says.

use serde::Deserialize;

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line, with `trace_id` and `span_id` when in a trace.
    Json,
}

/// Telemetry settings as configured (before the environment is consulted).
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// Log line format.
    pub log_format: LogFormat,
    /// A `tracing` filter (`RUST_LOG` wins). It also decides which spans are
    /// exported: flowgate's spans are at `info`.
    pub log_level: String,
    /// OTLP/gRPC collector endpoint (`http://collector:4317`). `None` defers
    /// to `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT` /
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; an empty string turns export off.
    pub otlp_endpoint: Option<String>,
    /// `service.name`; `None` defers to `OTEL_SERVICE_NAME`, then `flowgate`.
    pub service_name: Option<String>,
    /// Share of new traces sampled (parent-based: a caller's decision is
    /// kept). `None` defers to `OTEL_TRACES_SAMPLER`/`_ARG`, then always on.
    pub sample_ratio: Option<f64>,
    /// Keep metrics for the Prometheus scrape page.
    pub prometheus: bool,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            otlp_endpoint: None,
            service_name: None,
            sample_ratio: None,
            prometheus: false,
        }
    }
}

/// Which OTLP signal an endpoint is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    Traces,
    Metrics,
}

impl TelemetrySettings {
    /// Logs only: no OTLP, no Prometheus (the emulator, the demo).
    pub fn logs_only(log_format: LogFormat, log_level: &str) -> Self {
        Self {
            log_format,
            log_level: log_level.to_owned(),
            otlp_endpoint: Some(String::new()),
            ..Self::default()
        }
    }

    /// The OTLP endpoint for `signal`, or `None` when that signal is not
    /// exported.
    pub(crate) fn endpoint(
        &self,
        signal: Signal,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<String> {
        let set = |name: &str| env(name).map(|v| v.trim().to_owned());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return None;
        }
        let (exporter_var, endpoint_var) = match signal {
            Signal::Traces => ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            Signal::Metrics => (
                "OTEL_METRICS_EXPORTER",
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            ),
        };
        let endpoint = match &self.otlp_endpoint {
            Some(configured) => Some(configured.trim().to_owned()),
            None => {
                if set(exporter_var).is_some_and(|v| v.eq_ignore_ascii_case("none")) {
                    return None;
                }
                set(endpoint_var)
                    .filter(|v| !v.is_empty())
                    .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
            }
        };
        endpoint.filter(|v| !v.is_empty())
    }

    /// `service.name`: configured, else `OTEL_SERVICE_NAME`, else `flowgate`.
    pub(crate) fn service_name(&self, env: &dyn Fn(&str) -> Option<String>) -> String {
        self.service_name
            .clone()
            .or_else(|| env("OTEL_SERVICE_NAME"))
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "flowgate".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn endpoint_precedence() {
        let unset = TelemetrySettings::default();
        assert_eq!(unset.endpoint(Signal::Traces, &env(&[])), None);
        let generic = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]);
        assert_eq!(
            unset.endpoint(Signal::Traces, &generic).as_deref(),
            Some("http://c:4317")
        );
        let specific = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:4317"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ]);
        assert_eq!(
            unset.endpoint(Signal::Metrics, &specific).as_deref(),
            Some("http://m:4317")
        );
        assert_eq!(unset.endpoint(Signal::Traces, &specific), None);

        let configured = TelemetrySettings {
            otlp_endpoint: Some("http://file:4317".into()),
            ..TelemetrySettings::default()
        };
        assert_eq!(
            configured.endpoint(Signal::Traces, &specific).as_deref(),
            Some("http://file:4317")
        );
        let off = TelemetrySettings::logs_only(LogFormat::Json, "info");
        assert_eq!(off.endpoint(Signal::Traces, &generic), None);
        let disabled = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert_eq!(configured.endpoint(Signal::Traces, &disabled), None);
    }

    #[test]
    fn service_name_precedence() {
        let unset = TelemetrySettings::default();
        assert_eq!(unset.service_name(&env(&[])), "flowgate");
        let from_env = env(&[("OTEL_SERVICE_NAME", "edge-gw")]);
        assert_eq!(unset.service_name(&from_env), "edge-gw");
        let configured = TelemetrySettings {
            service_name: Some("gw-eu".into()),
            ..TelemetrySettings::default()
        };
        assert_eq!(configured.service_name(&from_env), "gw-eu");
    }
}
