//! At-least-once delivery of re-signed callbacks.
//!
//! See [`Forwarder`] for the delivery contract.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use moka::sync::Cache;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use flowgate_core::CallbackPolicy;

use crate::destination;
use crate::standard::{StandardSecret, standard_headers};

mod retry;

use retry::{Attempt, backoff, classify};

/// Settings of a [`Forwarder`]. Zero counts are treated as one.
#[derive(Clone, Debug)]
pub struct ForwarderConfig {
    /// Attempts per delivery, the first included.
    pub max_attempts: u32,
    /// Backoff before the first retry; doubled for each further one.
    pub initial_backoff: Duration,
    /// Upper bound of any backoff, `Retry-After` included.
    pub max_backoff: Duration,
    /// Deadline of one attempt (connect, send, response headers).
    pub request_timeout: Duration,
    /// Deliveries accepted and not yet finished, at most.
    pub queue_capacity: usize,
    /// HTTP attempts in flight at once, at most.
    pub workers: usize,
    /// Distinct `(url, event id)` pairs the dedup cache remembers.
    pub dedup_capacity: u64,
    /// How long a delivered `(url, event id)` is remembered.
    pub dedup_ttl: Duration,
    /// Where deliveries may go. With a policy, an IP-literal host it
    /// refuses is never contacted, and neither is a host the client's
    /// resolver refused (use [`callback_client`](crate::callback_client));
    /// both end the delivery as rejected, without retries. `None`: no check.
    pub destinations: Option<Arc<CallbackPolicy>>,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            queue_capacity: 10_000,
            workers: 4,
            dedup_capacity: 100_000,
            dedup_ttl: Duration::from_secs(3600),
            destinations: None,
        }
    }
}

/// One event to deliver to one receiver.
#[derive(Clone)]
pub struct Delivery {
    /// Where to POST it.
    pub url: reqwest::Url,
    /// The `webhook-id`: the same for every attempt, and the dedup key
    /// (with `url`). [`ForwardedEvent::event_id`](crate::ForwardedEvent::event_id)
    /// gives a stable one.
    pub event_id: String,
    /// The JSON body, e.g. [`ForwardedEvent::to_body`](crate::ForwardedEvent::to_body).
    pub body: Bytes,
    /// The receiver's signing secret.
    pub secret: StandardSecret,
}

impl fmt::Debug for Delivery {
    // The URL may carry a token in its query; only the host is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("host", &self.url.host_str())
            .field("event_id", &self.event_id)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// Why [`Forwarder::enqueue`] refused a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnqueueError {
    /// `queue_capacity` deliveries are already pending.
    #[error("the webhook delivery queue is full")]
    Full,
    /// The forwarder was shut down.
    #[error("the webhook forwarder is shut down")]
    Closed,
    /// The event id is empty or cannot be a `webhook-id` header value.
    #[error("the event id is empty or not a valid header value")]
    InvalidEventId,
}

/// What [`Forwarder::enqueue_tracked`] did with an accepted delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued: its [`DeliveryOutcome`] will be published.
    Queued,
    /// The same `(url, event id)` is pending or was delivered: ignored.
    Duplicate,
}

/// Counters since the forwarder started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwarderStats {
    /// Deliveries a receiver accepted (2xx).
    pub delivered: u64,
    /// Retries scheduled (attempts after a retryable failure).
    pub retried: u64,
    /// Deliveries given up: a final status, or `max_attempts` used up.
    pub failed: u64,
    /// Deliveries refused at enqueue (full, closed) or abandoned at shutdown.
    pub dropped: u64,
    /// Of `dropped`, the deliveries accepted and then abandoned at shutdown.
    pub abandoned: u64,
    /// Enqueues ignored because the same `(url, event id)` was pending or
    /// already delivered.
    pub duplicates: u64,
}

/// How a delivery ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryResult {
    /// The receiver answered 2xx.
    Delivered {
        /// The status it answered.
        status: u16,
    },
    /// A status that retrying cannot fix (most 4xx), or a URL reqwest cannot
    /// send to (`status: None`).
    Rejected {
        /// The status it answered.
        status: Option<u16>,
    },
    /// Every attempt failed retryably.
    Exhausted {
        /// The last status, `None` when the last attempt got no response.
        last_status: Option<u16>,
    },
    /// The forwarder shut down first.
    Abandoned,
}

