//! Gateway-run async runs: dialects without an async mode (AI Tutor) run
//! the synchronous call in a tracked background task and publish its
//! outcome. The call is checked up front ([`flowgate_core::Gateway::check`]) and sent
//! through [`flowgate_core::Gateway::send`], the path every upstream call takes.
//!
//! A task that ends without publishing (it panicked) marks the
//! run lost: its streams, and any stream opened on it later, end with
//! UNAVAILABLE, reason `RUN_WATCH_FAILED`, instead of waiting.
//!
//! The replica holds the run's owner lease while the call runs and
//! releases it once the outcome is recorded; if the replica dies, the
//! lease lapses and a sweep on another replica fails the run with
//! `GATEWAY_REPLICA_LOST` (see `owners`).

use std::{sync::Arc, time::Duration};

use flowgate_core::{
    Deadline, ErrorClass, GatewayError, Invocation, Invoked, Provider, RunError, RunId, RunOutcome,
    RunStatus,
};
use tokio::sync::watch;
use tracing::Instrument as _;

use super::{POLL_TIMEOUT, RunTracker, WatchEnd, change, linked_span, owners::OwnerLease};
use crate::{RunChange, RunRecord};

/// Tries to record a background run's outcome while the store is out of
/// reach: this many times, waiting from the first delay, doubling up to the
/// last (about 30 s in all).
const PUBLISH_ATTEMPTS: u32 = 8;
const PUBLISH_RETRY_FIRST: Duration = Duration::from_millis(250);
const PUBLISH_RETRY_MAX: Duration = Duration::from_secs(8);

/// Marks the run lost unless the task published its outcome.
struct BackgroundGuard {
    tracker: Arc<RunTracker>,
    run_id: RunId,
    fate: watch::Sender<Option<WatchEnd>>,
    published: bool,
}

impl Drop for BackgroundGuard {
    fn drop(&mut self) {
        let key = self.run_id.encode();
        let mut runs = self.tracker.background_fates.lock();
        runs.remove(&key);
        if !self.published {
            tracing::error!(run_id = %key, "background run ended without an outcome");
            self.tracker.lost_runs.insert(key, ());
            self.fate.send_replace(Some(WatchEnd::Failed));
        }
    }
}

impl RunTracker {
    /// AI Tutor async: validate now, run the synchronous call in the
    /// background, publish its outcome.
    pub(super) async fn run_in_background(
        self: &Arc<Self>,
        provider: Arc<dyn Provider>,
        mut invocation: Invocation,
        callback_url: Option<String>,
        trace_parent: Option<String>,
    ) -> Result<Invoked, GatewayError> {
        invocation.async_delivery = None;
        self.gateway
            .check(&provider, &invocation, Deadline::after(POLL_TIMEOUT))
            .await?;
        let permit = Arc::clone(&self.background)
            .try_acquire_owned()
            .map_err(|_| {
                GatewayError::new(
                ErrorClass::RateLimited,
                flowgate_core::reason::Reason::BackgroundRunsExhausted,
                format!(
                    "{} gateway-run async runs are in flight (the configured maximum); retry later",
                    self.config.max_background_runs
                ),
            )
            .with_quota("flowgate:background_runs", "gateway-run async runs")
            })?;
        let run_id = RunId::local(provider.name());
        // Owned by this replica while the call runs: if it dies, another
        // replica sees the lease lapse and fails the run.
        let lease = OwnerLease::claim(self, &run_id)
            .await
            .map_err(super::store_unavailable)?
            .ok_or_else(|| GatewayError::internal("a fresh run id was already owned"))?;
        let mut record = RunRecord::new(run_id.clone(), RunStatus::Running);
        record.provider_kind = Some(provider.kind());
        record.callback_url = callback_url;
        let trace_link = trace_parent.clone();
        record.trace_parent = trace_parent;
        if let Err(error) = self.store.insert(record).await {
            lease.release().await;
            return Err(super::store_unavailable(error));
        }
        let (fate, _) = watch::channel(None);
        self.background_fates
            .lock()
            .insert(run_id.encode(), fate.clone());
        let guard = BackgroundGuard {
            tracker: Arc::clone(self),
            run_id: run_id.clone(),
            fate,
            published: false,
        };
        let tracker = Arc::clone(self);
        let background_id = run_id.clone();
        let background_provider = Arc::clone(&provider);
        let span = linked_span("flowgate.background_run", trace_link.as_deref());
        self.background_runs.spawn(
            async move {
                // Moved whole into the task (not just the field set below).
                let mut guard = guard;
                let _permit = permit;
                // The provider's own timeout (its documented maximum duration)
                // bounds the run; the caller is no longer waiting.
                // Sent like every other call: an upstream that refuses the
                // inputs invalidates the workflow's cached schema.
                let result = tracker
                    .gateway
                    .send(&background_provider, &invocation, Deadline::NONE)
                    .await;
                let update = match result {
                    Ok(outcome) => {
                        let status = outcome.status.unwrap_or(RunStatus::Completed);
                        change(outcome, status)
                    }
                    Err(error) => RunChange {
                        status: RunStatus::Failed,
                        output: None,
                        error: Some(RunError {
                            code: error.reason.clone(),
                            message: error.message.clone(),
                        }),
                        usage: Default::default(),
                    },
                };
                // The outcome was paid for: keep trying a store that is
                // briefly out of reach (bounded; then the run is lost).
                let mut delay = PUBLISH_RETRY_FIRST;
                for attempt in 1..=PUBLISH_ATTEMPTS {
                    match tracker.apply(&background_id, update.clone()).await {
                        Ok(()) => {
                            guard.published = true;
                            lease.release().await;
                            break;
                        }
                        Err(error) => {
                            super::log_store_failure(&error);
                            if attempt < PUBLISH_ATTEMPTS {
                                tokio::time::sleep(delay).await;
                                delay = (delay * 2).min(PUBLISH_RETRY_MAX);
                            }
                        }
                    }
                }
            }
            .instrument(span),
        );
        Ok(Invoked {
            provider,
            run_id,
            outcome: RunOutcome {
                status: Some(RunStatus::Running),
                ..RunOutcome::default()
            },
        })
    }
}
