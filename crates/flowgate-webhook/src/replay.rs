//! The in-memory [`ReplayStore`]: one replica's remembered webhook event
//! ids, a bounded moka cache whose entries each expire after the ttl they
//! were offered with.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use flowgate_core::{ReplayStore, StateStoreUnavailable};
use moka::{Expiry, sync::Cache};

/// Event ids seen by this process.
#[derive(Clone, Debug)]
pub struct MemoryReplayStore {
    seen: Cache<String, Duration>,
}

/// Each entry lives for the ttl stored as its value.
struct OfferedTtl;

impl Expiry<String, Duration> for OfferedTtl {
    fn expire_after_create(&self, _: &String, ttl: &Duration, _: Instant) -> Option<Duration> {
        Some(*ttl)
    }
}

impl MemoryReplayStore {
    /// Remembers at most `capacity` ids (the least recently used go first).
    pub fn new(capacity: u64) -> Self {
        Self {
            seen: Cache::builder()
                .max_capacity(capacity)
                .expire_after(OfferedTtl)
                .build(),
        }
    }

    /// The synchronous core of [`ReplayStore::first_seen`].
    pub fn first_seen_now(&self, id: &str, ttl: Duration) -> bool {
        self.seen.entry_by_ref(id).or_insert(ttl).is_fresh()
    }

    /// How many ids are remembered (approximately: moka counts lazily).
    pub fn len(&self) -> u64 {
        self.seen.entry_count()
    }

    /// Whether no id is remembered (approximately, as [`Self::len`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl ReplayStore for MemoryReplayStore {
    async fn first_seen(&self, id: &str, ttl: Duration) -> Result<bool, StateStoreUnavailable> {
        Ok(self.first_seen_now(id, ttl))
    }
}
