//! The in-memory idempotency store: one replica's records, bounded.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use tokio::{sync::watch, time::Instant};

use super::{
    Claim, IdempotencyKey, IdempotencyStore, RecordedAnswer, RequestHash, Settled, StoreUnavailable,
};

/// Records in a map under one lock, bounded by `capacity` keys. A recorded
/// answer lives `ttl` after it was recorded; when the map is full the
/// oldest recorded answers go first. A pending claim lives as long as its
/// owner (the first call's task, which always records or releases), so it
/// is never evicted; a claim that finds the map full of pending claims is
/// refused (UNAVAILABLE) rather than left unguarded.
#[derive(Debug, Clone)]
pub struct MemoryIdempotencyStore {
    inner: Arc<Mutex<Records>>,
    ttl: Duration,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Records {
    entries: HashMap<IdempotencyKey, Entry>,
    /// Recorded answers in the order they expire (all share one TTL).
    expiry: VecDeque<(Instant, IdempotencyKey, u64)>,
    generation: u64,
}

#[derive(Debug)]
struct Entry {
    hash: RequestHash,
    generation: u64,
    state: State,
}

#[derive(Debug)]
enum State {
    /// In flight; dropping the sender (record, release) wakes the waiters.
    Pending(watch::Sender<()>),
    Recorded {
        answer: RecordedAnswer,
        expires_at: Instant,
    },
}

impl MemoryIdempotencyStore {
    /// A store keeping at most `capacity` keys, each answer for `ttl`.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Records::default())),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// Keys held now (pending and recorded, expired ones not yet swept
    /// included).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Records> {
        // A panic while holding the lock leaves consistent data (every
        // change is one map operation): keep serving.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Records {
    /// Drops expired answers, then, while full, the oldest answers.
    fn make_room(&mut self, now: Instant, capacity: usize) {
        while let Some((expires_at, _, _)) = self.expiry.front() {
            let expired = *expires_at <= now;
            if !expired && self.entries.len() < capacity {
                break;
            }
            let Some((_, key, generation)) = self.expiry.pop_front() else {
                break;
            };
            if self
                .entries
                .get(&key)
                .is_some_and(|entry| entry.generation == generation)
            {
                self.entries.remove(&key);
            }
        }
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn claim(
        &self,
        key: &IdempotencyKey,
        hash: RequestHash,
        _lease: Duration,
    ) -> Result<Claim, StoreUnavailable> {
        let now = Instant::now();
        let mut records = self.lock();
        if let Some(entry) = records.entries.get(key) {
            let live = match &entry.state {
                State::Pending(_) => true,
                State::Recorded { expires_at, .. } => *expires_at > now,
            };
            if live {
                if entry.hash != hash {
                    return Ok(Claim::Mismatch);
                }
                return Ok(match &entry.state {
                    State::Pending(_) => Claim::InFlight,
                    State::Recorded { answer, .. } => Claim::Recorded(answer.clone()),
                });
            }
            records.entries.remove(key);
        }
        records.make_room(now, self.capacity);
        if records.entries.len() >= self.capacity {
            return Err(StoreUnavailable(format!(
                "the memory store is full: {} keyed requests are in flight",
                records.entries.len()
            )));
        }
        records.generation += 1;
        let generation = records.generation;
        let (sender, _) = watch::channel(());
        records.entries.insert(
            key.clone(),
            Entry {
                hash,
                generation,
                state: State::Pending(sender),
            },
        );
        Ok(Claim::Claimed)
    }

    async fn record(
        &self,
        key: &IdempotencyKey,
        hash: RequestHash,
        answer: RecordedAnswer,
    ) -> Result<(), StoreUnavailable> {
        let expires_at = Instant::now() + self.ttl;
        let mut records = self.lock();
        let generation = match records.entries.get_mut(key) {
            Some(entry) if entry.hash == hash && matches!(entry.state, State::Pending(_)) => {
                entry.state = State::Recorded { answer, expires_at };
                entry.generation
            }
            _ => return Ok(()),
        };
        records
            .expiry
            .push_back((expires_at, key.clone(), generation));
        Ok(())
    }

    async fn release(
        &self,
        key: &IdempotencyKey,
        hash: RequestHash,
    ) -> Result<(), StoreUnavailable> {
        let mut records = self.lock();
        if records
            .entries
            .get(key)
            .is_some_and(|entry| entry.hash == hash && matches!(entry.state, State::Pending(_)))
        {
            records.entries.remove(key);
        }
        Ok(())
    }

    async fn settled(
        &self,
        key: &IdempotencyKey,
        hash: RequestHash,
        wait: Duration,
    ) -> Result<Settled, StoreUnavailable> {
        let until = Instant::now() + wait;
        loop {
            let mut changed = {
                let records = self.lock();
                match records.entries.get(key) {
                    Some(entry) if entry.hash == hash => match &entry.state {
                        State::Pending(sender) => sender.subscribe(),
                        State::Recorded { answer, expires_at } if *expires_at > Instant::now() => {
                            return Ok(Settled::Recorded(answer.clone()));
                        }
                        State::Recorded { .. } => return Ok(Settled::Released),
                    },
                    _ => return Ok(Settled::Released),
                }
            };
            // Woken when the sender is dropped (recorded or released).
            if tokio::time::timeout_at(until, changed.changed())
                .await
                .is_err()
            {
                return Ok(Settled::InFlight);
            }
        }
    }
}
