//! Owner leases in process, for [`super::MemoryRunStore`]: the semantics
//! of the Redis store's (see `redis/owners.rs`) on one replica's clock.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use flowgate_core::RunId;
use tokio::time::Instant;

/// One held lease.
#[derive(Debug)]
struct Lease {
    run_id: RunId,
    token: String,
    until: Instant,
}

/// The owner leases of a memory store, by encoded run id. Only the
/// tracker's bounded work (background runs, pollers) takes leases, and a
/// released or taken-over lease leaves or is replaced, so the table stays
/// as small as that work.
#[derive(Clone, Debug, Default)]
pub(super) struct OwnerLeases(Arc<Mutex<HashMap<String, Lease>>>);

impl OwnerLeases {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Lease>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn claim(&self, run_id: &RunId, token: &str, lease: Duration) -> bool {
        let now = Instant::now();
        let mut leases = self.lock();
        let key = run_id.encode();
        if let Some(held) = leases.get(&key)
            && held.token != token
            && held.until > now
        {
            return false;
        }
        leases.insert(
            key,
            Lease {
                run_id: run_id.clone(),
                token: token.to_owned(),
                until: after(now, lease),
            },
        );
        true
    }

    pub(super) fn renew(&self, run_id: &RunId, token: &str, lease: Duration) -> bool {
        let now = Instant::now();
        match self.lock().get_mut(&run_id.encode()) {
            Some(held) if held.token == token && held.until > now => {
                held.until = after(now, lease);
                true
            }
            _ => false,
        }
    }

    pub(super) fn release(&self, run_id: &RunId, token: &str) {
        let now = Instant::now();
        let mut leases = self.lock();
        let key = run_id.encode();
        // A lapsed lease stays, to be found by a sweep, as on Redis.
        if leases
            .get(&key)
            .is_some_and(|held| held.token == token && held.until > now)
        {
            leases.remove(&key);
        }
    }

    pub(super) fn expired(&self, max: usize) -> Vec<RunId> {
        let now = Instant::now();
        self.lock()
            .values()
            .filter(|held| held.until <= now)
            .take(max)
            .map(|held| held.run_id.clone())
            .collect()
    }
}

/// `lease` after `now`, saturating at a year.
fn after(now: Instant, lease: Duration) -> Instant {
    now.checked_add(lease)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}
