//! The run tracker: one async model for every dialect.
//!
//! Only async runs come here. A synchronous Invoke goes from the edge
//! straight to [`Gateway::invoke`] and is not recorded; [`RunTracker::start`]
//! resolves the provider once and starts the run through the same gateway
//! ([`Gateway::check`], then [`Gateway::send`]), whatever the dialect.
//!
//! | dialect | async upstream | how the tracker learns the outcome |
//! |---|---|---|
//! | Knouds | `?async=true` → execution id | polls `GET /api/executions/{id}`; also ingests its signed webhooks |
//! | Fetch Hive | callback delivery | with a public ingress URL: the callback comes to flowgate (the caller's URL is kept for forwarding); without one: the caller's URL is passed through and the tracker polls `GET /workflow_runs/{id}` |
//! | AI Tutor | none | the tracker runs the synchronous call in the background and publishes its outcome |
//!
//! Polling is shared: one poller per run however many streams watch it,
//! and it stops when nobody is watching (unless a completion event still
//! has to be forwarded). Completion events are forwarded to the caller's
//! `callback_url` re-signed with Standard Webhooks, at least once.

//!
//! Nothing here can wedge a run: pollers release their registration in a
//! drop guard and report why they stopped, background runs that die mark
//! the run lost, and every stream is bounded (see [`RunStream`]). At
//! shutdown streams end at once with `SHUTTING_DOWN`, pollers stop, and
//! background runs and queued forwards get the grace period
//! ([`RunTracker::drain`]).
//!
//! Across replicas, a gateway-run call and a run's poller are owned by the
//! replica holding the run's owner lease; every replica sweeps lapsed
//! leases, failing a dead replica's gateway-run runs with
//! `GATEWAY_REPLICA_LOST` and polling its polled runs on (see `owners`);
//! a queued forward is held under a lease of its own and queued again by
//! another replica when its replica dies (see `forward`).

mod background;
mod config;
mod forward;
#[cfg(test)]
mod forward_tests;
#[cfg(test)]
mod owner_tests;
mod owners;
mod shutdown;
mod stream;
#[cfg(test)]
mod tests;
mod watch;
mod webhooks;

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, MutexGuard, atomic::AtomicUsize},
    time::Duration,
};

use flowgate_core::{
    AsyncMode, Deadline, ErrorClass, FieldViolation, Gateway, GatewayError, Invocation, Invoked,
    Provider, RunId, RunOutcome, RunStatus, WorkflowTarget, reason::Reason,
};
use flowgate_webhook::{Verifier, VerifierConfig};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use config::{Forwarding, IngressConfig, SigningSecrets, TrackerConfig};
pub use shutdown::ShutdownReport;
pub use stream::{
    REASON_POLL_GAVE_UP, REASON_SHUTTING_DOWN, REASON_WATCH_FAILED, REASON_WATCH_LIMIT,
    REASON_WATCHERS_EXHAUSTED, RunStream, WATCHERS_EXHAUSTED_RETRY, WatchEnd, shutting_down,
};
pub use webhooks::{CallbackRejection, Verification, VerifyKey};

use crate::{RunChange, RunRecord, RunStore, StoreUnavailable};
use stream::Fate;

/// The fates of running background runs, by encoded run id.
#[derive(Debug, Default)]
struct BackgroundFates(Mutex<HashMap<String, tokio::sync::watch::Sender<Option<WatchEnd>>>>);

