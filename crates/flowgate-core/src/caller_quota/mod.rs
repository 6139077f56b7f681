//! Per-caller quotas: a request rate per window, concurrent runs, and a
//! credit budget per UTC day and/or month, counted on a store every
//! replica shares (memory for one replica, Redis for several).
//!
//! - **One round trip per admission.** [`CallerQuotaStore::admit`] checks
//!   the budgets, takes a request from the current window and a run lease
//!   together; a refusal takes nothing. [`CallerQuotaStore::charge`] adds
//!   a finished run's credits afterwards (a second, separate step: the cost
//!   is known only once the vendor answered).
//! - **Fixed windows on the store's clock.** The request window is aligned
//!   to the Unix epoch (`floor(now / window)`), days and months are UTC, and
//!   every time that crosses the seam is relative ("resets in 12 s"), so a
//!   shared store measures on its own clock (Redis `TIME`) and replicas'
//!   clocks never need to agree.
//! - **Budgets are checked, not reserved.** A run is admitted while any
//!   credit is left in each configured period; its cost is charged when it
//!   is known, so the runs in flight when a budget runs out may overshoot it
//!   by their own cost.
//! - **Run leases.** A held run is a [`RunSlot`]: dropping it gives the run
//!   back; a shared store's lease also lapses by itself if its holder dies.

mod memory;
pub mod period;

use std::{fmt, time::Duration};

use async_trait::async_trait;

pub use memory::MemoryCallerQuotaStore;

use crate::{RunSlot, StateStoreUnavailable};

/// One caller's quotas; `None` is unlimited.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CallerQuota {
    /// At most this many requests per fixed window.
    pub requests: Option<(u32, Duration)>,
    /// At most this many runs in flight at once.
    pub max_concurrent_runs: Option<u32>,
    /// Credits per UTC day.
    pub credits_per_day: Option<f64>,
    /// Credits per UTC calendar month.
    pub credits_per_month: Option<f64>,
    /// What a run whose cost the vendor did not report is charged.
    pub unknown_cost: f64,
}

impl Default for CallerQuota {
    fn default() -> Self {
        Self {
            requests: None,
            max_concurrent_runs: None,
            credits_per_day: None,
            credits_per_month: None,
            unknown_cost: Self::DEFAULT_UNKNOWN_COST,
        }
    }
}

impl CallerQuota {
    /// `unknown_cost` unless configured.
    pub const DEFAULT_UNKNOWN_COST: f64 = 1.0;

    /// True when nothing is limited (no store is asked at all).
    pub fn is_unlimited(&self) -> bool {
        self.requests.is_none() && self.max_concurrent_runs.is_none() && !self.has_budget()
    }

    /// True when a credit budget is configured.
    pub fn has_budget(&self) -> bool {
        self.credits_per_day.is_some() || self.credits_per_month.is_some()
    }
}

/// Which quota refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaLimit {
    /// `requests_per_window`.
    Requests,
    /// `max_concurrent_runs`.
    ConcurrentRuns,
    /// `credits_per_day`.
    CreditsPerDay,
    /// `credits_per_month`.
    CreditsPerMonth,
}

impl QuotaLimit {
    /// The `QuotaFailure` violation description.
    pub fn description(self) -> &'static str {
        match self {
            Self::Requests => "requests per window (requests_per_window)",
            Self::ConcurrentRuns => "concurrent runs (max_concurrent_runs)",
            Self::CreditsPerDay => "credits per UTC day (credits_per_day)",
            Self::CreditsPerMonth => "credits per UTC month (credits_per_month)",
        }
    }
}

/// What a caller has left, as of the last answer of the store.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct QuotaBalance {
    /// Requests left in the current window (this call's counted).
    pub requests_remaining: Option<u64>,
    /// Until the request window resets.
    pub requests_reset: Option<Duration>,
    /// Credits left: the smallest of the configured periods', never below 0.
    pub credits_remaining: Option<f64>,
    /// Until that period resets.
    pub credits_reset: Option<Duration>,
}

impl QuotaBalance {
    /// The credit part of the balance from what is left of each period
    /// (`(left, resets_in)`; `None` when not configured): the smallest
    /// wins, the later reset on a tie.
    pub fn credits_of(
        day: Option<(f64, Duration)>,
        month: Option<(f64, Duration)>,
    ) -> (Option<f64>, Option<Duration>) {
        let smallest = match (day, month) {
            (Some(day), Some(month)) if month.0 <= day.0 => Some(month),
            (Some(day), _) => Some(day),
            (None, month) => month,
        };
        (
            smallest.map(|(left, _)| left.max(0.0)),
            smallest.map(|(_, reset)| reset),
        )
    }
}

/// The answer to [`CallerQuotaStore::admit`].
#[derive(Debug)]
pub enum QuotaVerdict {
    /// Go ahead; hold the run (if a run limit is configured) until the call
    /// ends.
    Admitted {
        /// What is left, this call counted.
        balance: QuotaBalance,
        /// The run lease.
        run: Option<RunSlot>,
    },
    /// Refused; nothing was taken.
    Refused {
        /// Which quota.
        limit: QuotaLimit,
        /// Until it resets (none for concurrent runs).
        retry_after: Option<Duration>,
        /// What is left.
        balance: QuotaBalance,
    },
}

/// Per-caller quotas shared by whoever holds the same store.
#[async_trait]
pub trait CallerQuotaStore: Send + Sync + fmt::Debug {
    /// Checks, in order, the month budget, the day budget (a spent month
    /// is the later reset), the request window and the run limit of
    /// `caller`; admits only when every one has
    /// room, then counts the request and takes a run lease. Never waits.
    async fn admit(
        &self,
        caller: &str,
        quota: &CallerQuota,
    ) -> Result<QuotaVerdict, StateStoreUnavailable>;

    /// Adds `credits` to the caller's current day and month; answers the
    /// credit part of the balance afterwards.
    async fn charge(
        &self,
        caller: &str,
        quota: &CallerQuota,
        credits: f64,
    ) -> Result<QuotaBalance, StateStoreUnavailable>;
}
