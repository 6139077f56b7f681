//! The default, single-replica store.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use flowgate_core::RunId;
use tokio::sync::broadcast;

use super::{
    RunChange, RunRecord, RunStore, StoreUnavailable, Subscription, Versioned,
    owner_leases::OwnerLeases,
};

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
    /// Grows with every change published.
    version: u64,
    events: Option<broadcast::Sender<Versioned>>,
}

impl EntryState {
    fn publish(&mut self) {
        self.version += 1;
        if let Some(events) = &self.events {
            let _ = events.send(Versioned {
                version: self.version,
                record: self.record.clone(),
            });
        }
    }
}

/// The default, single-replica store: a bounded moka cache of runs, each
/// with its own broadcast channel.
#[derive(Clone)]
pub struct MemoryRunStore {
    runs: moka::sync::Cache<String, Arc<Entry>>,
    owners: OwnerLeases,
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
            owners: OwnerLeases::default(),
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
    async fn insert(&self, record: RunRecord) -> Result<(), StoreUnavailable> {
        let key = record.run_id.encode();
        let fresh = Arc::new(Entry {
            state: Mutex::new(EntryState {
                record,
                version: 0,
                events: None,
            }),
        });
        // One atomic get-or-insert: two first inserts of one run cannot
        // both win.
        let entry = self.runs.get_with(key, || Arc::clone(&fresh));
        if !Arc::ptr_eq(&entry, &fresh) {
            let record = lock(&fresh).record.clone();
            let mut state = lock(&entry);
            if !state.record.status.is_terminal() {
                state.record = record;
                state.publish();
            }
        }
        Ok(())
    }

    async fn get(&self, run_id: &RunId) -> Result<Option<RunRecord>, StoreUnavailable> {
        Ok(self.entry(run_id).map(|entry| lock(&entry).record.clone()))
    }

    async fn update(
        &self,
        run_id: &RunId,
        change: RunChange,
    ) -> Result<Option<RunRecord>, StoreUnavailable> {
        let Some(entry) = self.entry(run_id) else {
            return Ok(None);
        };
        let mut state = lock(&entry);
        if !change.apply(&mut state.record) {
            return Ok(None);
        }
        state.publish();
        Ok(Some(state.record.clone()))
    }

    async fn subscribe(
        &self,
        run_id: &RunId,
    ) -> Result<Option<(RunRecord, Subscription)>, StoreUnavailable> {
        let Some(entry) = self.entry(run_id) else {
            return Ok(None);
        };
        let mut state = lock(&entry);
        let receiver = state
            .events
            .get_or_insert_with(|| broadcast::channel(EVENT_BUFFER).0)
            .subscribe();
        let subscription = Subscription {
            receiver,
            seen: state.version,
            _release: None,
        };
        Ok(Some((state.record.clone(), subscription)))
    }

    fn subscribers(&self, run_id: &RunId) -> usize {
        self.entry(run_id).map_or(0, |entry| {
            lock(&entry)
                .events
                .as_ref()
                .map_or(0, broadcast::Sender::receiver_count)
        })
    }

    async fn claim_owner(
        &self,
        run_id: &RunId,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StoreUnavailable> {
        Ok(self.owners.claim(run_id, token, lease))
    }

    async fn renew_owner(
        &self,
        run_id: &RunId,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StoreUnavailable> {
        Ok(self.owners.renew(run_id, token, lease))
    }

    async fn release_owner(&self, run_id: &RunId, token: &str) -> Result<(), StoreUnavailable> {
        self.owners.release(run_id, token);
        Ok(())
    }

    async fn expired_owners(&self, max: usize) -> Result<Vec<RunId>, StoreUnavailable> {
        Ok(self.owners.expired(max))
    }
}

#[cfg(test)]
mod tests {
    use flowgate_core::{RunStatus, Usage};

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
            .await
            .unwrap();
        let (snapshot, mut subscription) = store.subscribe(&id).await.unwrap().unwrap();
        assert_eq!(snapshot.status, RunStatus::Queued);
        assert_eq!(store.subscribers(&id), 1);
        store
            .update(&id, change(RunStatus::Running))
            .await
            .unwrap()
            .unwrap();
        store
            .update(&id, change(RunStatus::Completed))
            .await
            .unwrap()
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
            .await
            .unwrap();
        assert!(
            store
                .update(&id, change(RunStatus::Queued))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .update(&id, change(RunStatus::Running))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .update(&id, change(RunStatus::Failed))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .update(&id, change(RunStatus::Completed))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            store.get(&id).await.unwrap().unwrap().status,
            RunStatus::Failed
        );
        store
            .insert(RunRecord::new(id.clone(), RunStatus::Running))
            .await
            .unwrap();
        assert_eq!(
            store.get(&id).await.unwrap().unwrap().status,
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
                .await
                .unwrap();
        }
        store.runs.run_pending_tasks();
        assert!(store.runs.entry_count() <= 10);
    }
}
