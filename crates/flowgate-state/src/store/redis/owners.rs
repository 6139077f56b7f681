//! Owner leases on Redis: who runs a run's work (a gateway-run call, a
//! poller), so a replica that dies is noticed and its work taken over.
//!
//! Runs are spread over [`SHARDS`] shards by a stable hash of the run id;
//! the shard is the hash tag, so a lease and its shard's index share one
//! cluster slot and every script below touches one slot:
//! - `<prefix>run-owner:{o<shard>}:<run id>`: the holder's token, `PX` the
//!   lease (it vanishes by itself when not renewed);
//! - `<prefix>run-owners:{o<shard>}`: a sorted set of run ids by lease
//!   deadline (ms, Redis's clock), so a sweep finds lapsed leases with one
//!   `ZRANGEBYSCORE` per shard instead of a `SCAN`; it expires `runs.ttl`
//!   after its last claim.

use std::time::Duration;

use flowgate_core::RunId;
use flowgate_redis::redis::Script;

use super::{RedisRunStore, StoreUnavailable};

/// Shards of the lease index: a sweep costs this many round trips; more
/// shards spread the index over more cluster slots.
pub(super) const SHARDS: u32 = 16;

/// KEYS: lease, index. ARGV: token, lease ms, index ttl ms, member, mode
/// (`claim`: free, lapsed or already the token's; `renew`: only the
/// token's). Returns 1 when the token holds the lease, until now + lease.
pub(super) const CLAIM: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder ~= ARGV[1] and (ARGV[5] == 'renew' or holder) then return 0 end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[4])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 1
";

/// KEYS: lease, index. ARGV: token, member. Ends the token's lease (a
/// lapsed one stays in the index for a sweep to find).
pub(super) const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
";

/// KEYS: index. ARGV: most members. The members whose deadline passed.
pub(super) const EXPIRED: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
";

/// The scripts, compiled once.
pub(super) struct OwnerScripts {
    claim: Script,
    release: Script,
    expired: Script,
}

impl OwnerScripts {
    pub(super) fn new() -> Self {
        Self {
            claim: Script::new(CLAIM),
            release: Script::new(RELEASE),
            expired: Script::new(EXPIRED),
        }
    }
}

/// The shard of a run: FNV-1a of its encoded id (stable across replicas
/// and builds), modulo [`SHARDS`].
fn shard(encoded: &str) -> u32 {
    let hash = encoded.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash % SHARDS
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl RedisRunStore {
    fn index_key(&self, shard: u32) -> String {
        self.inner.commands.key("run-owners", &format!("o{shard}"))
    }

    /// The lease key and index key of a run, and its index member.
    fn owner_keys(&self, run_id: &RunId) -> (String, String, String) {
        let member = run_id.encode();
        let shard = shard(&member);
        let lease = format!(
            "{}:{member}",
            self.inner.commands.key("run-owner", &format!("o{shard}"))
        );
        (lease, self.index_key(shard), member)
    }

    pub(super) async fn owner_claim(
        &self,
        run_id: &RunId,
        token: &str,
        lease: Duration,
        mode: &str,
    ) -> Result<bool, StoreUnavailable> {
        let (lease_key, index, member) = self.owner_keys(run_id);
        let lease_ms = millis(lease);
        let mut invocation = self.inner.owners.claim.prepare_invoke();
        invocation
            .key(lease_key)
            .key(index)
            .arg(token)
            .arg(lease_ms)
            .arg(self.inner.ttl_ms.max(lease_ms.saturating_mul(2)))
            .arg(member)
            .arg(mode);
        let held: i64 = self.inner.commands.script(&invocation).await?;
        Ok(held == 1)
    }

    pub(super) async fn owner_release(
        &self,
        run_id: &RunId,
        token: &str,
    ) -> Result<(), StoreUnavailable> {
        let (lease_key, index, member) = self.owner_keys(run_id);
        let mut invocation = self.inner.owners.release.prepare_invoke();
        invocation.key(lease_key).key(index).arg(token).arg(member);
        self.inner
            .commands
            .script::<i64>(&invocation)
            .await
            .map(drop)
    }

    pub(super) async fn owners_expired(&self, max: usize) -> Result<Vec<RunId>, StoreUnavailable> {
        let mut found = Vec::new();
        for shard in 0..SHARDS {
            let left = max.saturating_sub(found.len());
            if left == 0 {
                break;
            }
            let mut invocation = self.inner.owners.expired.prepare_invoke();
            invocation.key(self.index_key(shard)).arg(left);
            let members: Vec<String> = self.inner.commands.script(&invocation).await?;
            // A member that does not parse was not written by a gateway.
            found.extend(members.iter().filter_map(|member| RunId::decode(member)));
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard("fgr_a"), shard("fgr_a"));
        let used: std::collections::HashSet<u32> = (0..200)
            .map(|index| shard(&RunId::new("kn", format!("e-{index}")).encode()))
            .collect();
        assert_eq!(used.len(), SHARDS as usize);
    }
}