impl BackgroundFates {
    fn lock(
        &self,
    ) -> MutexGuard<'_, HashMap<String, tokio::sync::watch::Sender<Option<WatchEnd>>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Background runs that ended without an outcome remembered this long, so
/// a stream opened on one later ends at once.
const LOST_RUNS_TTL: Duration = Duration::from_secs(24 * 3600);

/// See the module docs. Only async runs are tracked.
pub struct RunTracker {
    gateway: Arc<Gateway>,
    store: Arc<dyn RunStore>,
    config: TrackerConfig,
    ingress: IngressConfig,
    forwarding: Option<Forwarding>,
    ingress_verifier: Verifier,
    rpc_verifier: Verifier,
    watchers: watch::Watchers,
    background: Arc<Semaphore>,
    background_fates: BackgroundFates,
    lost_runs: moka::sync::Cache<String, ()>,
    /// Cancelled when shutdown begins: streams end, pollers stop.
    shutdown: CancellationToken,
    pollers: TaskTracker,
    background_runs: TaskTracker,
    /// Pollers stopped at shutdown while their run still owed a forward.
    abandoned_watches: AtomicUsize,
    /// This replica's owner-lease tokens.
    owner_tokens: owners::OwnerTokens,
}

impl fmt::Debug for RunTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunTracker")
            .field("store", &self.store)
            .field("config", &self.config)
            .field("forwarding", &self.forwarding.is_some())
            .field("polled_runs", &self.watchers.len())
            .field("background_runs", &self.background_runs.len())
            .finish_non_exhaustive()
    }
}

/// A root span for background work, linked to the trace of the call that
/// started the run (when it was traced).
fn linked_span(name: &'static str, trace_parent: Option<&str>) -> tracing::Span {
    let link = trace_parent.and_then(flowgate_telemetry::TraceLink::parse);
    flowgate_telemetry::span_with_link(name, link.as_ref())
}

/// How long one status poll may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(30);

/// `after` from now; a bound too far to represent is a year away.
fn instant_after(after: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(after)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

/// The reason of every answer caused by an unreachable shared state store.
pub const REASON_STATE_STORE_UNAVAILABLE: &str = Reason::StateStoreUnavailable.as_str();
/// What callers are told to wait before retrying then.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(1);
/// At most one log line per this long about an unreachable store.
const STORE_LOG_EVERY: Duration = Duration::from_secs(10);

/// UNAVAILABLE, reason [`REASON_STATE_STORE_UNAVAILABLE`], retry after a
/// second; the cause goes to a rate-limited log line, not to the caller.
pub fn store_unavailable(error: StoreUnavailable) -> GatewayError {
    log_store_failure(&error);
    GatewayError::new(
        ErrorClass::Unavailable,
        REASON_STATE_STORE_UNAVAILABLE,
        "the shared run state store is unreachable; retry shortly",
    )
    .with_retry_after(Some(STORE_RETRY_AFTER))
}

/// Logs a store failure, at most once per [`STORE_LOG_EVERY`] (counting the
/// ones left out).
fn log_store_failure(error: &StoreUnavailable) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_LOGGED: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let last = LAST_LOGGED.load(Ordering::Relaxed);
    if now >= last + STORE_LOG_EVERY.as_secs()
        && LAST_LOGGED
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
        tracing::warn!(%error, suppressed, "state store unavailable");
    } else {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
    }
}

fn change(outcome: RunOutcome, status: RunStatus) -> RunChange {
    RunChange {
        status,
        output: outcome.output,
        error: outcome.error,
        usage: outcome.usage,
    }
}

impl RunTracker {
    /// A tracker over `gateway`, keeping runs in `store`.
    pub fn new(
        gateway: Arc<Gateway>,
        store: Arc<dyn RunStore>,
        config: TrackerConfig,
        ingress: IngressConfig,
        forwarding: Option<Forwarding>,
    ) -> Arc<Self> {
        let verifier = |namespace: &str| {
            let verifier = Verifier::new(VerifierConfig {
                tolerance: ingress.tolerance,
                ..VerifierConfig::default()
            });
            match &ingress.replay_store {
                Some(store) => verifier.with_shared_replay(Arc::clone(store), namespace),
                None => verifier,
            }
        };
        let tracker = Arc::new(Self {
            background: Arc::new(Semaphore::new(config.max_background_runs.max(1))),
            ingress_verifier: verifier("ingress"),
            rpc_verifier: verifier("verify_webhook"),
            gateway,
            store,
            config,
            ingress,
            forwarding,
            watchers: watch::Watchers::default(),
            background_fates: BackgroundFates::default(),
            lost_runs: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(LOST_RUNS_TTL)
                .build(),
            shutdown: CancellationToken::new(),
            pollers: TaskTracker::new(),
            background_runs: TaskTracker::new(),
            abandoned_watches: AtomicUsize::new(0),
            owner_tokens: owners::OwnerTokens::new(),
        });
        tracker.start_sweeper();
        tracker
    }

