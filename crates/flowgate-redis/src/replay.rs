//! [`ReplayStore`] on Redis: `SET <prefix>replay:{id} 1 NX PX <ttl>`, one
//! round trip; the id is its own hash tag, so ids spread over a cluster.

use std::time::Duration;

use async_trait::async_trait;
use flowgate_core::{ReplayStore, StateStoreUnavailable};

use crate::RedisConnection;

/// Webhook event ids on Redis.
#[derive(Clone, Debug)]
pub struct RedisReplayStore {
    redis: RedisConnection,
}

impl RedisReplayStore {
    /// Replay ids in `redis`.
    pub fn new(redis: RedisConnection) -> Self {
        Self { redis }
    }
}

#[async_trait]
impl ReplayStore for RedisReplayStore {
    async fn first_seen(&self, id: &str, ttl: Duration) -> Result<bool, StateStoreUnavailable> {
        let key = self.redis.key("replay", id);
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> = self
            .redis
            .query(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms),
            )
            .await
            .map_err(|error| StateStoreUnavailable(error.to_string()))?;
        Ok(set.is_some())
    }
}
