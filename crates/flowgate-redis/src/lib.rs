//! flowgate's Redis connection, shared by every component that keeps state
//! for several replicas (the run store, rate windows and limits, replay ids,
//! idempotency records).
//!
//! - [`RedisConnection`]: a cheap-to-clone handle on a single node
//!   (reconnecting with backoff) or a Redis Cluster (seed list), running
//!   commands, pipelines and scripts each within one timeout, every failure
//!   one [`StoreUnavailable`] that never carries a password.
//! - Keys are `<prefix><kind>:{<id>}` ([`RedisConnection::key`]): the id is
//!   the cluster hash tag, so one id's keys and channels share a slot.
//! - [`RedisLimitStore`], [`RedisReplayStore`]: the shared provider limits
//!   (vendor windows, request rate, leased run slots; one Lua script per
//!   admission) and webhook replay ids (`SET NX PX`).
//! - `rediss://` URLs use TLS (rustls with ring); [`TrustedCas`] replaces
//!   the system roots with a private CA.
//! - Health without extra round trips (`health`): each operation's outcome
//!   and the reconnect loop feed `flowgate.state_store.up` and
//!   `flowgate.state_store.errors`.
//! - `testing` (feature `test-support`): real `redis-server` processes for
//!   tests, a single node or a three-master cluster, optionally with a
//!   password or TLS.

mod connection;
mod health;
mod limits;
mod replay;
#[cfg(feature = "test-support")]
pub mod testing;
mod tls;

pub use connection::{
    DEFAULT_KEY_PREFIX, DEFAULT_OP_TIMEOUT, RedisConfig, RedisConnection, RedisEndpoint,
    StoreUnavailable, UnavailableKind,
};
pub use limits::{DEFAULT_SLOT_LEASE, RedisLimitStore};
pub use replay::RedisReplayStore;
pub use tls::TrustedCas;

/// redis-rs, for building commands and scripts.
pub use redis;