/// A finished delivery, published to [`Forwarder::subscribe`]rs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryOutcome {
    /// The delivery's `webhook-id`.
    pub event_id: String,
    /// HTTP attempts made.
    pub attempts: u32,
    /// How it ended.
    pub result: DeliveryResult,
}

/// Delivers Standard-Webhooks-signed events at least once.
///
/// [`enqueue`](Self::enqueue) never blocks: it claims one of `queue_capacity`
/// slots (or fails [`EnqueueError::Full`]) and hands the delivery to a
/// dispatcher task. Every delivery then runs as its own task that holds one
/// of `workers` permits only while an HTTP attempt is in flight, so
/// deliveries waiting out a backoff never hold up the others. A slot is freed
/// when its delivery is delivered, given up or abandoned, so queued, in-flight
/// and backing-off deliveries together never exceed `queue_capacity`.
///
/// Each attempt is signed afresh (new `webhook-timestamp`, same
/// `webhook-id`), so a receiver's tolerance check passes however late a retry
/// is. 2xx is delivered; 408, 429, 5xx and transport errors (connect errors,
/// timeouts, resets) are retried with jittered exponential backoff, honouring
/// `Retry-After` seconds up to `max_backoff`; any other status is final.
///
/// Delivery is at-least-once within the process. At shutdown,
/// [`drain`](Self::drain) stops accepting deliveries and lets queued,
/// backing-off and in-flight ones continue until a deadline; whatever is not
/// delivered by then is abandoned (counted as `abandoned` and `dropped`,
/// [`DeliveryResult::Abandoned`]). [`shutdown`](Self::shutdown) abandons at
/// once.
pub struct Forwarder {
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    queue: mpsc::Sender<Job>,
    stop: watch::Sender<bool>,
    /// Set when draining: no new deliveries, the queued ones still go.
    draining: watch::Sender<bool>,
    dispatcher: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    config: ForwarderConfig,
    client: reqwest::Client,
    workers: Semaphore,
    dedup: Cache<String, ()>,
    counters: Counters,
    outcomes: broadcast::Sender<DeliveryOutcome>,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    abandoned: AtomicU64,
    duplicates: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct Job {
    delivery: Delivery,
    dedup_key: String,
    /// Held until the delivery finishes: bounds pending deliveries.
    _slot: OwnedSemaphorePermit,
}

/// Outcomes kept for slow subscribers before they start lagging.
const OUTCOME_BUFFER: usize = 1024;

impl Forwarder {
    /// Starts the dispatcher on the current Tokio runtime.
    ///
    /// `client` is used as given (proxies, TLS); each attempt adds its own
    /// `request_timeout`.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime, like `tokio::spawn`.
    pub fn new(config: ForwarderConfig, client: reqwest::Client) -> Self {
        let config = ForwarderConfig {
            max_attempts: config.max_attempts.max(1),
            queue_capacity: config.queue_capacity.max(1),
            workers: config.workers.max(1),
            ..config
        };
        let (queue, receiver) = mpsc::channel(config.queue_capacity);
        let (stop, stop_rx) = watch::channel(false);
        let (draining, draining_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            workers: Semaphore::new(config.workers),
            dedup: Cache::builder()
                .max_capacity(config.dedup_capacity)
                .time_to_live(config.dedup_ttl.max(Duration::from_millis(1)))
                .build(),
            counters: Counters::default(),
            outcomes: broadcast::channel(OUTCOME_BUFFER).0,
            client,
            config,
        });
        let slots = Arc::new(Semaphore::new(shared.config.queue_capacity));
        let dispatcher = tokio::spawn(dispatch(shared.clone(), receiver, stop_rx, draining_rx));
        Self {
            shared,
            slots,
            queue,
            stop,
            draining,
            dispatcher: tokio::sync::Mutex::new(Some(dispatcher)),
        }
    }

    /// Accepts a delivery without waiting. A `(url, event id)` already
    /// pending or delivered within `dedup_ttl` is accepted and ignored
    /// (counted as a duplicate); one that failed may be enqueued again.
    pub fn enqueue(&self, delivery: Delivery) -> Result<(), EnqueueError> {
        self.enqueue_tracked(delivery).map(drop)
    }

