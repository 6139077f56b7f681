//! A StreamStatus stream's view of a run, and why a stream may end before
//! the run's terminal state.
//!
//! Every stream is bounded: it ends after the terminal state, or with a
//! typed error when the gateway can no longer follow the run (its poller
//! gave up or failed, the run left the store, the gateway is shutting
//! down, no poller could be started because the replica already polls
//! as many runs as it may), or when it has been open for
//! `runs.max_watch`. None of these
//! waits for the caller's deadline.

use std::time::Duration;

use flowgate_core::{ErrorClass, GatewayError, reason::Reason};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{RunRecord, Subscription};

/// Why the gateway stopped following a run before its terminal state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEnd {
    /// The poller failed `max_poll_failures` consecutive status polls.
    PollGaveUp {
        /// Consecutive failed polls.
        failures: u32,
    },
    /// The poller, or the task running the run in the background, ended
    /// without an outcome (it panicked).
    Failed,
    /// The run's record left the store (evicted) while being followed.
    RunLost,
    /// Followed for `max_watch`.
    Limit,
    /// Not followed at all: this replica already polls `max_watchers` runs.
    WatchersExhausted,
    /// The gateway is shutting down.
    ShuttingDown,
}

/// `RUN_POLL_GAVE_UP` (UNAVAILABLE): status polls kept failing.
pub const REASON_POLL_GAVE_UP: &str = Reason::RunPollGaveUp.as_str();
/// `RUN_WATCH_FAILED` (UNAVAILABLE): the gateway lost track of the run.
pub const REASON_WATCH_FAILED: &str = Reason::RunWatchFailed.as_str();
/// `RUN_WATCH_LIMIT` (DEADLINE_EXCEEDED): the stream reached `max_watch`.
pub const REASON_WATCH_LIMIT: &str = Reason::RunWatchLimit.as_str();
/// `RUN_WATCHERS_EXHAUSTED` (UNAVAILABLE, RetryInfo): no poller could be
/// started for the run.
pub const REASON_WATCHERS_EXHAUSTED: &str = Reason::RunWatchersExhausted.as_str();
/// How long a stream refused for [`WatchEnd::WatchersExhausted`] is told to
/// wait before reopening.
pub const WATCHERS_EXHAUSTED_RETRY: Duration = Duration::from_secs(5);
/// `SHUTTING_DOWN` (UNAVAILABLE): this replica is shutting down.
pub const REASON_SHUTTING_DOWN: &str = Reason::ShuttingDown.as_str();

impl WatchEnd {
    /// The error a stream ends with.
    pub fn error(&self, max_watch: Duration) -> GatewayError {
        match self {
            Self::PollGaveUp { failures } => GatewayError::new(
                ErrorClass::Unavailable,
                REASON_POLL_GAVE_UP,
                format!(
                    "the run's status could not be polled ({failures} consecutive failures); \
                     open the stream again to resume polling"
                ),
            )
            .with_metadata("failures", failures.to_string()),
            Self::Failed => GatewayError::new(
                ErrorClass::Unavailable,
                REASON_WATCH_FAILED,
                "the gateway lost track of the run (its watcher ended unexpectedly); \
                 open the stream again",
            ),
            Self::RunLost => GatewayError::new(
                ErrorClass::Unavailable,
                REASON_WATCH_FAILED,
                "the run is no longer held by this gateway replica",
            ),
            Self::Limit => GatewayError::new(
                ErrorClass::DeadlineExceeded,
                REASON_WATCH_LIMIT,
                format!(
                    "the stream reached the gateway's limit ({} s, runs.max_watch); \
                     open a new stream to keep following the run",
                    max_watch.as_secs()
                ),
            ),
            Self::WatchersExhausted => GatewayError::new(
                ErrorClass::Unavailable,
                REASON_WATCHERS_EXHAUSTED,
                "this gateway replica already polls as many runs as it may; \
                 open the stream again later or on another replica",
            )
            .with_retry_after(Some(WATCHERS_EXHAUSTED_RETRY)),
            Self::ShuttingDown => shutting_down(),
        }
    }
}

/// UNAVAILABLE, reason `SHUTTING_DOWN`: the caller should reconnect (to
/// another replica).
pub fn shutting_down() -> GatewayError {
    GatewayError::new(
        ErrorClass::Unavailable,
        REASON_SHUTTING_DOWN,
        "this gateway replica is shutting down; reconnect",
    )
    .with_retry_after(Some(Duration::ZERO))
}

/// The fate of whatever makes the run progress (its poller or background
/// task): `Some` once it ended without an outcome.
pub(super) type Fate = watch::Receiver<Option<WatchEnd>>;

/// A run's states: the current one first, then every change, ending after
/// the terminal state or with the error of a [`WatchEnd`].
#[derive(Debug)]
pub struct RunStream {
    pub(super) first: Option<RunRecord>,
    pub(super) subscription: Subscription,
    pub(super) fate: Option<Fate>,
    pub(super) shutdown: CancellationToken,
    pub(super) until: Instant,
    pub(super) max_watch: Duration,
    pub(super) done: bool,
}

/// Resolves with the end `fate` reports. A fate whose sender is gone
/// without reporting one ended normally (the run's own record says how):
/// it never resolves.
async fn ended(fate: &mut Option<Fate>) -> WatchEnd {
    if let Some(receiver) = fate
        && let Ok(end) = receiver.wait_for(Option::is_some).await
        && let Some(end) = end.clone()
    {
        return end;
    }
    std::future::pending().await
}

impl RunStream {
    /// The `traceparent` of the call that started the run, when it was
    /// traced (a stream's span links back to it).
    pub fn trace_parent(&self) -> Option<&str> {
        self.first.as_ref()?.trace_parent.as_deref()
    }

    /// The next state; an error when the run cannot be followed further
    /// (see [`WatchEnd`]); `None` after the terminal state or an error.
    pub async fn next(&mut self) -> Option<Result<RunRecord, GatewayError>> {
        if self.done {
            return None;
        }
        let next = match self.first.take() {
            Some(record) => Ok(record),
            None => tokio::select! {
                biased;
                () = self.shutdown.cancelled() => Err(WatchEnd::ShuttingDown),
                record = self.subscription.next() => record.ok_or(WatchEnd::RunLost),
                end = ended(&mut self.fate) => Err(end),
                () = tokio::time::sleep_until(self.until) => Err(WatchEnd::Limit),
            },
        };
        Some(match next {
            Ok(record) => {
                self.done = record.status.is_terminal();
                Ok(record)
            }
            Err(end) => {
                self.done = true;
                Err(end.error(self.max_watch))
            }
        })
    }
}
