//! Shutdown: what the tracker ends at once, what it lets finish within the
//! grace period, and what it reports as abandoned.
//!
//! 1. [`RunTracker::begin_shutdown`] (when the signal arrives): every open
//!    stream ends with UNAVAILABLE `SHUTTING_DOWN`, new streams are refused
//!    the same way, and pollers stop (a poller whose run still owed a
//!    completion event to a caller counts as an abandoned `run_watch`).
//! 2. [`RunTracker::drain`] (after in-flight calls finished): background
//!    runs get what is left of the grace to publish their outcome (their
//!    completion events are queued for forwarding), then the forwarder
//!    gets the rest to deliver what is queued or in flight.
//!
//! What could not finish is logged once (a warn with counts) and counted in
//! `flowgate.shutdown.abandoned` by `kind` (`background_run`, `run_watch`,
//! `forward`).

use std::sync::atomic::Ordering;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::RunTracker;

/// What shutdown could not finish within the grace period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Gateway-run background runs still running (their outcome is lost).
    pub background_runs: usize,
    /// Runs whose completion event was still owed to a caller when their
    /// poller stopped.
    pub run_watches: usize,
    /// Forwarded deliveries not delivered (queued, backing off or in
    /// flight when the grace ran out).
    pub forwards: u64,
}

impl ShutdownReport {
    /// True when everything finished.
    pub fn is_clean(&self) -> bool {
        *self == Self::default()
    }
}

impl RunTracker {
    /// Ends every open stream with `SHUTTING_DOWN` and stops the pollers.
    /// Idempotent.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
        self.pollers.close();
        self.background_runs.close();
    }

    /// Cancelled once shutdown begins (for other long-lived streams, such
    /// as health watches, to end with the same reason).
    pub fn shutdown_signal(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Lets background runs, then queued forwards, finish until `deadline`;
    /// logs and counts what could not. Begins shutdown if not begun.
    pub async fn drain(&self, deadline: Instant) -> ShutdownReport {
        self.begin_shutdown();
        // Pollers stop at once (they only wait on a sleep or a poll).
        let _ = tokio::time::timeout_at(deadline, self.pollers.wait()).await;
        let _ = tokio::time::timeout_at(deadline, self.background_runs.wait()).await;
        let background_runs = self.background_runs.len();
        let forwards = match &self.forwarding {
            Some(forwarding) => forwarding.forwarder.drain(deadline).await.abandoned,
            None => 0,
        };
        let report = ShutdownReport {
            background_runs,
            run_watches: self.abandoned_watches.load(Ordering::Relaxed),
            forwards,
        };
        let metrics = flowgate_telemetry::metrics();
        for (kind, count) in [
            ("background_run", report.background_runs as u64),
            ("run_watch", report.run_watches as u64),
            ("forward", report.forwards),
        ] {
            if count > 0 {
                metrics.shutdown_abandoned(kind, count);
            }
        }
        if !report.is_clean() {
            tracing::warn!(
                background_runs = report.background_runs,
                run_watches = report.run_watches,
                forwards = report.forwards,
                "shutdown grace ran out: work abandoned"
            );
        }
        report
    }
}
