//! The shared store for several replicas: runs in Redis, events over Redis
//! pub/sub.
//!
//! Keys (the encoded run id is the hash tag, so a run's keys and channel
//! share one cluster slot and each script touches one slot):
//! - `<prefix>run:{<run id>}`: a hash (see `codec`), expiring `ttl` after
//!   the run's last change;
//! - `<prefix>run-events:{<run id>}`: the run's channel. Each applied change
//!   is published on it, by the same script that made it, as the record's
//!   fields (without the callback secret), so a subscriber on any replica
//!   needs no read. A single node uses `PUBLISH`/`SUBSCRIBE`, a cluster
//!   sharded `SPUBLISH`/`SSUBSCRIBE` (a message goes only to the shard
//!   owning the slot, not to every node).
//!
//! - owner leases and their index (see `owners`).
//!
//! One round trip per insert, get and update; a subscription costs a
//! subscribe round trip for the first subscriber of a run on a replica, and
//! a read.

mod codec;
mod events;
mod owners;

use std::{collections::HashMap, fmt, sync::Arc, time::Duration, time::SystemTime};

use async_trait::async_trait;
use flowgate_core::RunId;
use flowgate_redis::{
    RedisConfig, RedisConnection,
    redis::{self, Script},
};

use super::{RunChange, RunRecord, RunStore, StoreUnavailable, Subscription};
use events::Events;
pub(crate) use events::Release;

/// Shared by the scripts: publishes the record at KEYS[1] on KEYS[2] with
/// the command in ARGV[2], leaving the callback secret out.
const PUBLISH: &str = r"
local function publish()
  local fields = redis.call('HGETALL', KEYS[1])
  local message = {}
  for i = 1, #fields, 2 do
    if fields[i] ~= 'secret' then
      message[#message + 1] = fields[i]
      message[#message + 1] = fields[i + 1]
    end
  end
  redis.call(ARGV[2], KEYS[2], cjson.encode(message))
  return fields
end
";

/// KEYS: record, channel. ARGV: ttl ms, publish command, field/value pairs.
/// Replaces the record unless it is terminal; publishes a replacement.
const INSERT: &str = r"
local rank = redis.call('HGET', KEYS[1], 'rank')
if rank == '2' then return false end
local version = tonumber(redis.call('HGET', KEYS[1], 'v') or '0') + 1
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', version, unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if rank then publish() end
return version
";

/// KEYS: record, channel. ARGV: ttl ms, publish command, new rank, number
/// of fields to remove, those fields, field/value pairs to set. Applies the
/// change unless the record is terminal or it would not move the run
/// forward (the rules of `RunChange::apply`); returns the new record's
/// fields, or nil.
const UPDATE: &str = r"
local rank = redis.call('HGET', KEYS[1], 'rank')
if not rank then return false end
rank = tonumber(rank)
if rank == 2 or tonumber(ARGV[3]) <= rank then return false end
local removed = tonumber(ARGV[4])
for i = 5, 4 + removed do
  redis.call('HDEL', KEYS[1], ARGV[i])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5 + removed))
redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return publish()
";

/// The run store on Redis (single node or cluster). Cheap to clone.
#[derive(Clone)]
pub struct RedisRunStore {
    inner: Arc<Inner>,
}

struct Inner {
    commands: RedisConnection,
    events: Arc<Events>,
    ttl_ms: u64,
    insert: Script,
    update: Script,
    owners: owners::OwnerScripts,
}

impl fmt::Debug for RedisRunStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRunStore")
            .field("redis", &self.inner.commands)
            .field("ttl_ms", &self.inner.ttl_ms)
            .field("events", &self.inner.events)
            .finish()
    }
}

