//! The in-memory [`CallerQuotaStore`]: one replica's caller quotas, and the
//! fallback of a shared store under the `local` failure policy.
//!
//! One entry per caller (callers are configured: the map is bounded),
//! behind a `std` mutex held for nanoseconds, never across an await. The
//! clock is the system's wall clock in ms since the epoch (UTC periods);
//! tests may give their own.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, SystemTime},
};

use async_trait::async_trait;

use super::{CallerQuota, CallerQuotaStore, QuotaBalance, QuotaLimit, QuotaVerdict, period};
use crate::{RunSlot, StateStoreUnavailable};

type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Caller quotas kept in this process.
pub struct MemoryCallerQuotaStore {
    callers: Mutex<HashMap<String, CallerState>>,
    clock: Clock,
}

impl fmt::Debug for MemoryCallerQuotaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCallerQuotaStore")
            .finish_non_exhaustive()
    }
}

impl Default for MemoryCallerQuotaStore {
    fn default() -> Self {
        Self::with_clock(Arc::new(system_ms))
    }
}

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

#[derive(Debug, Default)]
struct CallerState {
    /// (window index, requests counted in it).
    window: (u64, u32),
    /// (UTC day index, credits used).
    day: (u64, f64),
    /// (UTC month index, credits used).
    month: (u64, f64),
    runs: Arc<AtomicU32>,
}

/// Gives a run back when dropped.
#[derive(Debug)]
struct RunLease(Arc<AtomicU32>);