    /// Starts an async run (`invocation.async_delivery` set) and records
    /// it, with whatever will observe its completion (see the module docs).
    /// The provider is resolved once, here; the upstream call goes through
    /// [`Gateway::send`] like every other. Synchronous calls are not the
    /// tracker's business: the edge sends them to [`Gateway::invoke`], and
    /// one without async delivery is refused here with INTERNAL.
    pub async fn start(
        self: &Arc<Self>,
        target: &WorkflowTarget,
        invocation: Invocation,
        deadline: Deadline,
        trace_parent: Option<String>,
    ) -> Result<Invoked, GatewayError> {
        let resolved = self.gateway.resolve(target).cloned();
        self.start_on(resolved, invocation, deadline, trace_parent)
            .await
    }

    /// [`RunTracker::start`] with the target already resolved
    /// ([`Gateway::resolve`]) by a caller that needed the provider first
    /// (for its capability check): one resolution per call. A failed
    /// resolution is answered where `start` would answer it, after the
    /// request's own checks.
    pub async fn start_on(
        self: &Arc<Self>,
        resolved: Result<Arc<dyn Provider>, GatewayError>,
        mut invocation: Invocation,
        deadline: Deadline,
        trace_parent: Option<String>,
    ) -> Result<Invoked, GatewayError> {
        let Some(delivery) = invocation.async_delivery.clone() else {
            return Err(GatewayError::internal(
                "a synchronous call reached the run tracker",
            ));
        };
        // The caller's URL, before any is replaced by the gateway's ingress.
        let refused = invocation.callback_violations(self.gateway.callback_policy());
        if !refused.is_empty() {
            return Err(GatewayError::invalid_argument(refused));
        }
        let provider = resolved?;
        // A run that cannot be recorded is not started (it would cost
        // credits and nobody could follow it).
        self.store.check().await.map_err(store_unavailable)?;
        let caller_url = delivery.callback_url;
        let ingress_url = self.ingress.public_url.as_deref().map(|base| {
            format!(
                "{}/webhooks/{}",
                base.trim_end_matches('/'),
                provider.name()
            )
        });
        // A callback-mode dialect delivers to the URL in the request: with
        // no public ingress that is the caller's own URL, passed through.
        let callback_mode = provider.async_mode() == AsyncMode::Callback;
        let passes_through = callback_mode && ingress_url.is_none();
        if caller_url.is_some() && !passes_through && self.forwarding.is_none() {
            return Err(GatewayError::invalid_argument(vec![FieldViolation::new(
                "async_options.callback_url",
                "this gateway does not forward callbacks (webhooks.signing_secret_env is not configured)",
            )]));
        }
        if !provider.native_async() {
            return self
                .run_in_background(provider, invocation, caller_url, trace_parent)
                .await;
        }
        let forward_to = if passes_through { None } else { caller_url };
        if callback_mode && let Some(url) = ingress_url {
            invocation.async_delivery = Some(flowgate_core::AsyncDelivery {
                callback_url: Some(url),
            });
        }
        let mut invoked = self
            .gateway
            .invoke_on(&provider, &invocation, deadline)
            .await?;
        // A completion event is owed to the caller: watch the run until it
        // ends, even if nobody streams it and the provider's own callback
        // never reaches the ingress.
        let watch = forward_to.is_some();
        self.record(&invoked, forward_to, trace_parent).await;
        if callback_mode && !passes_through {
            // The callback comes to flowgate: the secret is the gateway's
            // business, not the caller's.
            invoked.outcome.webhook_secret = None;
        }
        if watch {
            self.ensure_watcher(&invoked.run_id);
        }
        Ok(invoked)
    }

