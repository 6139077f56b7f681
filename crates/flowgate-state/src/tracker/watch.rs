//! Pollers: one per run however many streams watch it.
//!
//! A poller's registration (its key in the watcher map) is held by a
//! [`WatcherGuard`], released on every exit, a panic included, so a run is
//! never left registered with nobody polling it. The guard also reports
//! the poller's fate to the run's streams: a poller that gave up, hit
//! `max_watch` or died ends them with a typed error instead of leaving
//! them waiting (see [`WatchEnd`]).
//!
//! Only the holder of a run's owner lease polls its upstream (one poller
//! per run across replicas); a poller without it follows the record and
//! claims the lease once it is released or lapses (see `owners`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use flowgate_core::{Deadline, RunId};
use tokio::sync::watch;
use tracing::Instrument as _;

use super::{
    Fate, POLL_TIMEOUT, RunTracker, WatchEnd, change, instant_after, linked_span,
    owners::OwnerLease,
};

/// One registered poller: an id (a later poller of the same run gets
/// another) and where its fate is reported.
#[derive(Debug)]
pub(super) struct Watcher {
    id: u64,
    fate: watch::Sender<Option<WatchEnd>>,
}

/// The runs being polled, by encoded run id.
#[derive(Debug, Default)]
pub(super) struct Watchers {
    map: Mutex<HashMap<String, Watcher>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Watchers {
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<String, Watcher>> {
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many runs are being polled.
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Releases a poller's key however the poller ends, and tells the run's
/// streams when it ended without the run ending.
pub(super) struct WatcherGuard {
    tracker: Arc<RunTracker>,
    key: String,
    id: u64,
    end: Option<WatchEnd>,
    /// Set on an orderly exit that owes the streams nothing.
    quiet: bool,
}

impl WatcherGuard {
    fn finish(mut self, end: Option<WatchEnd>) {
        self.quiet = end.is_none();
        self.end = end;
    }
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        let mut watchers = self.tracker.watchers.lock();
        if watchers.get(&self.key).is_some_and(|w| w.id == self.id)
            && let Some(watcher) = watchers.remove(&self.key)
        {
            // Not finished: the poller panicked (or its task was dropped).
            let end = match (self.end.take(), self.quiet) {
                (Some(end), _) => Some(end),
                (None, true) => None,
                (None, false) => {
                    tracing::error!(run_id = %self.key, "run poller ended unexpectedly");
                    Some(WatchEnd::Failed)
                }
            };
            if let Some(end) = end {
                watcher.fate.send_replace(Some(end));
            }
        }
    }
}

/// Why a poll loop stopped.
enum PollExit {
    /// The run ended, is gone, or nobody needs it followed.
    Done,
    /// The gateway is shutting down.
    ShuttingDown,
    /// It reported this to the streams.
    Ended(WatchEnd),
}

impl RunTracker {
    /// Starts the run's poller unless one runs already (or the run cannot
    /// be polled: gateway-run background runs publish by themselves).
    /// Returns the poller's fate, `None` when the run is not polled.
    pub(super) fn ensure_watcher(self: &Arc<Self>, run_id: &RunId) -> Option<Fate> {
        self.watch_with(run_id, None)
    }

    /// [`Self::ensure_watcher`], the new poller starting with `lease` (the
    /// run's owner lease, just taken over); a lease nobody here can use is
    /// released (a poller already here claims it itself).
    pub(super) fn watch_with(
        self: &Arc<Self>,
        run_id: &RunId,
        lease: Option<OwnerLease>,
    ) -> Option<Fate> {
        let release = |lease: Option<OwnerLease>| {
            if let Some(lease) = lease {
                tokio::spawn(lease.release());
            }
        };
        if run_id.is_local() || self.shutdown.is_cancelled() {
            release(lease);
            return None;
        }
        let key = run_id.encode();
        let id = {
            let mut watchers = self.watchers.lock();
            if let Some(watcher) = watchers.get(&key) {
                release(lease);
                return Some(watcher.fate.subscribe());
            }
            if watchers.len() >= self.config.max_watchers {
                tracing::warn!(
                    max_watchers = self.config.max_watchers,
                    "run not polled: too many runs are polled already"
                );
                release(lease);
                // Nothing will make the run progress here: its streams end
                // at once instead of waiting out `max_watch`.
                let (_, ended) = watch::channel(Some(WatchEnd::WatchersExhausted));
                return Some(ended);
            }
            let id = self
                .watchers
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (fate, receiver) = watch::channel(None);
            watchers.insert(key.clone(), Watcher { id, fate });
            (id, receiver)
        };
        let (id, receiver) = id;
        let guard = WatcherGuard {
            tracker: Arc::clone(self),
            key,
            id,
            end: None,
            quiet: false,
        };
        let tracker = Arc::clone(self);
        let run_id = run_id.clone();
        self.pollers.spawn(async move {
            let trace_parent = tracker
                .store
                .get(&run_id)
                .await
                .ok()
                .flatten()
                .and_then(|record| record.trace_parent);
            let span = linked_span("flowgate.poll", trace_parent.as_deref());
            let mut lease = lease;
            let exit = tracker
                .poll(&run_id, &guard, &mut lease)
                .instrument(span)
                .await;
            // Shutting down, the lease lapses (dropped, not released): the
            // run is polled on by another replica once it does.
            if !matches!(exit, PollExit::ShuttingDown)
                && let Some(lease) = lease
            {
                lease.release().await;
            }
            match exit {
                PollExit::Done => guard.finish(None),
                PollExit::ShuttingDown => {
                    if tracker
                        .store
                        .get(&run_id)
                        .await
                        .ok()
                        .flatten()
                        .is_some_and(|r| r.callback_url.is_some() && !r.status.is_terminal())
                    {
                        tracker
                            .abandoned_watches
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    guard.finish(Some(WatchEnd::ShuttingDown));
                }
                PollExit::Ended(end) => guard.finish(Some(end)),
            }
        });
        Some(receiver)
    }

    /// True when nobody needs the run followed any more; then the poller's
    /// key is released at once, under the same lock `ensure_watcher`
    /// takes, so a stream subscribing meanwhile starts a new poller
    /// rather than joining one that is leaving.
    fn release_if_unwanted(
        &self,
        run_id: &RunId,
        guard: &WatcherGuard,
        owes_forward: bool,
    ) -> bool {
        let mut watchers = self.watchers.lock();
        if owes_forward || self.store.subscribers(run_id) > 0 {
            return false;
        }
        if watchers.get(&guard.key).is_some_and(|w| w.id == guard.id) {
            watchers.remove(&guard.key);
        }
        true
    }

    /// Polls while this replica holds the run's owner lease (`lease`);
    /// while another replica holds it, only follows the record (its
    /// changes come from that replica) and claims the lease when it is
    /// released or lapses.
    async fn poll(
        &self,
        run_id: &RunId,
        guard: &WatcherGuard,
        lease: &mut Option<OwnerLease>,
    ) -> PollExit {
        let Some(provider) = self.gateway.provider(&run_id.provider).cloned() else {
            return PollExit::Ended(WatchEnd::Failed);
        };
        let until = instant_after(self.config.max_watch);
        let mut interval = self.config.poll_initial;
        let mut failures = 0;
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return PollExit::ShuttingDown,
                () = tokio::time::sleep(interval) => {}
            }
            let record = match self.store.get(run_id).await {
                Ok(Some(record)) => record,
                Ok(None) => return PollExit::Ended(WatchEnd::RunLost),
                Err(error) => {
                    // The store is out of reach: try again next round, within
                    // the watch's bound.
                    super::log_store_failure(&error);
                    if tokio::time::Instant::now() >= until {
                        return PollExit::Ended(WatchEnd::Limit);
                    }
                    continue;
                }
            };
            if record.status.is_terminal()
                || self.release_if_unwanted(run_id, guard, record.callback_url.is_some())
            {
                return PollExit::Done;
            }
            if tokio::time::Instant::now() >= until {
                return PollExit::Ended(WatchEnd::Limit);
            }
            if lease.as_ref().is_none_or(OwnerLease::is_lost) {
                *lease = match OwnerLease::claim(self, run_id).await {
                    Ok(held) => held,
                    Err(error) => {
                        super::log_store_failure(&error);
                        None
                    }
                };
                if lease.is_none() {
                    // Another replica polls it (or the store is out of
                    // reach): look again next round.
                    interval = next_interval(interval, self.config.poll_max);
                    continue;
                }
            }
            let polled = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return PollExit::ShuttingDown,
                polled = provider.run_status(&run_id.upstream_id, Deadline::after(POLL_TIMEOUT)) => polled,
            };
            match polled {
                Ok(Some(outcome)) => {
                    failures = 0;
                    if let Some(status) = outcome.status
                        && let Err(error) = self.apply(run_id, change(outcome, status)).await
                    {
                        // Polled again next round.
                        super::log_store_failure(&error);
                    }
                }
                // No status endpoint: callbacks (or nothing) will tell.
                Ok(None) => return PollExit::Done,
                Err(error) => {
                    failures += 1;
                    tracing::warn!(
                        provider = provider.name(),
                        reason = %error.reason,
                        failures,
                        "run status poll failed"
                    );
                    if failures >= self.config.max_poll_failures {
                        tracing::warn!(
                            provider = provider.name(),
                            failures,
                            "run poller gave up; its streams end with RUN_POLL_GAVE_UP"
                        );
                        return PollExit::Ended(WatchEnd::PollGaveUp { failures });
                    }
                }
            }
            interval = next_interval(interval, self.config.poll_max);
        }
    }
}

/// Intervals grow by half each poll up to `max`.
fn next_interval(interval: Duration, max: Duration) -> Duration {
    interval.saturating_add(interval / 2).min(max)
}
