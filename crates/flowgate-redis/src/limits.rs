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
//! **Run slots are leases.** A held slot is renewed every third of
//! `slot_lease` by a task of the holder; dropping the [`RunSlot`] stops it
//! and removes the slot. A replica that dies stops renewing, and its slots
//! lapse within one lease: the next admission sweeps them.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use flowgate_core::{
    LimitRequest, LimitStore, LimitVerdict, RunSlot, StateStoreUnavailable, WindowNote,
};
use redis::Script;
use tokio::{task::JoinHandle, time::Instant};

use crate::{RedisConnection, StoreUnavailable};

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
    slot_lease: Duration,
    scripts: Arc<Scripts>,
}

#[derive(Debug)]
struct Scripts {
    admit: Script,
    note_window: Script,
    renew_slot: Script,
}

impl RedisLimitStore {
    /// Limits in `redis`, run slots leased for `slot_lease` (at least 1 s).
    pub fn new(redis: RedisConnection, slot_lease: Duration) -> Self {
        Self {
            redis,
            slot_lease: slot_lease.max(Duration::from_secs(1)),
            scripts: Arc::new(Scripts {
                admit: Script::new(include_str!("lua/limits_admit.lua")),
                note_window: Script::new(include_str!("lua/limits_note_window.lua")),
                renew_slot: Script::new(include_str!("lua/limits_renew_slot.lua")),
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
                    .arg(millis(self.slot_lease))
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

    /// A held slot: renewed until dropped, then removed.
    fn hold(&self, scope: &str, holder: String) -> RunSlot {
        let slots = self.key("slots", scope);
        let renewer = {
            let store = self.clone();
            let slots = slots.clone();
            let holder = holder.clone();
            tokio::spawn(async move { store.renew_until_dropped(&slots, &holder).await })
        };
        RunSlot::new(HeldSlot {
            redis: self.redis.clone(),
            slots,
            holder,
            renewer,
        })
    }

    async fn renew_until_dropped(&self, slots: &str, holder: &str) {
        let every = self.slot_lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let renewed: Result<i64, _> = self
                .redis
                .script(
                    self.scripts
                        .renew_slot
                        .key(slots)
                        .arg(holder)
                        .arg(millis(self.slot_lease)),
                )
                .await;
            match renewed {
                Ok(1) => {}
                Ok(_) => {
                    tracing::warn!(
                        key = slots,
                        "a run slot's lease lapsed before the run ended (Redis unreachable for a whole lease?); the slot may be counted twice until the run ends"
                    );
                    return;
                }
                Err(error) => {
                    tracing::debug!(%error, key = slots, "run slot lease not renewed; retrying");
                }
            }
        }
    }
}

/// A run slot held in Redis.
#[derive(Debug)]
struct HeldSlot {
    redis: RedisConnection,
    slots: String,
    holder: String,
    renewer: JoinHandle<()>,
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        self.renewer.abort();
        let redis = self.redis.clone();
        let slots = std::mem::take(&mut self.slots);
        let holder = std::mem::take(&mut self.holder);
        // Released in the background; if that fails, the lease lapses.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let released: Result<i64, _> = redis
                    .query(redis::cmd("ZREM").arg(&slots).arg(&holder))
                    .await;
                if let Err(error) = released {
                    tracing::debug!(%error, key = slots, "run slot not released; its lease will lapse");
                }
            });
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
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
                        request.slot.map(|_| self.hold(scope, holder)),
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