    async fn record(
        &self,
        invoked: &Invoked,
        callback_url: Option<String>,
        trace_parent: Option<String>,
    ) {
        let outcome = &invoked.outcome;
        let mut record = RunRecord::new(
            invoked.run_id.clone(),
            outcome.status.unwrap_or(RunStatus::Running),
        );
        record.provider_kind = Some(invoked.provider.kind());
        record.output = outcome.output.clone();
        record.error = outcome.error.clone();
        record.usage = outcome.usage.clone();
        record.webhook_secret = outcome.webhook_secret.clone();
        record.callback_url = callback_url;
        record.trace_parent = trace_parent;
        let terminal = record.status.is_terminal();
        let forward = terminal.then(|| record.clone());
        if let Err(error) = self.store.insert(record).await {
            // The run started upstream: the caller gets its id anyway (a
            // retry would pay twice); a pollable run can still be found.
            tracing::error!(run_id = %invoked.run_id.encode(), %error, "started run not recorded");
        }
        if let Some(record) = forward {
            self.forward(&record);
        }
    }

    /// Applies a change; forwards the completion event once terminal.
    async fn apply(&self, run_id: &RunId, change: RunChange) -> Result<(), StoreUnavailable> {
        if let Some(updated) = self.store.update(run_id, change).await?
            && updated.status.is_terminal()
        {
            self.forward(&updated);
        }
        Ok(())
    }

    /// Follows a run: its current state, then every change (see
    /// [`RunStream`] for how a stream ends).
    pub async fn stream(self: &Arc<Self>, run_id: &str) -> Result<RunStream, GatewayError> {
        if self.shutdown.is_cancelled() {
            return Err(shutting_down());
        }
        let unknown = || {
            GatewayError::not_found(
                flowgate_core::reason::Reason::UnknownRun,
                "flowgate.run",
                run_id,
                "no run with this id is known to the gateway or its provider",
            )
        };
        let id = self.gateway.run_ids().verify(run_id).ok_or_else(unknown)?;
        let (first, subscription) =
            match self.store.subscribe(&id).await.map_err(store_unavailable)? {
                Some(found) => found,
                None => {
                    // Not seen by this replica: runs of pollable dialects can be
                    // found upstream, since the id names provider and upstream id.
                    if id.is_local() {
                        return Err(unknown());
                    }
                    let provider = self.gateway.provider(&id.provider).ok_or_else(unknown)?;
                    let outcome = provider
                        .run_status(&id.upstream_id, Deadline::after(POLL_TIMEOUT))
                        .await?
                        .ok_or_else(unknown)?;
                    let status = outcome.status.unwrap_or(RunStatus::Running);
                    let mut record = RunRecord::new(id.clone(), status);
                    record.provider_kind = Some(provider.kind());
                    record.output = outcome.output;
                    record.error = outcome.error;
                    record.usage = outcome.usage;
                    self.store.insert(record).await.map_err(store_unavailable)?;
                    self.store
                        .subscribe(&id)
                        .await
                        .map_err(store_unavailable)?
                        .ok_or_else(unknown)?
                }
            };
        let fate = if first.status.is_terminal() {
            None
        } else if id.is_local() {
            self.background_fate(&id)?
        } else {
            self.ensure_watcher(&id)
        };
        Ok(RunStream {
            first: Some(first),
            subscription,
            fate,
            shutdown: self.shutdown.clone(),
            until: instant_after(self.config.max_watch),
            max_watch: self.config.max_watch,
            done: false,
        })
    }

    /// The fate of a running background run; an error when it was lost.
    fn background_fate(&self, id: &RunId) -> Result<Option<Fate>, GatewayError> {
        let key = id.encode();
        if self.lost_runs.contains_key(&key) {
            return Err(WatchEnd::Failed.error(self.config.max_watch));
        }
        Ok(self
            .background_fates
            .lock()
            .get(&key)
            .map(tokio::sync::watch::Sender::subscribe))
    }
}
