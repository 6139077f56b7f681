//! Forwarding completion events to a caller's `callback_url`, at least
//! once across replicas.
//!
//! A terminal event owed to a caller is queued on this replica's
//! forwarder, and this replica holds the forward's lease (an owner lease
//! under the run's forward id, see [`forward_lease_id`]) until the
//! delivery ends: delivered, or given up (rejected, attempts used up),
//! releases it. A replica that dies with the delivery queued, in flight or
//! backing off stops renewing; the lease lapses, and the next sweep on any
//! replica (see `owners`) claims it and queues the event again from the
//! run's record: the same body and the same `webhook-id`, so a receiver
//! that got it already can drop the repeat. A delivery abandoned at
//! shutdown, or refused by a full queue, leaves its lease to lapse too, so
//! it is queued again (here or elsewhere) a lease later.

use std::{sync::Arc, time::Duration};

use flowgate_core::RunId;
use flowgate_webhook::{
    Delivery, DeliveryOutcome, DeliveryResult, EnqueueError, Enqueued, ForwardedEvent,
};
use tokio::sync::broadcast;

use super::{RunTracker, owners::OwnerLease};
use crate::{RunRecord, RunStore};

/// Appended to a run's upstream id to name its forward's lease (the
/// provider name, before the first line break, is unchanged). Upstream ids
/// the gateway polls are `[A-Za-z0-9_.-]`, so no such run's id ends with
/// it; only a signed vendor callback could name one that does, and the
/// worst a sweep then does is queue a run's terminal event again (same
/// `webhook-id`).
const FORWARD_MARK: &str = "\nforward";

/// The id the forward of `run_id`'s completion event is leased under.
pub(super) fn forward_lease_id(run_id: &RunId) -> RunId {
    RunId::new(
        run_id.provider.clone(),
        format!("{}{FORWARD_MARK}", run_id.upstream_id),
    )
}

/// The run whose forward `lease_id` names; `None` for a run's own lease.
pub(super) fn forwarded_run(lease_id: &RunId) -> Option<RunId> {
    lease_id
        .upstream_id
        .strip_suffix(FORWARD_MARK)
        .filter(|upstream| !upstream.is_empty())
        .map(|upstream| RunId::new(lease_id.provider.clone(), upstream))
}

impl RunTracker {
    /// Queues the terminal event of `record` for the caller's callback
    /// URL, and holds its forward's lease until it is delivered.
    pub(super) fn forward(&self, record: &RunRecord) {
        if let Some(delivery) = self.delivery(record) {
            self.queue(delivery, &record.run_id, None);
        }
    }

    /// A dead replica's forward (its lease, `lease`, lapsed and is now
    /// held here): queued again from the run's record.
    pub(super) async fn take_over_forward(&self, run_id: &RunId, lease: OwnerLease) {
        match self.store.get(run_id).await {
            Ok(Some(record)) if record.status.is_terminal() => {
                if let Some(delivery) = self.delivery(&record) {
                    tracing::info!(run_id = %run_id.encode(), "taking over the forward of a completion event whose owner lease lapsed");
                    self.queue(delivery, run_id, Some(lease));
                    return;
                }
                lease.release().await;
            }
            // Gone, or never terminal (not written by a forward): nothing
            // is owed.
            Ok(_) => lease.release().await,
            // Left to lapse again: the next sweep retries.
            Err(error) => super::log_store_failure(&error),
        }
    }

