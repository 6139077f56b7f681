//! Leased slots in a Redis sorted set (member: the holder, score: when its
//! lease ends, in ms on Redis's clock), as provider run slots and callers'
//! concurrent runs use them.
//!
//! A held slot is renewed every third of the lease by a task of the holder
//! (`lua/limits_renew_slot.lua`); dropping the [`RunSlot`] stops the task
//! and removes the slot. A replica that dies stops renewing, and its slots
//! lapse within one lease (the next admission script sweeps them).

use std::{sync::Arc, time::Duration};

use flowgate_core::RunSlot;
use redis::Script;
use tokio::task::JoinHandle;

use crate::RedisConnection;

/// Holds and renews leased slots of one kind.
#[derive(Clone, Debug)]
pub(crate) struct SlotLeases {
    redis: RedisConnection,
    lease: Duration,
    renew: Arc<Script>,
    /// What a slot is, for log lines ("run slot", "caller run").
    what: &'static str,
}

impl SlotLeases {
    /// Slots in `redis` leased for `lease`.
    pub fn new(redis: RedisConnection, lease: Duration, what: &'static str) -> Self {
        Self {
            redis,
            lease,
            renew: Arc::new(Script::new(include_str!("lua/limits_renew_slot.lua"))),
            what,
        }
    }

    /// The lease in ms, as the admission scripts take it.
    pub fn lease_ms(&self) -> u64 {
        millis(self.lease)
    }

    /// The slot `holder` was just given in the sorted set `key`: renewed
    /// until the returned [`RunSlot`] is dropped, then removed.
    pub fn hold(&self, key: String, holder: String) -> RunSlot {
        let renewer = {
            let leases = self.clone();
            let key = key.clone();
            let holder = holder.clone();
            tokio::spawn(async move { leases.renew_until_dropped(&key, &holder).await })
        };
        RunSlot::new(HeldSlot {
            redis: self.redis.clone(),
            key,
            holder,
            what: self.what,
            renewer,
        })
    }

    async fn renew_until_dropped(&self, key: &str, holder: &str) {
        loop {
            tokio::time::sleep(self.lease / 3).await;
            let renewed: Result<i64, _> = self
                .redis
                .script(self.renew.key(key).arg(holder).arg(self.lease_ms()))
                .await;
            match renewed {
                Ok(1) => {}
                Ok(_) => {
                    tracing::warn!(
                        key,
                        what = self.what,
                        "a lease lapsed before its run ended (Redis unreachable for a whole lease?); the run may be counted twice until it ends"
                    );
                    return;
                }
                Err(error) => {
                    tracing::debug!(%error, key, what = self.what, "lease not renewed; retrying");
                }
            }
        }
    }
}

/// A slot held in Redis.
#[derive(Debug)]
struct HeldSlot {
    redis: RedisConnection,
    key: String,
    holder: String,
    what: &'static str,
    renewer: JoinHandle<()>,
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        self.renewer.abort();
        let redis = self.redis.clone();
        let key = std::mem::take(&mut self.key);
        let holder = std::mem::take(&mut self.holder);
        let what = self.what;
        // Released in the background; if that fails, the lease lapses.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let released: Result<i64, _> =
                    redis.query(redis::cmd("ZREM").arg(&key).arg(&holder)).await;
                if let Err(error) = released {
                    tracing::debug!(%error, key, what, "not released; its lease will lapse");
                }
            });
        }
    }
}

/// `duration` in whole ms, saturating.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
