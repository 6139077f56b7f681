//! The in-memory [`LimitStore`]: one replica's provider limits, as the
//! guard always kept them (moved here behind the seam, unchanged).
//!
//! Per scope (provider): the remembered vendor window as a tokio
//! [`Instant`] (so paused-time tests drive it), a token bucket for the
//! request rate and a tokio semaphore for run slots. State sits behind a
//! `std` mutex held for nanoseconds, never across an await; the semaphore
//! wait happens outside it.

mod bucket;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use flowgate_core::{
    LimitRequest, LimitStore, LimitVerdict, RunSlot, StateStoreUnavailable, WindowNote,
};
use tokio::{sync::Semaphore, time::Instant};

use crate::numbers::MAX_RESET_AHEAD;
use bucket::TokenBucket;

/// `now + by`, or — when that overflows the clock — as late as the clock
/// allows within `by`, never a panic.
pub(crate) fn later(now: Instant, by: Duration) -> Instant {
    now.checked_add(by)
        .or_else(|| now.checked_add(MAX_RESET_AHEAD))
        .unwrap_or(now)
}

/// Provider limits kept in this process.
#[derive(Debug, Default)]
pub struct MemoryLimitStore {
    scopes: Mutex<HashMap<String, ScopeLimits>>,
}

#[derive(Debug, Default)]
struct ScopeLimits {
    /// Until when the upstream window is known to be spent.
    exhausted_until: Option<Instant>,
    /// Created on first use with the first request's quota (full, so the
    /// same as one created up front).
    bucket: Option<TokenBucket>,
    slots: Option<Arc<Semaphore>>,
}

impl MemoryLimitStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, ScopeLimits>> {
        // A panic while holding this lock cannot leave the counters in a
        // state worse than stale; keep serving.
        self.scopes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The synchronous core of [`LimitStore::window`].
    pub fn window_now(&self, scope: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut scopes = self.lock();
        let limits = scopes.get_mut(scope)?;
        let until = limits.exhausted_until?;
        if until > now {
            return Some(until - now);
        }
        limits.exhausted_until = None;
        None
    }

    /// The synchronous core of [`LimitStore::note_window`].
    pub fn note_window_now(&self, scope: &str, note: WindowNote) {
        if note.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut scopes = self.lock();
        let limits = scopes.entry(scope.to_owned()).or_default();
        if let Some(spent_for) = note.spent_for {
            limits.exhausted_until = Some(later(now, spent_for));
        }
        if let Some(at_least) = note.at_least {
            let until = later(now, at_least);
            limits.exhausted_until = Some(limits.exhausted_until.map_or(until, |at| at.max(until)));
        }
    }

    /// [`LimitStore::admit`] without the boxed future: the window, then a
    /// rate token, then a slot (waiting for it outside the lock). As before
    /// the seam existed, a token taken by a call that then finds no slot is
    /// not given back.
    pub async fn admit_now(
        &self,
        scope: &str,
        request: LimitRequest,
    ) -> Result<LimitVerdict, StateStoreUnavailable> {
        if let Some(retry_after) = self.window_now(scope) {
            return Ok(LimitVerdict::WindowExhausted { retry_after });
        }
        if request.rate.is_none() && request.slot.is_none() {
            return Ok(LimitVerdict::Admitted(None));
        }
        let slots = {
            let now = Instant::now();
            let mut scopes = self.lock();
            let limits = scopes.entry(scope.to_owned()).or_default();
            if let Some(rate) = request.rate
                && let Err(retry_after) = limits
                    .bucket
                    .get_or_insert_with(|| TokenBucket::new(rate.requests, rate.window))
                    .take(now)
            {
                return Ok(LimitVerdict::RateLimited { retry_after });
            }
            request.slot.map(|slot| {
                let slots = limits
                    .slots
                    .get_or_insert_with(|| Arc::new(Semaphore::new(slot.max.max(1) as usize)));
                (Arc::clone(slots), slot.wait)
            })
        };
        let Some((slots, wait)) = slots else {
            return Ok(LimitVerdict::Admitted(None));
        };
        match tokio::time::timeout(wait, slots.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(LimitVerdict::Admitted(Some(RunSlot::new(permit)))),
            _ => Ok(LimitVerdict::NoSlot),
        }
    }
}

#[async_trait]
impl LimitStore for MemoryLimitStore {
    async fn admit(
        &self,
        scope: &str,
        request: LimitRequest,
    ) -> Result<LimitVerdict, StateStoreUnavailable> {
        self.admit_now(scope, request).await
    }

    async fn window(&self, scope: &str) -> Result<Option<Duration>, StateStoreUnavailable> {
        Ok(self.window_now(scope))
    }

    async fn note_window(
        &self,
        scope: &str,
        note: WindowNote,
    ) -> Result<(), StateStoreUnavailable> {
        self.note_window_now(scope, note);
        Ok(())
    }
}
