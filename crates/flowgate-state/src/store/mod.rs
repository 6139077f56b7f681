//! The run registry and event bus: the [`RunStore`] trait, its in-memory
//! implementation (one replica) and its Redis implementation (several).

mod memory;
mod owner_leases;
mod redis;

use std::{
    fmt,
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use flowgate_core::{ProviderKind, RunError, RunId, RunStatus, SecretString, Usage};
pub use flowgate_redis::StoreUnavailable;
use serde_json::Value;
use tokio::sync::broadcast;

pub use memory::{MemoryRunStore, StoreLimits};
pub use redis::RedisRunStore;

/// Everything the gateway knows about one run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    /// Provider and upstream id.
    pub run_id: RunId,
    /// The provider's dialect when the run started (the provider may be
    /// gone from the configuration by the time its event is forwarded);
    /// `None` in records written before it was kept, and for a dialect
    /// registered in code once read back from a shared store.
    pub provider_kind: Option<ProviderKind>,
    /// The latest state.
    pub status: RunStatus,
    /// The output, once completed.
    pub output: Option<Value>,
    /// Why it failed, once failed.
    pub error: Option<RunError>,
    /// What it consumed, where reported.
    pub usage: Usage,
    /// When the gateway last saw a change.
    pub updated_at: SystemTime,
    /// The provider-issued secret for this run's signed callback.
    pub webhook_secret: Option<SecretString>,
    /// The caller's URL to forward the completion event to.
    pub callback_url: Option<String>,
    /// The W3C `traceparent` of the call that started the run.
    pub trace_parent: Option<String>,
}

impl RunRecord {
    /// A new record in `status`.
    pub fn new(run_id: RunId, status: RunStatus) -> Self {
        Self {
            run_id,
            provider_kind: None,
            status,
            output: None,
            error: None,
            usage: Usage::default(),
            updated_at: SystemTime::now(),
            webhook_secret: None,
            callback_url: None,
            trace_parent: None,
        }
    }
}

/// A state change observed for a run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunChange {
    /// The new state.
    pub status: RunStatus,
    /// The output, when completed.
    pub output: Option<Value>,
    /// The error, when failed.
    pub error: Option<RunError>,
    /// Usage, when reported.
    pub usage: Usage,
}

impl RunChange {
    /// Applies the change; false when it changes nothing or would move the
    /// run backwards (terminal states are final, RUNNING never returns to
    /// QUEUED).
    fn apply(self, record: &mut RunRecord) -> bool {
        if record.status.is_terminal() || rank(self.status) < rank(record.status) {
            return false;
        }
        if self.status == record.status && !self.status.is_terminal() {
            return false;
        }
        record.status = self.status;
        record.output = self.output;
        record.error = self.error;
        if self.usage != Usage::default() {
            record.usage = self.usage;
        }
        record.updated_at = SystemTime::now();
        true
    }
}

/// How far along a run is: QUEUED 0, RUNNING 1, terminal 2. A change never
/// lowers it, and a terminal run never changes.
fn rank(status: RunStatus) -> u8 {
    match status {
        RunStatus::Queued => 0,
        RunStatus::Running => 1,
        RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled => 2,
    }
}

/// A record as published: `version` grows with every change of the run, so
/// a subscriber can drop what its snapshot (or an earlier event) already
/// showed.
#[derive(Clone, Debug)]
struct Versioned {
    version: u64,
    record: RunRecord,
}

/// A live view of one run's changes.
#[derive(Debug)]
pub struct Subscription {
    // Dropped before `_release`, so a release sees the receiver gone.
    receiver: broadcast::Receiver<Versioned>,
    /// The newest version delivered (the snapshot's, at first).
    seen: u64,
    _release: Option<redis::Release>,
}

impl Subscription {
    /// The next change; `None` when the run left the store. A subscriber
    /// that fell behind skips to the newest change (states only move
    /// forward, so nothing a caller acts on is lost), and never sees a
    /// change twice or one older than what it has seen.
    pub async fn next(&mut self) -> Option<RunRecord> {
        loop {
            match self.receiver.recv().await {
                Ok(event) if event.version > self.seen => {
                    self.seen = event.version;
                    return Some(event.record);
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The run registry and event bus. Implementations publish every applied
/// change to the run's subscribers (on every replica sharing the store).
///
/// Every method but [`RunStore::subscribers`] can fail with
/// [`StoreUnavailable`] when the store is shared and out of reach; the
/// in-memory store never fails.
#[async_trait]
pub trait RunStore: Send + Sync + fmt::Debug {
    /// Stores a run (replacing any record with the same id, unless that
    /// record is already terminal: terminal states are sticky) and publishes
    /// it.
    async fn insert(&self, record: RunRecord) -> Result<(), StoreUnavailable>;

    /// The current record.
    async fn get(&self, run_id: &RunId) -> Result<Option<RunRecord>, StoreUnavailable>;

    /// Applies a change; returns the new record when something changed.
    async fn update(
        &self,
        run_id: &RunId,
        change: RunChange,
    ) -> Result<Option<RunRecord>, StoreUnavailable>;

    /// The current record and a subscription to its changes, atomically (no
    /// change can fall between the two).
    async fn subscribe(
        &self,
        run_id: &RunId,
    ) -> Result<Option<(RunRecord, Subscription)>, StoreUnavailable>;

    /// How many subscriptions to the run are open on this replica.
    fn subscribers(&self, run_id: &RunId) -> usize;

    /// Claims the owner lease of a run for `token` (a fresh token per
    /// holding) for `lease`: true when it was free, had lapsed or is
    /// already `token`'s (then it is renewed), false while someone else
    /// holds it. The one owner of a run's work (a gateway-run call, a
    /// poller) holds it; see [`RunStore::expired_owners`].
    async fn claim_owner(
        &self,
        run_id: &RunId,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StoreUnavailable>;

    /// Extends `token`'s lease by `lease` from now; false when `token` no
    /// longer holds it (it lapsed, or was claimed by someone else since).
    async fn renew_owner(
        &self,
        run_id: &RunId,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StoreUnavailable>;

    /// Ends `token`'s lease (nothing when `token` does not hold it): the
    /// work is done and nobody needs to take it over.
    async fn release_owner(&self, run_id: &RunId, token: &str) -> Result<(), StoreUnavailable>;

    /// Up to `max` runs whose owner lease lapsed without a release (their
    /// owner died or lost the store for a whole lease): work someone must
    /// take over ([`RunStore::claim_owner`] first: only one claim wins).
    async fn expired_owners(&self, max: usize) -> Result<Vec<RunId>, StoreUnavailable>;

    /// Whether the store answers now (one round trip when shared): checked
    /// before work that must be recorded, such as starting an async run.
    async fn check(&self) -> Result<(), StoreUnavailable> {
        Ok(())
    }
}