    /// [`enqueue`](Self::enqueue), saying whether the delivery was queued
    /// (its outcome will be published to [`subscribe`](Self::subscribe)rs)
    /// or ignored as a duplicate (no outcome will follow).
    pub fn enqueue_tracked(&self, delivery: Delivery) -> Result<Enqueued, EnqueueError> {
        if delivery.event_id.is_empty() || HeaderValue::from_str(&delivery.event_id).is_err() {
            return Err(EnqueueError::InvalidEventId);
        }
        let counters = &self.shared.counters;
        if *self.stop.borrow() || *self.draining.borrow() {
            bump(&counters.dropped);
            return Err(EnqueueError::Closed);
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            bump(&counters.dropped);
            return Err(EnqueueError::Full);
        };
        let dedup_key = format!("{}\n{}", delivery.url, delivery.event_id);
        if !self
            .shared
            .dedup
            .entry(dedup_key.clone())
            .or_insert(())
            .is_fresh()
        {
            bump(&counters.duplicates);
            return Ok(Enqueued::Duplicate);
        }
        let job = Job {
            delivery,
            dedup_key,
            _slot: slot,
        };
        match self.queue.try_send(job) {
            Ok(()) => Ok(Enqueued::Queued),
            Err(TrySendError::Full(job)) => {
                self.shared.dedup.invalidate(&job.dedup_key);
                bump(&counters.dropped);
                Err(EnqueueError::Full)
            }
            Err(TrySendError::Closed(job)) => {
                self.shared.dedup.invalidate(&job.dedup_key);
                bump(&counters.dropped);
                Err(EnqueueError::Closed)
            }
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> ForwarderStats {
        let c = &self.shared.counters;
        ForwarderStats {
            delivered: c.delivered.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            abandoned: c.abandoned.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
        }
    }

    /// Every delivery's outcome from now on. A subscriber that falls more
    /// than 1024 outcomes behind skips ahead (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<DeliveryOutcome> {
        self.shared.outcomes.subscribe()
    }

    /// Stops accepting deliveries, abandons those not yet delivered, and
    /// waits for attempts already in flight to finish. Dropping the
    /// forwarder does the same without waiting.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let dispatcher = self.dispatcher.lock().await.take();
        if let Some(dispatcher) = dispatcher {
            let _ = dispatcher.await;
        }
    }

    /// Stops accepting deliveries and lets those accepted (queued, backing
    /// off, in flight) continue until `deadline`; then abandons the rest,
    /// in-flight attempts included. Reports how many were abandoned.
    pub async fn drain(&self, deadline: tokio::time::Instant) -> DrainReport {
        let before = self.shared.counters.abandoned.load(Ordering::Relaxed);
        self.draining.send_replace(true);
        let dispatcher = self.dispatcher.lock().await.take();
        if let Some(mut dispatcher) = dispatcher
            && tokio::time::timeout_at(deadline, &mut dispatcher)
                .await
                .is_err()
        {
            self.stop.send_replace(true);
            let _ = dispatcher.await;
        }
        let after = self.shared.counters.abandoned.load(Ordering::Relaxed);
        DrainReport {
            abandoned: after.saturating_sub(before),
        }
    }
}

/// What [`Forwarder::drain`] could not deliver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Deliveries abandoned when the deadline came.
    pub abandoned: u64,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forwarder")
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Resolves once `stop` says so, or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Moves queued deliveries into their own tasks until shutdown, then
/// abandons what is still queued and waits for the tasks. Draining closes
/// the queue to new deliveries and keeps dispatching the queued ones.
async fn dispatch(
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<Job>,
    mut stop: watch::Receiver<bool>,
    mut draining: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    let mut closed = false;
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            () = stopped(&mut draining), if !closed => {
                queue.close();
                closed = true;
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            job = queue.recv() => match job {
                Some(job) => {
                    tasks.spawn(deliver(shared.clone(), job, stop.clone()));
                }
                None => break,
            },
        }
    }
    queue.close();
    while let Ok(job) = queue.try_recv() {
        shared.finish(job, 0, DeliveryResult::Abandoned);
    }
    while tasks.join_next().await.is_some() {}
}