impl Drop for RunLease {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The current period of `used`, reset when the period changed.
fn current(used: &mut (u64, f64), period: period::Period) -> &mut f64 {
    if used.0 != period.index {
        *used = (period.index, 0.0);
    }
    &mut used.1
}

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

impl CallerState {
    /// The credit balance at `now` (periods rolled over first).
    fn credits(&mut self, quota: &CallerQuota, now: u64) -> (Option<f64>, Option<Duration>) {
        let day = period::day(now);
        let month = period::month(now);
        let day_used = *current(&mut self.day, day);
        let month_used = *current(&mut self.month, month);
        QuotaBalance::credits_of(
            quota
                .credits_per_day
                .map(|budget| (budget - day_used, ms(day.left_ms(now)))),
            quota
                .credits_per_month
                .map(|budget| (budget - month_used, ms(month.left_ms(now)))),
        )
    }
}

impl MemoryCallerQuotaStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store reading the time (ms since the epoch) from `clock`.
    pub fn with_clock(clock: Arc<dyn Fn() -> u64 + Send + Sync>) -> Self {
        Self {
            callers: Mutex::new(HashMap::new()),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, CallerState>> {
        // A panic while holding the lock leaves counters at worst stale.
        self.callers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// [`CallerQuotaStore::admit`], synchronously.
    pub fn admit_now(&self, caller: &str, quota: &CallerQuota) -> QuotaVerdict {
        let now = (self.clock)();
        let mut callers = self.lock();
        let state = match callers.get_mut(caller) {
            Some(state) => state,
            None => callers.entry(caller.to_owned()).or_default(),
        };
        let (credits_remaining, credits_reset) = state.credits(quota, now);
        let window = quota.requests.map(|(requests, window)| {
            let window = period::window(now, u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
            if state.window.0 != window.index {
                state.window = (window.index, 0);
            }
            (requests, window)
        });
        let mut balance = QuotaBalance {
            requests_remaining: window
                .map(|(requests, _)| u64::from(requests.saturating_sub(state.window.1))),
            requests_reset: window.map(|(_, window)| ms(window.left_ms(now))),
            credits_remaining,
            credits_reset,
        };
        let refused = |limit, retry_after| QuotaVerdict::Refused {
            limit,
            retry_after,
            balance,
        };
        let month = period::month(now);
        if let Some(budget) = quota.credits_per_month
            && state.month.1 >= budget
        {
            return refused(QuotaLimit::CreditsPerMonth, Some(ms(month.left_ms(now))));
        }
        let day = period::day(now);
        if let Some(budget) = quota.credits_per_day
            && state.day.1 >= budget
        {
            return refused(QuotaLimit::CreditsPerDay, Some(ms(day.left_ms(now))));
        }
        if let Some((requests, window)) = window
            && state.window.1 >= requests
        {
            return refused(QuotaLimit::Requests, Some(ms(window.left_ms(now))));
        }
        if let Some(max) = quota.max_concurrent_runs
            && state.runs.load(Ordering::Acquire) >= max
        {
            return refused(QuotaLimit::ConcurrentRuns, None);
        }
        if window.is_some() {
            state.window.1 += 1;
            balance.requests_remaining = balance.requests_remaining.map(|left| left - 1);
        }
        let run = quota.max_concurrent_runs.map(|_| {
            state.runs.fetch_add(1, Ordering::AcqRel);
            RunSlot::new(RunLease(Arc::clone(&state.runs)))
        });
        QuotaVerdict::Admitted { balance, run }
    }

    /// [`CallerQuotaStore::charge`], synchronously.
    pub fn charge_now(&self, caller: &str, quota: &CallerQuota, credits: f64) -> QuotaBalance {
        let now = (self.clock)();
        let credits = if credits.is_finite() {
            credits.max(0.0)
        } else {
            0.0
        };
        let mut callers = self.lock();
        let state = match callers.get_mut(caller) {
            Some(state) => state,
            None => callers.entry(caller.to_owned()).or_default(),
        };
        *current(&mut state.day, period::day(now)) += credits;
        *current(&mut state.month, period::month(now)) += credits;
        let (credits_remaining, credits_reset) = state.credits(quota, now);
        QuotaBalance {
            credits_remaining,
            credits_reset,
            ..QuotaBalance::default()
        }
    }
}

#[async_trait]
impl CallerQuotaStore for MemoryCallerQuotaStore {
    async fn admit(
        &self,
        caller: &str,
        quota: &CallerQuota,
    ) -> Result<QuotaVerdict, StateStoreUnavailable> {
        Ok(self.admit_now(caller, quota))
    }

    async fn charge(
        &self,
        caller: &str,
        quota: &CallerQuota,
        credits: f64,
    ) -> Result<QuotaBalance, StateStoreUnavailable> {
        Ok(self.charge_now(caller, quota, credits))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    const DAY: u64 = 24 * 3600 * 1000;

    fn store_at(start: u64) -> (MemoryCallerQuotaStore, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(start));
        let clock = Arc::clone(&now);
        let store =
            MemoryCallerQuotaStore::with_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
        (store, now)
    }

    fn refused(verdict: QuotaVerdict) -> (QuotaLimit, Option<Duration>) {
        match verdict {
            QuotaVerdict::Refused {
                limit, retry_after, ..
            } => (limit, retry_after),
            QuotaVerdict::Admitted { .. } => panic!("admitted"),
        }
    }

    #[test]
    fn budgets_roll_over_at_utc_midnight_and_month_end() {
        // 2026-12-31T23:00:00Z.
        let start = 1_798_758_000_000;
        let (store, now) = store_at(start);
        let quota = CallerQuota {
            credits_per_day: Some(10.0),
            credits_per_month: Some(15.0),
            ..CallerQuota::default()
        };
        assert!(matches!(
            store.admit_now("ci", &quota),
            QuotaVerdict::Admitted { .. }
        ));
        let balance = store.charge_now("ci", &quota, 10.0);
        assert_eq!(balance.credits_remaining, Some(0.0));
        assert_eq!(balance.credits_reset, Some(Duration::from_secs(3600)));
        assert_eq!(
            refused(store.admit_now("ci", &quota)),
            (QuotaLimit::CreditsPerDay, Some(Duration::from_secs(3600)))
        );
        // Another caller is untouched.
        assert!(matches!(
            store.admit_now("ops", &quota),
            QuotaVerdict::Admitted { .. }
        ));
        // A new day and a new month: both budgets are full again.
        now.store(start + 3_600_000, Ordering::SeqCst);
        match store.admit_now("ci", &quota) {
            QuotaVerdict::Admitted { balance, .. } => {
                assert_eq!(balance.credits_remaining, Some(10.0));
                assert_eq!(balance.credits_reset, Some(Duration::from_millis(DAY)));
            }
            other => panic!("{other:?}"),
        }
        store.charge_now("ci", &quota, 9.0);
        now.store(start + 3_600_000 + DAY, Ordering::SeqCst);
        store.charge_now("ci", &quota, 6.5);
        // The month (15) is spent before the day (10): its reset is later.
        let (limit, retry_after) = refused(store.admit_now("ci", &quota));
        assert_eq!(limit, QuotaLimit::CreditsPerMonth);
        assert!(retry_after.unwrap() > Duration::from_millis(28 * DAY));
    }

    #[test]
    fn windows_and_runs() {
        let (store, now) = store_at(120_000);
        let quota = CallerQuota {
            requests: Some((2, Duration::from_secs(60))),
            max_concurrent_runs: Some(1),
            ..CallerQuota::default()
        };
        let first = match store.admit_now("ci", &quota) {
            QuotaVerdict::Admitted { balance, run } => {
                assert_eq!(balance.requests_remaining, Some(1));
                assert_eq!(balance.requests_reset, Some(Duration::from_secs(60)));
                run
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            refused(store.admit_now("ci", &quota)),
            (QuotaLimit::ConcurrentRuns, None)
        );
        drop(first);
        now.store(150_000, Ordering::SeqCst);
        assert!(matches!(
            store.admit_now("ci", &quota),
            QuotaVerdict::Admitted { .. }
        ));
        assert_eq!(
            refused(store.admit_now("ci", &quota)),
            (QuotaLimit::Requests, Some(Duration::from_secs(30)))
        );
        now.store(180_000, Ordering::SeqCst);
        assert!(matches!(
            store.admit_now("ci", &quota),
            QuotaVerdict::Admitted { .. }
        ));
    }
}
