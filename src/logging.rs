//! Logs only (the emulator and the demo): text or JSON lines on stderr,
//! filtered by `RUST_LOG` or the given level, no trace export. `serve`
//! installs full telemetry instead (`flowgate_telemetry_setup::Telemetry`).

use flowgate_telemetry_setup::{Telemetry, TelemetrySettings};

use crate::config::LogFormat;

/// Installs the global subscriber. Safe to call more than once (later calls
/// are ignored), so tests and the demo can share it.
pub fn init(format: LogFormat, level: &str) {
    // Without an endpoint or Prometheus nothing can fail to build.
    let _ = Telemetry::builder(TelemetrySettings::logs_only(format, level)).init();
}

/// Routes panics into the log: one structured `error` event per panic
/// (`panic.message`, `panic.location`, inside the span of the call that
/// panicked), instead of the default hook's unstructured stderr lines. No
/// backtrace is captured. The catch-panic layer then answers the call with
/// `INTERNAL_PANIC` without logging the message again.
pub fn route_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(a panic payload that is not a string)");
        let location = info
            .location()
            .map(|at| format!("{}:{}", at.file(), at.line()))
            .unwrap_or_default();
        tracing::error!(
            panic.message = message,
            panic.location = %location,
            "panicked"
        );
    }));
}
