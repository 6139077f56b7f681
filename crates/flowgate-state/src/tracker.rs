//! The run tracker: one async model for every dialect.
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

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use flowgate_core::{
    Deadline, ErrorClass, FieldViolation, Gateway, GatewayError, Invocation, Invoked, Provider,
    ProviderKind, RunError, RunId, RunOutcome, RunStatus, SecretString, WorkflowTarget,
};
use flowgate_webhook::{
    Delivery, FailureReason, ForwardedEvent, Forwarder, StandardSecret, Verifier, VerifierConfig,
    WebhookEvent, WebhookFailure, WebhookScheme,
};
use http::HeaderMap;
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::{RunChange, RunRecord, RunStore, Subscription};

/// Pacing and bounds of the tracker's background work.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackerConfig {
    /// First poll interval after a run was seen running.
    pub poll_initial: Duration,
    /// Longest poll interval (intervals grow by half each poll).
    pub poll_max: Duration,
    /// Longest a run is polled.
    pub max_watch: Duration,
    /// Consecutive poll failures after which a poller gives up.
    pub max_poll_failures: u32,
    /// Most runs polled at once.
    pub max_watchers: usize,
    /// Most gateway-run background runs (AI Tutor async) at once.
    pub max_background_runs: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            poll_initial: Duration::from_millis(500),
            poll_max: Duration::from_secs(10),
            max_watch: Duration::from_secs(3600),
            max_poll_failures: 10,
            max_watchers: 10_000,
            max_background_runs: 256,
        }
    }
}

/// How provider callbacks reach the gateway.
#[derive(Clone, Debug, Default)]
pub struct IngressConfig {
    /// Public base URL of the ingress listener (what providers call back),
    /// e.g. `https://flowgate.example.com`. Callbacks go to
    /// `{public_url}/webhooks/{provider}`.
    pub public_url: Option<String>,
    /// Webhook secrets configured per provider (Knouds signs with a per-key
    /// secret); several for rotation.
    pub provider_secrets: HashMap<String, Vec<SecretString>>,
    /// Signature timestamp tolerance.
    pub tolerance: Duration,
}

/// Forwarding of completion events to callers.
#[derive(Debug)]
pub struct Forwarding {
    /// The delivery queue.
    pub forwarder: Forwarder,
    /// The secret flowgate signs with (Standard Webhooks).
    pub signing_secret: StandardSecret,
    /// Every secret still accepted by VerifyWebhook for the Standard scheme
    /// (the signing one first, older ones after, for rotation).
    pub verify_secrets: Vec<SecretString>,
}

/// Why a provider callback was refused.
#[derive(Debug)]
pub enum CallbackRejection {
    /// No provider of that name, or it sends no callbacks.
    UnknownProvider,
    /// The delivery did not verify (or no secret can verify it).
    Unverified(FailureReason),
}

/// The outcome of VerifyWebhook.
#[derive(Debug)]
pub enum Verification {
    /// Signature valid; the normalized event and the run it belongs to.
    Valid {
        /// The event.
        event: Box<WebhookEvent>,
        /// The gateway run id, when the provider is known.
        run_id: Option<String>,
    },
    /// Signature invalid, and why.
    Invalid(FailureReason),
}

/// A run's states: the current one first, then every change, ending after
/// the terminal state.
#[derive(Debug)]
pub struct RunStream {
    first: Option<RunRecord>,
    subscription: Subscription,
    done: bool,
}

impl RunStream {
    /// The `traceparent` of the call that started the run, when it was
    /// traced (a stream's span links back to it).
    pub fn trace_parent(&self) -> Option<&str> {
        self.first.as_ref()?.trace_parent.as_deref()
    }

    /// The next state, `None` after the terminal one.
    pub async fn next(&mut self) -> Option<RunRecord> {
        if self.done {
            return None;
        }
        let record = match self.first.take() {
            Some(record) => record,
            None => self.subscription.next().await?,
        };
        self.done = record.status.is_terminal();
        Some(record)
    }
}

