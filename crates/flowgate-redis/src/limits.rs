//! [`LimitStore`] on Redis: every replica on one Redis spends one budget.
//!
//! Per provider scope, three keys sharing the hash tag `{scope}` (one
//! cluster slot, so one script may touch them all), each with a TTL:
//!
//! | key | type | TTL |
//! |---|---|---|
//! | `<prefix>window:{scope}` | string | the spent window itself (`PX`) |
//! | `<prefix>rate:{scope}` | hash `tokens`, `at` (ms) | rate window + 1 s |
//! | `<prefix>slots:{scope}` | zset holder → lease expiry (ms) | 2 × lease |
//!
//! An admission is **one** `EVALSHA` (`lua/limits_admit.lua`): the window,
//! then a free slot, then a rate token, on Redis's own clock (`TIME`), so
//! replicas' clocks never matter. Nothing is taken unless everything is
//! free. A slot waits (up to its `wait`) by asking again with backoff: only
//! a contended call pays more than one round trip.
//!
//! **Run slots are leases** (`slot_lease`): renewed by their holder, removed
//! when the [`RunSlot`](flowgate_core::RunSlot) is dropped, lapsing within one lease when a replica
//! dies (see `slot_lease.rs`).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use flowgate_core::{LimitRequest, LimitStore, LimitVerdict, StateStoreUnavailable, WindowNote};
use redis::Script;
use tokio::time::Instant;

use crate::{
    RedisConnection, StoreUnavailable,
    slot_lease::{SlotLeases, millis},
};

/// How long a run slot is leased unless configured.
pub const DEFAULT_SLOT_LEASE: Duration = flowgate_core::SharedLimitsSettings::DEFAULT_SLOT_LEASE;

/// First pause between two tries for a busy slot; doubles up to
/// [`SLOT_RETRY_MAX`].
const SLOT_RETRY_MIN: Duration = Duration::from_millis(25);
const SLOT_RETRY_MAX: Duration = Duration::from_millis(500);

/// Provider limits on Redis.
#[derive(Clone, Debug)]
pub struct RedisLimitStore {
    redis: RedisConnection,
    slots: SlotLeases,
    scripts: Arc<Scripts>,
}

#[derive(Debug)]
struct Scripts {
    admit: Script,
    note_window: Script,
}

impl RedisLimitStore {
    /// Limits in `redis`, run slots leased for `slot_lease` (at least 1 s).
    pub fn new(redis: RedisConnection, slot_lease: Duration) -> Self {
        let lease = slot_lease.max(Duration::from_secs(1));
        Self {
            slots: SlotLeases::new(redis.clone(), lease, "run slot"),
            redis,
            scripts: Arc::new(Scripts {
                admit: Script::new(include_str!("lua/limits_admit.lua")),
                note_window: Script::new(include_str!("lua/limits_note_window.lua")),
            }),
        }
    }

    fn key(&self, kind: &str, scope: &str) -> String {
        self.redis.key(kind, scope)
    }

    /// One try of the admission script.
    async fn try_admit(
        &self,
        scope: &str,
        request: LimitRequest,
        holder: &str,
    ) -> Result<(i64, i64), StoreUnavailable> {
        let rate = request.rate;
        let slot = request.slot;
        let answer: Vec<i64> = self
            .redis
            .script(
                self.scripts
                    .admit
                    .key(self.key("window", scope))
                    .key(self.key("rate", scope))
                    .key(self.key("slots", scope))
                    .arg(u8::from(rate.is_some()))
                    .arg(rate.map_or(1, |rate| rate.requests.max(1)))
                    .arg(rate.map_or(1, |rate| millis(rate.window).max(1)))
                    .arg(u8::from(slot.is_some()))
                    .arg(slot.map_or(1, |slot| slot.max.max(1)))
                    .arg(self.slots.lease_ms())
                    .arg(holder),
            )
            .await?;
        match answer.as_slice() {
            [verdict, ms] => Ok((*verdict, *ms)),
            _ => Err(StoreUnavailable {
                kind: crate::UnavailableKind::Server,
                operation: "limits admission",
                detail: format!("unexpected script answer {answer:?}"),
            }),
        }
    }
}

fn unavailable(error: StoreUnavailable) -> StateStoreUnavailable {
    StateStoreUnavailable(error.to_string())
}

#[async_trait]
impl LimitStore for RedisLimitStore {
    async fn admit(
        &self,
        scope: &str,
        request: LimitRequest,
    ) -> Result<LimitVerdict, StateStoreUnavailable> {
        let holder = format!("{:032x}", rand::random::<u128>());
        let give_up = request.slot.map(|slot| {
            Instant::now()
                .checked_add(slot.wait)
                .unwrap_or_else(Instant::now)
        });
        let mut pause = SLOT_RETRY_MIN;
        loop {
            let (verdict, ms) = self
                .try_admit(scope, request, &holder)
                .await
                .map_err(unavailable)?;
            let ms = Duration::from_millis(u64::try_from(ms).unwrap_or_default());
            match verdict {
                0 => {
                    return Ok(LimitVerdict::Admitted(
                        request
                            .slot
                            .map(|_| self.slots.hold(self.key("slots", scope), holder)),
                    ));
                }
                1 => return Ok(LimitVerdict::WindowExhausted { retry_after: ms }),
                2 => return Ok(LimitVerdict::RateLimited { retry_after: ms }),
                _ => {}
            }
            let now = Instant::now();
            let Some(left) = give_up.and_then(|at| at.checked_duration_since(now)) else {
                return Ok(LimitVerdict::NoSlot);
            };
            if left.is_zero() {
                return Ok(LimitVerdict::NoSlot);
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(SLOT_RETRY_MAX);
        }
    }

    async fn window(&self, scope: &str) -> Result<Option<Duration>, StateStoreUnavailable> {
        let left: i64 = self
            .redis
            .query(redis::cmd("PTTL").arg(self.key("window", scope)))
            .await
            .map_err(unavailable)?;
        Ok(u64::try_from(left)
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis))
    }

    async fn note_window(
        &self,
        scope: &str,
        note: WindowNote,
    ) -> Result<(), StateStoreUnavailable> {
        if note.is_empty() {
            return Ok(());
        }
        let ms = |duration: Option<Duration>| duration.map(|d| millis(d).to_string());
        let _: i64 = self
            .redis
            .script(
                self.scripts
                    .note_window
                    .key(self.key("window", scope))
                    .arg(ms(note.spent_for).unwrap_or_default())
                    .arg(ms(note.at_least).unwrap_or_default()),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