/// Attempts one delivery until it is delivered, given up, or abandoned.
async fn deliver(shared: Arc<Shared>, job: Job, mut stop: watch::Receiver<bool>) {
    let mut attempts = 0;
    let result = loop {
        let permit = tokio::select! {
            biased;
            () = stopped(&mut stop) => break DeliveryResult::Abandoned,
            permit = shared.workers.acquire() => match permit {
                Ok(permit) => permit,
                Err(_) => break DeliveryResult::Abandoned,
            },
        };
        attempts += 1;
        // An attempt in flight is abandoned too when the forwarder stops
        // (the drain deadline passed).
        let attempt = tokio::select! {
            biased;
            () = stopped(&mut stop) => break DeliveryResult::Abandoned,
            attempt = shared.attempt(&job.delivery) => attempt,
        };
        drop(permit);
        let (last_status, retry_after) = match attempt {
            Attempt::Delivered(status) => break DeliveryResult::Delivered { status },
            Attempt::Rejected(status) => break DeliveryResult::Rejected { status },
            Attempt::Retry {
                status,
                retry_after,
            } => (status, retry_after),
        };
        if attempts >= shared.config.max_attempts {
            break DeliveryResult::Exhausted { last_status };
        }
        bump(&shared.counters.retried);
        let delay = backoff(&shared.config, attempts, retry_after);
        tracing::debug!(
            event_id = %job.delivery.event_id,
            attempts,
            last_status,
            delay_seconds = delay.as_secs_f64(),
            "webhook delivery failed, retrying"
        );
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break DeliveryResult::Abandoned,
            () = tokio::time::sleep(delay) => {}
        }
    };
    shared.finish(job, attempts, result);
}

impl Shared {
    async fn attempt(&self, delivery: &Delivery) -> Attempt {
        if let Some(policy) = &self.config.destinations
            && !destination::url_allowed(&delivery.url, policy)
        {
            tracing::warn!(
                event_id = %delivery.event_id,
                host = delivery.url.host_str().unwrap_or_default(),
                "webhook delivery refused: the callback address is not allowed"
            );
            return Attempt::Rejected(None);
        }
        let Ok(headers) = standard_headers(
            &delivery.secret,
            &delivery.event_id,
            SystemTime::now(),
            &delivery.body,
        ) else {
            return Attempt::Rejected(None);
        };
        let request = self
            .client
            .post(delivery.url.clone())
            .headers(headers)
            .header(CONTENT_TYPE, "application/json")
            .timeout(self.config.request_timeout)
            .body(delivery.body.clone());
        match request.send().await {
            Ok(response) => classify(response.status(), response.headers()),
            Err(err) if err.is_builder() => Attempt::Rejected(None),
            Err(err) if destination::is_refusal(&err) => {
                tracing::warn!(
                    event_id = %delivery.event_id,
                    host = delivery.url.host_str().unwrap_or_default(),
                    "webhook delivery refused: the callback host resolves to no allowed address"
                );
                Attempt::Rejected(None)
            }
            Err(err) => {
                tracing::debug!(
                    event_id = %delivery.event_id,
                    error = %err.without_url(),
                    "webhook delivery attempt got no response"
                );
                Attempt::Retry {
                    status: None,
                    retry_after: None,
                }
            }
        }
    }

    fn finish(&self, job: Job, attempts: u32, result: DeliveryResult) {
        let event_id = &job.delivery.event_id;
        let host = job.delivery.url.host_str().unwrap_or_default();
        match result {
            DeliveryResult::Delivered { .. } => bump(&self.counters.delivered),
            DeliveryResult::Rejected { .. } | DeliveryResult::Exhausted { .. } => {
                let (outcome, status) = match result {
                    DeliveryResult::Rejected { status } => ("rejected", status),
                    DeliveryResult::Exhausted { last_status } => ("exhausted", last_status),
                    _ => ("given_up", None),
                };
                tracing::warn!(
                    %event_id,
                    host,
                    attempts,
                    outcome,
                    status,
                    "webhook delivery given up"
                );
                self.dedup.invalidate(&job.dedup_key);
                bump(&self.counters.failed);
            }
            DeliveryResult::Abandoned => {
                // One summary warn with counts is logged by whoever drains.
                tracing::debug!(%event_id, host, attempts, "webhook delivery abandoned at shutdown");
                self.dedup.invalidate(&job.dedup_key);
                bump(&self.counters.dropped);
                bump(&self.counters.abandoned);
            }
        }
        let _ = self.outcomes.send(DeliveryOutcome {
            event_id: event_id.clone(),
            attempts,
            result,
        });
    }
}

#[cfg(test)]
mod tests;