    /// The delivery of `record`'s event, when one is owed and possible.
    pub(super) fn delivery(&self, record: &RunRecord) -> Option<Delivery> {
        let (Some(url), Some(forwarding)) = (&record.callback_url, &self.forwarding) else {
            return None;
        };
        let Ok(url) = url::Url::parse(url) else {
            tracing::warn!(run_id = %record.run_id.encode(), "callback URL does not parse; not forwarding");
            return None;
        };
        // The dialect the run started with, kept on its record; a record
        // written before that was kept asks the provider, if still there.
        let Some(kind) = record.provider_kind.or_else(|| {
            self.gateway
                .provider(&record.run_id.provider)
                .map(|provider| provider.kind())
        }) else {
            tracing::warn!(run_id = %record.run_id.encode(), "the run's provider is gone and its record names no dialect; not forwarding");
            return None;
        };
        let event = ForwardedEvent {
            run_id: self.gateway.run_ids().sign(&record.run_id),
            provider: kind,
            upstream_run_id: (!record.run_id.is_local()).then(|| record.run_id.upstream_id.clone()),
            status: record.status,
            output: record.output.clone(),
            error: record.error.clone(),
            time: record.updated_at,
        };
        Some(Delivery {
            url,
            event_id: event.event_id(),
            body: event.to_body(),
            secret: forwarding.secrets.signing(),
        })
    }

    /// Enqueues `delivery` and holds the forward's lease (`held`, or one
    /// claimed now) until its outcome.
    fn queue(&self, delivery: Delivery, run_id: &RunId, held: Option<OwnerLease>) {
        let Some(forwarding) = &self.forwarding else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let event_id = delivery.event_id.clone();
        // Before the enqueue, so its outcome cannot be missed.
        let outcomes = forwarding.forwarder.subscribe();
        let awaited = match forwarding.forwarder.enqueue_tracked(delivery) {
            Ok(Enqueued::Queued) => Some(event_id),
            // Pending or delivered here already, under a holding of its own.
            Ok(Enqueued::Duplicate) => {
                if let Some(lease) = held {
                    runtime.spawn(lease.release());
                }
                return;
            }
            Err(error @ (EnqueueError::Full | EnqueueError::Closed)) => {
                tracing::warn!(run_id = %run_id.encode(), %error, "callback not queued; queued again once its lease lapses");
                None
            }
            Err(error) => {
                tracing::warn!(run_id = %run_id.encode(), %error, "callback not queued");
                return;
            }
        };
        let holder = Holder {
            store: Arc::clone(&self.store),
            lease_id: forward_lease_id(run_id),
            token: self.owner_tokens.next(),
            lease: self.config.owner_lease,
        };
        runtime.spawn(holder.hold(held, outcomes, awaited));
    }
}

/// What claiming a forward's lease takes.
struct Holder {
    store: Arc<dyn RunStore>,
    lease_id: RunId,
    token: String,
    lease: Duration,
}

impl Holder {
    /// Holds the lease (`held`, or claimed now) until the outcome of
    /// `awaited` comes: released once delivered or given up; otherwise
    /// (abandoned, not queued, outcome missed) dropped, so it lapses and a
    /// sweep queues the event again.
    async fn hold(
        self,
        held: Option<OwnerLease>,
        mut outcomes: broadcast::Receiver<DeliveryOutcome>,
        awaited: Option<String>,
    ) {
        let lease = match held {
            Some(lease) => lease,
            None => match OwnerLease::claim_as(&self.store, &self.lease_id, self.token, self.lease)
                .await
            {
                Ok(Some(lease)) => lease,
                // Another replica forwards it too (it took a lapsed lease
                // over), or the store is out of reach: delivered from here
                // without a lease, as on one replica.
                Ok(None) => return,
                Err(error) => {
                    super::log_store_failure(&error);
                    return;
                }
            },
        };
        let Some(event_id) = awaited else {
            return;
        };
        loop {
            match outcomes.recv().await {
                Ok(outcome) if outcome.event_id == event_id => {
                    if outcome.result != DeliveryResult::Abandoned {
                        lease.release().await;
                    }
                    return;
                }
                Ok(_) => {}
                // Skipped outcomes of other deliveries in a burst: this one
                // may still be pending here, so keep holding (dropping the
                // lease would let another replica deliver it in parallel).
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                // The forwarder is gone (shutdown): the lease lapses and a
                // sweep elsewhere sends the event again.
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
