//! Idempotency records on Redis, shared by every replica.
//!
//! One hash per key, `<prefix>idem:{<id>}`, where `<id>` is the hex SHA-256
//! of the scope and the caller's key (so any key is a valid, bounded hash
//! tag, and the caller's text never reaches Redis). Fields: `h` the request
//! hash (32 bytes), `s` the state (`p` pending, `d` done), `a` the recorded
//! answer. Every change is one Lua script, so a claim is atomic (SET NX
//! semantics plus the hash comparison) and every key carries a TTL: a
//! pending claim expires with its lease (the first call's deadline plus a
//! margin; a replica that dies mid-call frees the key by itself), a
//! recorded answer `ttl` after it was recorded. A waiter polls the hash
//! (50 ms, backing off to 250 ms) until the answer appears, the claim goes,
//! or its own wait ends: bounded by the caller's deadline.

use std::{fmt, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use flowgate_state::idempotency::{
    Claim, IdempotencyKey, IdempotencyStore, RecordedAnswer, RequestHash, Settled,
    StoreUnavailable as IdempotencyUnavailable,
};
use redis::Script;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::{RedisConnection, StoreUnavailable};

/// First and longest pause between two looks at an in-flight key.
const POLL_FIRST: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_millis(250);

/// Claims the key for `ARGV[1]` (lease `ARGV[2]` ms), or says what it holds:
/// `{0}` claimed, `{1, answer}` recorded, `{2}` in flight, `{3}` mismatch.
const CLAIM: &str = r"
local h = redis.call('HGET', KEYS[1], 'h')
if not h then
  redis.call('HSET', KEYS[1], 'h', ARGV[1], 's', 'p')
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {0, ''}
end
if h ~= ARGV[1] then return {3, ''} end
if redis.call('HGET', KEYS[1], 's') == 'd' then
  return {1, redis.call('HGET', KEYS[1], 'a')}
end
return {2, ''}
";

/// Records `ARGV[2]` for the pending request `ARGV[1]`, kept `ARGV[3]` ms.
const RECORD: &str = r"
if redis.call('HGET', KEYS[1], 'h') == ARGV[1] and redis.call('HGET', KEYS[1], 's') == 'p' then
  redis.call('HSET', KEYS[1], 's', 'd', 'a', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
";

/// Drops the pending claim of `ARGV[1]`.
const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], 'h') == ARGV[1] and redis.call('HGET', KEYS[1], 's') == 'p' then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// [`IdempotencyStore`] on Redis (a single node or a cluster).
#[derive(Clone)]
pub struct RedisIdempotencyStore {
    redis: RedisConnection,
    ttl: Duration,
    claim: Script,
    record: Script,
    release: Script,
}

impl fmt::Debug for RedisIdempotencyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisIdempotencyStore")
            .field("redis", &self.redis)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl RedisIdempotencyStore {
    /// Records on `redis`, each answer kept for `ttl`.
    pub fn new(redis: RedisConnection, ttl: Duration) -> Self {
        Self {
            redis,
            ttl,
            claim: Script::new(CLAIM),
            record: Script::new(RECORD),
            release: Script::new(RELEASE),
        }
    }

    /// The Redis key of `key`.
    pub fn redis_key(&self, key: &IdempotencyKey) -> String {
        let mut digest = Sha256::new();
        digest.update(key.scope().as_bytes());
        digest.update([0]);
        digest.update(key.key().as_bytes());
        let id: String = digest
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        self.redis.key("idem", &id)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn unavailable(error: StoreUnavailable) -> IdempotencyUnavailable {
    IdempotencyUnavailable(error.to_string())
}

#[async_trait]
impl IdempotencyStore for RedisIdempotencyStore {
    async fn claim(
        &self,
        key: &IdempotencyKey,
        hash: RequestHash,
        lease: Duration,
    ) -> Result<Claim, IdempotencyUnavailable> {
        let redis_key = self.redis_key(key);
        let mut invocation = self.claim.key(&redis_key);
        invocation
            .arg(hash.as_bytes().as_slice())
            .arg(millis(lease));
        let (code, answer): (i64, Vec<u8>) =
            self.redis.script(&invocation).await.map_err(unavailable)?;
        Ok(match code {
            0 => Claim::Claimed,
            1 => Claim::Recorded(RecordedAnswer(Bytes::from(answer))),
            2 => Claim::InFlight,
            _ => Claim::Mismatch,
        })
    }

    async fn record(
        &self,
        key: &IdempotencyKey,
        hash: RequestHash,
        answer: RecordedAnswer,
    ) -> Result<(), IdempotencyUnavailable> {
        let redis_key = self.redis_key(key);
        let mut invocation = self.record.key(&redis_key);
        invocation
            .arg(hash.as_bytes().as_slice())
            .arg(answer.0.as_ref())
            .arg(millis(self.ttl));
        let _: i64 = self.redis.script(&invocation).await.map_err(unavailable)?;
        Ok(())
    }

    async fn release(
        &self,
        key: &IdempotencyKey,
        hash: RequestHash,
    ) -> Result<(), IdempotencyUnavailable> {
        let redis_key = self.redis_key(key);
        let mut invocation = self.release.key(&redis_key);
        invocation.arg(hash.as_bytes().as_slice());
        let _: i64 = self.redis.script(&invocation).await.map_err(unavailable)?;
        Ok(())
    }

    async fn settled(
        &self,
        key: &IdempotencyKey,
        hash: RequestHash,
        wait: Duration,
    ) -> Result<Settled, IdempotencyUnavailable> {
        let redis_key = self.redis_key(key);
        let until = Instant::now() + wait;
        let mut pause = POLL_FIRST;
        loop {
            let (stored, state, answer): (Option<Vec<u8>>, Option<String>, Option<Vec<u8>>) = self
                .redis
                .query(
                    redis::cmd("HMGET")
                        .arg(&redis_key)
                        .arg("h")
                        .arg("s")
                        .arg("a"),
                )
                .await
                .map_err(unavailable)?;
            match stored {
                Some(stored) if stored.as_slice() == hash.as_bytes().as_slice() => {
                    if state.as_deref() == Some("d") {
                        return Ok(Settled::Recorded(RecordedAnswer(Bytes::from(
                            answer.unwrap_or_default(),
                        ))));
                    }
                }
                _ => return Ok(Settled::Released),
            }
            let now = Instant::now();
            if now >= until {
                return Ok(Settled::InFlight);
            }
            tokio::time::sleep(pause.min(until - now)).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }
}