impl RedisRunStore {
    /// A store issuing commands on `commands` (shareable with the other
    /// Redis-backed parts) and receiving events on a pub/sub connection of
    /// its own to `config`'s Redis; records expire `ttl` after their last
    /// change. Returns at once (connections are made on first use); must be
    /// called inside a tokio runtime.
    pub fn open(
        commands: RedisConnection,
        config: &RedisConfig,
        ttl: Duration,
    ) -> Result<Self, StoreUnavailable> {
        let events = Events::start(config, commands.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                commands,
                events,
                ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
                insert: Script::new(&format!("{PUBLISH}{INSERT}")),
                update: Script::new(&format!("{PUBLISH}{UPDATE}")),
                owners: owners::OwnerScripts::new(),
            }),
        })
    }

    fn record_key(&self, run_id: &RunId) -> String {
        self.inner.commands.key("run", &run_id.encode())
    }

    fn channel(&self, run_id: &RunId) -> String {
        self.inner.commands.key("run-events", &run_id.encode())
    }

    async fn read(&self, key: &str) -> Result<Option<super::Versioned>, StoreUnavailable> {
        let fields: HashMap<String, String> = self
            .inner
            .commands
            .query(redis::cmd("HGETALL").arg(key))
            .await?;
        codec::decode(fields)
    }
}

#[async_trait]
impl RunStore for RedisRunStore {
    async fn insert(&self, record: RunRecord) -> Result<(), StoreUnavailable> {
        let mut invocation = self.inner.insert.prepare_invoke();
        invocation
            .key(self.record_key(&record.run_id))
            .key(self.channel(&record.run_id))
            .arg(self.inner.ttl_ms)
            .arg(self.inner.commands.publish_command());
        for (field, value) in codec::record_fields(&record) {
            invocation.arg(field).arg(value);
        }
        self.inner
            .commands
            .script::<Option<u64>>(&invocation)
            .await
            .map(drop)
    }

    async fn get(&self, run_id: &RunId) -> Result<Option<RunRecord>, StoreUnavailable> {
        Ok(self
            .read(&self.record_key(run_id))
            .await?
            .map(|event| event.record))
    }

    async fn update(
        &self,
        run_id: &RunId,
        change: RunChange,
    ) -> Result<Option<RunRecord>, StoreUnavailable> {
        let (set, clear) = codec::change_fields(&change, SystemTime::now());
        let mut invocation = self.inner.update.prepare_invoke();
        invocation
            .key(self.record_key(run_id))
            .key(self.channel(run_id))
            .arg(self.inner.ttl_ms)
            .arg(self.inner.commands.publish_command())
            .arg(super::rank(change.status))
            .arg(clear.len())
            .arg(clear);
        for (field, value) in set {
            invocation.arg(field).arg(value);
        }
        let Some(fields) = self
            .inner
            .commands
            .script::<Option<Vec<String>>>(&invocation)
            .await?
        else {
            return Ok(None);
        };
        Ok(codec::decode(codec::pairs(fields))?.map(|event| event.record))
    }

    async fn subscribe(
        &self,
        run_id: &RunId,
    ) -> Result<Option<(RunRecord, Subscription)>, StoreUnavailable> {
        let key = self.record_key(run_id);
        // Listen first, then read: a change after the read arrives as an
        // event, one before it is in the snapshot (and its event, if it
        // comes, is older than the snapshot and dropped).
        let (receiver, release) = self
            .inner
            .events
            .subscribe(self.channel(run_id), key.clone())
            .await?;
        let Some(snapshot) = self.read(&key).await? else {
            return Ok(None);
        };
        let subscription = Subscription {
            receiver,
            seen: snapshot.version,
            _release: Some(release),
        };
        Ok(Some((snapshot.record, subscription)))
    }

    fn subscribers(&self, run_id: &RunId) -> usize {
        self.inner.events.subscribers(&self.channel(run_id))
    }

    async fn claim_owner(
        &self,
        run_id: &RunId,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StoreUnavailable> {
        self.owner_claim(run_id, token, lease, "claim").await
    }

    async fn renew_owner(
        &self,
        run_id: &RunId,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StoreUnavailable> {
        self.owner_claim(run_id, token, lease, "renew").await
    }

    async fn release_owner(&self, run_id: &RunId, token: &str) -> Result<(), StoreUnavailable> {
        self.owner_release(run_id, token).await
    }

    async fn expired_owners(&self, max: usize) -> Result<Vec<RunId>, StoreUnavailable> {
        self.owners_expired(max).await
    }

    async fn check(&self) -> Result<(), StoreUnavailable> {
        self.inner.commands.ping().await
    }
}
