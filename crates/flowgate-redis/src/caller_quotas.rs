//! [`CallerQuotaStore`] on Redis: every replica on one Redis counts one
//! set of caller quotas.
//!
//! Per caller, two keys sharing the hash tag `{caller}` (one cluster slot):
//!
//! | key | type | TTL |
//! |---|---|---|
//! | `<prefix>quota:{caller}` | hash: request window index and count, UTC day and month index and credits used | the longest configured period + 1 s |
//! | `<prefix>quota-runs:{caller}` | zset holder → lease expiry (ms) | 2 × lease |
//!
//! An admission is **one** `EVALSHA` (`lua/caller_quota_admit.lua`): both
//! budgets, the request window and a run lease, on Redis's own clock
//! (`TIME`), taking nothing unless everything has room. A charge is one more
//! (`lua/caller_quota_charge.lua`) once the run's cost is known. The period
//! arithmetic (fixed windows, UTC days and months) is
//! `lua/caller_quota_periods.lua`, prepended to both.
//!
//! **Runs are leases**, exactly like provider run slots (`slot_lease.rs`):
//! renewed by their holder, removed when the [`RunSlot`](flowgate_core::RunSlot) is dropped, lapsing
//! within one lease if the replica dies.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use flowgate_core::{
    CallerQuota, CallerQuotaStore, QuotaBalance, QuotaLimit, QuotaVerdict, StateStoreUnavailable,
};
use redis::Script;

use crate::{
    RedisConnection, StoreUnavailable, UnavailableKind,
    slot_lease::{SlotLeases, millis},
};

macro_rules! with_periods {
    ($file:literal) => {
        concat!(
            include_str!("lua/caller_quota_periods.lua"),
            "\n",
            include_str!($file)
        )
    };
}

/// The period arithmetic alone, for tests that compare it with the Rust
/// one: `caller_quota_periods.lua` followed by `body`.
pub const PERIODS_LUA: &str = include_str!("lua/caller_quota_periods.lua");

/// Caller quotas on Redis.
#[derive(Clone, Debug)]
pub struct RedisCallerQuotaStore {
    redis: RedisConnection,
    runs: SlotLeases,
    scripts: Arc<Scripts>,
}

#[derive(Debug)]
struct Scripts {
    admit: Script,
    charge: Script,
}

fn unavailable(error: StoreUnavailable) -> StateStoreUnavailable {
    StateStoreUnavailable(error.to_string())
}

fn nonsense(operation: &'static str, answer: &[String]) -> StateStoreUnavailable {
    unavailable(StoreUnavailable {
        kind: UnavailableKind::Server,
        operation,
        detail: format!("unexpected script answer {answer:?}"),
    })
}

/// `''` → `None`, else the number.
fn optional(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|value| value.is_finite())
}

fn duration_ms(text: &str) -> Option<Duration> {
    optional(text).map(|ms| Duration::from_millis(ms.max(0.0) as u64))
}

/// A budget as a script argument (`''`: none).
fn budget(value: Option<f64>) -> String {
    value.map(|budget| budget.to_string()).unwrap_or_default()
}

impl RedisCallerQuotaStore {
    /// Quotas in `redis`, runs leased for `lease` (at least 1 s).
    pub fn new(redis: RedisConnection, lease: Duration) -> Self {
        Self {
            runs: SlotLeases::new(
                redis.clone(),
                lease.max(Duration::from_secs(1)),
                "caller run",
            ),
            redis,
            scripts: Arc::new(Scripts {
                admit: Script::new(with_periods!("lua/caller_quota_admit.lua")),
                charge: Script::new(with_periods!("lua/caller_quota_charge.lua")),
            }),
        }
    }

    fn keys(&self, caller: &str) -> (String, String) {
        (
            self.redis.key("quota", caller),
            self.redis.key("quota-runs", caller),
        )
    }
}

#[async_trait]
impl CallerQuotaStore for RedisCallerQuotaStore {
    async fn admit(
        &self,
        caller: &str,
        quota: &CallerQuota,
    ) -> Result<QuotaVerdict, StateStoreUnavailable> {
        let (hash, runs) = self.keys(caller);
        let holder = format!("{:032x}", rand::random::<u128>());
        let (requests, window) = quota.requests.unwrap_or((0, Duration::from_secs(1)));
        let answer: Vec<String> = self
            .redis
            .script(
                self.scripts
                    .admit
                    .key(&hash)
                    .key(&runs)
                    .arg(requests)
                    .arg(millis(window).max(1))
                    .arg(quota.max_concurrent_runs.unwrap_or(0))
                    .arg(self.runs.lease_ms())
                    .arg(&holder)
                    .arg(budget(quota.credits_per_day))
                    .arg(budget(quota.credits_per_month)),
            )
            .await
            .map_err(unavailable)?;
        let [verdict, retry, left, reset, credits, credits_reset] = answer.as_slice() else {
            return Err(nonsense("caller quota admission", &answer));
        };
        let balance = QuotaBalance {
            requests_remaining: left.parse().ok(),
            requests_reset: duration_ms(reset),
            credits_remaining: optional(credits).map(|left| left.max(0.0)),
            credits_reset: duration_ms(credits_reset),
        };
        let refused = |limit, retry_after| {
            Ok(QuotaVerdict::Refused {
                limit,
                retry_after,
                balance,
            })
        };
        match verdict.as_str() {
            "0" => Ok(QuotaVerdict::Admitted {
                balance,
                run: quota
                    .max_concurrent_runs
                    .map(|_| self.runs.hold(runs, holder)),
            }),
            "1" => refused(QuotaLimit::Requests, duration_ms(retry)),
            "2" => refused(QuotaLimit::ConcurrentRuns, None),
            "3" => refused(QuotaLimit::CreditsPerDay, duration_ms(retry)),
            "4" => refused(QuotaLimit::CreditsPerMonth, duration_ms(retry)),
            _ => Err(nonsense("caller quota admission", &answer)),
        }
    }

    async fn charge(
        &self,
        caller: &str,
        quota: &CallerQuota,
        credits: f64,
    ) -> Result<QuotaBalance, StateStoreUnavailable> {
        let credits = if credits.is_finite() {
            credits.max(0.0)
        } else {
            0.0
        };
        let (hash, _) = self.keys(caller);
        let answer: Vec<String> = self
            .redis
            .script(
                self.scripts
                    .charge
                    .key(&hash)
                    .arg(credits.to_string())
                    .arg(budget(quota.credits_per_day))
                    .arg(budget(quota.credits_per_month)),
            )
            .await
            .map_err(unavailable)?;
        let [left, reset] = answer.as_slice() else {
            return Err(nonsense("caller quota charge", &answer));
        };
        Ok(QuotaBalance {
            credits_remaining: optional(left).map(|left| left.max(0.0)),
            credits_reset: duration_ms(reset),
            ..QuotaBalance::default()
        })
    }
}
