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
