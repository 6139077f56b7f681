//! The run registry and event bus.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use flowgate_core::{RunError, RunId, RunStatus, SecretString, Usage};
use serde_json::Value;
use tokio::sync::broadcast;

/// Everything the gateway knows about one run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    /// Provider and upstream id.
    pub run_id: RunId,
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
        let rank = |status: RunStatus| match status {
            RunStatus::Queued => 0,
            RunStatus::Running => 1,
            _ => 2,
        };
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

/// A live view of one run's changes.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<RunRecord>,
}

impl Subscription {
    /// The next change; `None` when the run left the store. A subscriber
    /// that fell behind skips to the newest change (states only move
    /// forward, so nothing a caller acts on is lost).
    pub async fn next(&mut self) -> Option<RunRecord> {
        loop {
            match self.receiver.recv().await {
                Ok(record) => return Some(record),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The run registry and event bus. Implementations publish every applied
/// change to the run's subscribers.
#[async_trait]
pub trait RunStore: Send + Sync + fmt::Debug {
    /// Stores a run (replacing any record with the same id, unless that
    /// record is already terminal: terminal states are sticky) and publishes
    /// it.
    async fn insert(&self, record: RunRecord);

    /// The current record.
    async fn get(&self, run_id: &RunId) -> Option<RunRecord>;

    /// Applies a change; returns the new record when something changed.
    async fn update(&self, run_id: &RunId, change: RunChange) -> Option<RunRecord>;

    /// The current record and a subscription to its changes, atomically (no
    /// change can fall between the two).
    async fn subscribe(&self, run_id: &RunId) -> Option<(RunRecord, Subscription)>;

    /// How many subscriptions to the run are open on this replica.
    fn subscribers(&self, run_id: &RunId) -> usize;
}

/// Bounds of the in-memory store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// Most runs kept; the least recently used leave first.
    pub capacity: u64,
    /// How long a run is kept after its last change.
    pub ttl: Duration,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Events buffered per run for slow subscribers.
const EVENT_BUFFER: usize = 16;

#[derive(Debug)]
struct Entry {
    state: Mutex<EntryState>,
}

/// A run and, once someone subscribed, its event channel.
#[derive(Debug)]
struct EntryState {
    record: RunRecord,
    events: Option<broadcast::Sender<RunRecord>>,
}

impl EntryState {
    fn publish(&self) {
        if let Some(events) = &self.events {
            let _ = events.send(self.record.clone());
        }
    }
}

/// The default, single-replica store: a bounded moka cache of runs, each
/// with its own broadcast channel.
#[derive(Clone)]
pub struct MemoryRunStore {
    runs: moka::sync::Cache<String, Arc<Entry>>,
}

impl fmt::Debug for MemoryRunStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryRunStore")
            .field("runs", &self.runs.entry_count())
            .finish()
    }
}

impl MemoryRunStore {
    /// A store within `limits`.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            runs: moka::sync::Cache::builder()
                .max_capacity(limits.capacity)
                .time_to_idle(limits.ttl)
                .build(),
        }
    }

    fn entry(&self, run_id: &RunId) -> Option<Arc<Entry>> {
        self.runs.get(&run_id.encode())
    }
}

fn lock(entry: &Entry) -> std::sync::MutexGuard<'_, EntryState> {
    entry
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl RunStore for MemoryRunStore {
    async fn insert(&self, record: RunRecord) {
        let key = record.run_id.encode();
        if let Some(entry) = self.runs.get(&key) {
            let mut state = lock(&entry);
            if !state.record.status.is_terminal() {
                state.record = record;
                state.publish();
            }
            return;
        }
        self.runs.insert(
            key,
            Arc::new(Entry {
                state: Mutex::new(EntryState {
                    record,
                    events: None,
                }),
            }),
        );
    }

    async fn get(&self, run_id: &RunId) -> Option<RunRecord> {
        self.entry(run_id).map(|entry| lock(&entry).record.clone())
    }

    async fn update(&self, run_id: &RunId, change: RunChange) -> Option<RunRecord> {
        let entry = self.entry(run_id)?;
        let mut state = lock(&entry);
        if !change.apply(&mut state.record) {
            return None;
        }
        state.publish();
        Some(state.record.clone())
    }

    async fn subscribe(&self, run_id: &RunId) -> Option<(RunRecord, Subscription)> {
        let entry = self.entry(run_id)?;
        let mut state = lock(&entry);
        let receiver = state
            .events
            .get_or_insert_with(|| broadcast::channel(EVENT_BUFFER).0)
            .subscribe();
        Some((state.record.clone(), Subscription { receiver }))
    }

    fn subscribers(&self, run_id: &RunId) -> usize {
        self.entry(run_id).map_or(0, |entry| {
            lock(&entry)
                .events
                .as_ref()
                .map_or(0, broadcast::Sender::receiver_count)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(status: RunStatus) -> RunChange {
        RunChange {
            status,
            output: None,
            error: None,
            usage: Usage::default(),
        }
    }

    #[tokio::test]
    async fn subscribers_see_every_change_after_the_snapshot() {
        let store = MemoryRunStore::new(StoreLimits::default());
        let id = RunId::new("kn", "e-1");
        store
            .insert(RunRecord::new(id.clone(), RunStatus::Queued))
            .await;
        let (snapshot, mut subscription) = store.subscribe(&id).await.unwrap();
        assert_eq!(snapshot.status, RunStatus::Queued);
        assert_eq!(store.subscribers(&id), 1);
        store.update(&id, change(RunStatus::Running)).await.unwrap();
        store
            .update(&id, change(RunStatus::Completed))
            .await
            .unwrap();
        assert_eq!(
            subscription.next().await.unwrap().status,
            RunStatus::Running
        );
        assert_eq!(
            subscription.next().await.unwrap().status,
            RunStatus::Completed
        );
        drop(subscription);
        assert_eq!(store.subscribers(&id), 0);
    }

    #[tokio::test]
    async fn terminal_states_are_final_and_runs_never_go_back() {
        let store = MemoryRunStore::new(StoreLimits::default());
        let id = RunId::new("kn", "e-2");
        store
            .insert(RunRecord::new(id.clone(), RunStatus::Running))
            .await;
        assert!(store.update(&id, change(RunStatus::Queued)).await.is_none());
        assert!(
            store
                .update(&id, change(RunStatus::Running))
                .await
                .is_none()
        );
        assert!(store.update(&id, change(RunStatus::Failed)).await.is_some());
        assert!(
            store
                .update(&id, change(RunStatus::Completed))
                .await
                .is_none()
        );
        assert_eq!(store.get(&id).await.unwrap().status, RunStatus::Failed);
        store
            .insert(RunRecord::new(id.clone(), RunStatus::Running))
            .await;
        assert_eq!(
            store.get(&id).await.unwrap().status,
            RunStatus::Failed,
            "a second insert of a run (two streams fetching it) must not undo its end"
        );
    }

    #[tokio::test]
    async fn capacity_is_bounded() {
        let store = MemoryRunStore::new(StoreLimits {
            capacity: 10,
            ttl: Duration::from_secs(60),
        });
        for index in 0..100 {
            store
                .insert(RunRecord::new(
                    RunId::new("kn", format!("e-{index}")),
                    RunStatus::Running,
                ))
                .await;
        }
        store.runs.run_pending_tasks();
        assert!(store.runs.entry_count() <= 10);
    }
}