/// See the module docs. Only async runs are tracked.
pub struct RunTracker {
    gateway: Arc<Gateway>,
    store: Arc<dyn RunStore>,
    config: TrackerConfig,
    ingress: IngressConfig,
    forwarding: Option<Forwarding>,
    ingress_verifier: Verifier,
    rpc_verifier: Verifier,
    watchers: Mutex<HashSet<String>>,
    background: Arc<Semaphore>,
}

impl fmt::Debug for RunTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunTracker")
            .field("store", &self.store)
            .field("config", &self.config)
            .field("forwarding", &self.forwarding.is_some())
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
        let verifier = || {
            Verifier::new(VerifierConfig {
                tolerance: ingress.tolerance,
                ..VerifierConfig::default()
            })
        };
        Arc::new(Self {
            background: Arc::new(Semaphore::new(config.max_background_runs.max(1))),
            ingress_verifier: verifier(),
            rpc_verifier: verifier(),
            gateway,
            store,
            config,
            ingress,
            forwarding,
            watchers: Mutex::new(HashSet::new()),
        })
    }

    /// The engine behind the tracker.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Runs an invocation and records the run. Synchronous calls are
    /// recorded with their outcome; async ones start whatever will observe
    /// their completion (see the module docs).
    pub async fn invoke(
        self: &Arc<Self>,
        target: &WorkflowTarget,
        mut invocation: Invocation,
        deadline: Deadline,
        trace_parent: Option<String>,
    ) -> Result<Invoked, GatewayError> {
        let Some(delivery) = invocation.async_delivery.clone() else {
            // A synchronous run's answer is the Invoke response itself: it is
            // not recorded (no copy of its output, nothing to evict later).
            return self.gateway.invoke(target, &invocation, deadline).await;
        };
        let provider = Arc::clone(self.gateway.resolve(target)?);
        let caller_url = delivery.callback_url;
        let ingress_url = self.ingress.public_url.as_deref().map(|base| {
            format!(
                "{}/webhooks/{}",
                base.trim_end_matches('/'),
                provider.name()
            )
        });
        let passes_through = provider.kind() == ProviderKind::FetchHive && ingress_url.is_none();
        if caller_url.is_some() && !passes_through && self.forwarding.is_none() {
            return Err(GatewayError::invalid_argument(vec![FieldViolation::new(
                "async_options.callback_url",
                "this gateway does not forward callbacks (webhooks.signing_secret_env is not configured)",
            )]));
        }
        if !provider.native_async() {
            return self
                .run_in_background(provider, target, invocation, caller_url, trace_parent)
                .await;
        }
        let forward_to = if passes_through { None } else { caller_url };
        if provider.kind() == ProviderKind::FetchHive
            && let Some(url) = ingress_url
        {
            invocation.async_delivery = Some(flowgate_core::AsyncDelivery {
                callback_url: Some(url),
            });
        }
        let mut invoked = self.gateway.invoke(target, &invocation, deadline).await?;
        // A completion event is owed to the caller: watch the run until it
        // ends, even if nobody streams it and the provider's own callback
        // never reaches the ingress.
        let watch = forward_to.is_some();
        self.record(&invoked, forward_to, trace_parent).await;
        if !passes_through && provider.kind() == ProviderKind::FetchHive {
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
        record.output = outcome.output.clone();
        record.error = outcome.error.clone();
        record.usage = outcome.usage.clone();
        record.webhook_secret = outcome.webhook_secret.clone();
        record.callback_url = callback_url;
        record.trace_parent = trace_parent;
        let terminal = record.status.is_terminal();
        let forward = terminal.then(|| record.clone());
        self.store.insert(record).await;
        if let Some(record) = forward {
            self.forward(&record);
        }
    }

    /// AI Tutor async: validate now, run the synchronous call in the
    /// background, publish its outcome.
    async fn run_in_background(
        self: &Arc<Self>,
        provider: Arc<dyn Provider>,
        target: &WorkflowTarget,
        mut invocation: Invocation,
        callback_url: Option<String>,
        trace_parent: Option<String>,
    ) -> Result<Invoked, GatewayError> {
        invocation.async_delivery = None;
        self.gateway
            .prepare(target, &invocation, Deadline::after(POLL_TIMEOUT))
            .await?;
        let permit = Arc::clone(&self.background)
            .try_acquire_owned()
            .map_err(|_| {
                GatewayError::new(
                ErrorClass::RateLimited,
                "BACKGROUND_RUNS_EXHAUSTED",
                format!(
                    "{} gateway-run async runs are in flight (the configured maximum); retry later",
                    self.config.max_background_runs
                ),
            )
            .with_quota("flowgate:background_runs", "gateway-run async runs")
            })?;
        let run_id = RunId::local(provider.name());
        let mut record = RunRecord::new(run_id.clone(), RunStatus::Running);
        record.callback_url = callback_url;
        let trace_link = trace_parent.clone();
        record.trace_parent = trace_parent;
        self.store.insert(record).await;
        let tracker = Arc::clone(self);
        let background_id = run_id.clone();
        let background_provider = Arc::clone(&provider);
        let span = linked_span("flowgate.background_run", trace_link.as_deref());
        tokio::spawn(
            async move {
                let _permit = permit;
                // The provider's own timeout (its documented maximum duration)
                // bounds the run; the caller is no longer waiting.
                let result = background_provider
                    .invoke(&invocation, Deadline::NONE)
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
                tracker.apply(&background_id, update).await;
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

    /// Applies a change; forwards the completion event once terminal.
    async fn apply(&self, run_id: &RunId, change: RunChange) {
        if let Some(updated) = self.store.update(run_id, change).await
            && updated.status.is_terminal()
        {
            self.forward(&updated);
        }
    }

    /// Queues the terminal event of `record` for the caller's callback URL.
    fn forward(&self, record: &RunRecord) {
        let (Some(url), Some(forwarding)) = (&record.callback_url, &self.forwarding) else {
            return;
        };
        let Ok(url) = url::Url::parse(url) else {
            tracing::warn!(run_id = %record.run_id.encode(), "callback URL does not parse; not forwarding");
            return;
        };
        let kind = self
            .gateway
            .provider(&record.run_id.provider)
            .map_or(ProviderKind::Knouds, |provider| provider.kind());
        let event = ForwardedEvent {
            run_id: record.run_id.encode(),
            provider: kind,
            upstream_run_id: (!record.run_id.is_local()).then(|| record.run_id.upstream_id.clone()),
            status: record.status,
            output: record.output.clone(),
            error: record.error.clone(),
            time: record.updated_at,
        };
        let delivery = Delivery {
            url,
            event_id: event.event_id(),
            body: event.to_body(),
            secret: forwarding.signing_secret.clone(),
        };
        if let Err(error) = forwarding.forwarder.enqueue(delivery) {
            tracing::warn!(run_id = %record.run_id.encode(), ?error, "callback not queued");
        }
    }

    /// Follows a run: its current state, then every change.
    pub async fn stream(self: &Arc<Self>, run_id: &str) -> Result<RunStream, GatewayError> {
        let unknown = || {
            GatewayError::not_found(
                "UNKNOWN_RUN",
                "flowgate.run",
                run_id,
                "no run with this id is known to the gateway or its provider",
            )
        };
        let id = RunId::decode(run_id).ok_or_else(unknown)?;
        let (first, subscription) = match self.store.subscribe(&id).await {
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
                record.output = outcome.output;
                record.error = outcome.error;
                record.usage = outcome.usage;
                self.store.insert(record).await;
                self.store.subscribe(&id).await.ok_or_else(unknown)?
            }
        };
        if !first.status.is_terminal() {
            self.ensure_watcher(&id);
        }
        Ok(RunStream {
            first: Some(first),
            subscription,
            done: false,
        })
    }

    /// Starts the run's poller unless one runs already (or the run cannot
    /// be polled: gateway-run background runs publish by themselves).
    fn ensure_watcher(self: &Arc<Self>, run_id: &RunId) {
        if run_id.is_local() {
            return;
        }
        let key = run_id.encode();
        {
            let mut watchers = self
                .watchers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if watchers.len() >= self.config.max_watchers || !watchers.insert(key.clone()) {
                return;
            }
        }
        let tracker = Arc::clone(self);
        let run_id = run_id.clone();
        tokio::spawn(async move {
            let trace_parent = tracker
                .store
                .get(&run_id)
                .await
                .and_then(|record| record.trace_parent);
            let span = linked_span("flowgate.poll", trace_parent.as_deref());
            tracker.watch(&run_id).instrument(span).await;
            tracker
                .watchers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&key);
        });
    }

    async fn watch(&self, run_id: &RunId) {
        let Some(provider) = self.gateway.provider(&run_id.provider).cloned() else {
            return;
        };
        let started = Instant::now();
        let mut interval = self.config.poll_initial;
        let mut failures = 0;
        loop {
            tokio::time::sleep(interval).await;
            let Some(record) = self.store.get(run_id).await else {
                return;
            };
            let wanted = self.store.subscribers(run_id) > 0 || record.callback_url.is_some();
            if record.status.is_terminal() || !wanted || started.elapsed() > self.config.max_watch {
                return;
            }
            match provider
                .run_status(&run_id.upstream_id, Deadline::after(POLL_TIMEOUT))
                .await
            {
                Ok(Some(outcome)) => {
                    failures = 0;
                    if let Some(status) = outcome.status {
                        self.apply(run_id, change(outcome, status)).await;
                    }
                }
                Ok(None) => return,
                Err(error) => {
                    failures += 1;
                    tracing::warn!(
                        provider = provider.name(),
                        reason = %error.reason,
                        failures,
                        "run status poll failed"
                    );
                    if failures >= self.config.max_poll_failures {
                        return;
                    }
                }
            }
            interval = interval.mul_f64(1.5).min(self.config.poll_max);
        }
    }

    /// Ingests one provider callback received by the ingress listener.
    pub async fn ingest(
        &self,
        provider_name: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(), CallbackRejection> {
        let provider = self
            .gateway
            .provider(provider_name)
            .ok_or(CallbackRejection::UnknownProvider)?;
        let scheme = WebhookScheme::for_provider(provider.kind())
            .ok_or(CallbackRejection::UnknownProvider)?;
        let secrets = match provider.kind() {
            // Fetch Hive signs with the run's own secret: the body's run id
            // (not yet trusted) only selects which secret to try.
            ProviderKind::FetchHive => match fetchhive_run_id(body) {
                Some(upstream) => self
                    .store
                    .get(&RunId::new(provider_name, upstream))
                    .await
                    .and_then(|record| record.webhook_secret)
                    .into_iter()
                    .collect(),
                None => Vec::new(),
            },
            _ => self
                .ingress
                .provider_secrets
                .get(provider_name)
                .cloned()
                .unwrap_or_default(),
        };
        let verified = self
            .ingress_verifier
            .verify(scheme, headers, body, &secrets, SystemTime::now())
            .map_err(|failure: WebhookFailure| {
                tracing::warn!(
                    provider = provider_name,
                    reason = failure.reason().as_str(),
                    "callback rejected"
                );
                CallbackRejection::Unverified(failure.reason())
            })?;
        let event = verified.event;
        let (Some(upstream), Some(status)) = (event.upstream_run_id.clone(), event.status) else {
            // A test ping or an event without a run: acknowledged, nothing to do.
            return Ok(());
        };
        let run_id = RunId::new(provider_name, upstream);
        if self.store.get(&run_id).await.is_none() {
            self.store
                .insert(RunRecord::new(run_id.clone(), RunStatus::Running))
                .await;
        }
        self.apply(
            &run_id,
            RunChange {
                status,
                output: event.output,
                error: event.error,
                usage: Default::default(),
            },
        )
        .await;
        Ok(())
    }

    /// VerifyWebhook: checks a delivery the caller received.
    pub async fn verify(
        &self,
        scheme: Option<WebhookScheme>,
        provider: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
        key: VerifyKey,
    ) -> Result<Verification, GatewayError> {
        let provider = match provider {
            Some(name) => Some(self.gateway.provider(name).cloned().ok_or_else(|| {
                GatewayError::not_found(
                    "UNKNOWN_PROVIDER",
                    "flowgate.provider",
                    name,
                    format!("no provider named {name:?} is configured"),
                )
            })?),
            None => None,
        };
        let scheme = scheme
            .or_else(|| {
                provider
                    .as_ref()
                    .and_then(|p| WebhookScheme::for_provider(p.kind()))
            })
            .ok_or_else(|| {
                GatewayError::invalid_argument(vec![FieldViolation::new(
                    "scheme",
                    "required: a scheme, or a provider whose dialect signs webhooks",
                )])
            })?;
        let secrets = match key {
            VerifyKey::Secret(secret) => vec![secret],
            VerifyKey::RunId(text) => self.secrets_for_run(scheme, &text).await?,
            VerifyKey::Configured => match scheme {
                WebhookScheme::Standard => self
                    .forwarding
                    .as_ref()
                    .map(|forwarding| forwarding.verify_secrets.clone())
                    .unwrap_or_default(),
                _ => provider
                    .as_ref()
                    .and_then(|p| self.ingress.provider_secrets.get(p.name()).cloned())
                    .unwrap_or_default(),
            },
        };
        if secrets.is_empty() {
            return Err(GatewayError::new(
                ErrorClass::FailedPrecondition,
                "NO_WEBHOOK_SECRET",
                "no secret to verify with: pass one, or a run id whose secret the gateway holds",
            )
            .with_precondition(
                "SECRET",
                scheme.as_str(),
                "configure or pass the webhook secret",
            ));
        }
        match self
            .rpc_verifier
            .verify(scheme, headers, body, &secrets, SystemTime::now())
        {
            Ok(verified) => {
                let event = verified.event;
                let run_id = event.run_id.clone().or_else(|| {
                    let provider = provider.as_ref()?;
                    let upstream = event.upstream_run_id.as_ref()?;
                    Some(RunId::new(provider.name(), upstream.clone()).encode())
                });
                Ok(Verification::Valid {
                    event: Box::new(event),
                    run_id,
                })
            }
            Err(failure) => Ok(Verification::Invalid(failure.reason())),
        }
    }

    async fn secrets_for_run(
        &self,
        scheme: WebhookScheme,
        run_id: &str,
    ) -> Result<Vec<SecretString>, GatewayError> {
        if scheme == WebhookScheme::Standard {
            return Ok(self
                .forwarding
                .as_ref()
                .map(|forwarding| forwarding.verify_secrets.clone())
                .unwrap_or_default());
        }
        let unknown = || {
            GatewayError::not_found(
                "UNKNOWN_RUN",
                "flowgate.run",
                run_id,
                "no run with this id is known to the gateway",
            )
        };
        let id = RunId::decode(run_id).ok_or_else(unknown)?;
        let record = self.store.get(&id).await.ok_or_else(unknown)?;
        Ok(match record.webhook_secret {
            Some(secret) => vec![secret],
            None => self
                .ingress
                .provider_secrets
                .get(&id.provider)
                .cloned()
                .unwrap_or_default(),
        })
    }
}

/// The secret VerifyWebhook checks against.
#[derive(Debug)]
pub enum VerifyKey {
    /// Given by the caller.
    Secret(SecretString),
    /// The secret of a run the gateway knows.
    RunId(String),
    /// The gateway's configured secrets for the scheme.
    Configured,
}

/// `request_id` (or `run_id`) of a Fetch Hive callback body.
fn fetchhive_run_id(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    ["request_id", "run_id"]
        .iter()
        .find_map(|field| match value.get(field)? {
            serde_json::Value::String(text) if !text.is_empty() => Some(text.clone()),
            serde_json::Value::Number(number) => Some(number.to_string()),
            _ => None,
        })
}
