//! Run state and run lifecycle.
//!
//! - [`RunStore`]: the run registry and event bus behind one trait. Every
//!   change to a run is published to its subscribers; terminal states are
//!   sticky. [`MemoryRunStore`] (moka: TTL and capacity bounded) is the
//!   default; [`RedisRunStore`] implements the same trait for several
//!   replicas (runs in Redis, events over Redis pub/sub).
//! - [`RunTracker`]: what makes async runs work the same for every dialect:
//!   it records runs, runs AI Tutor workflows in the background (the
//!   dialect has no async mode), polls providers that have a status
//!   endpoint (one poll per run however many streams watch it), ingests
//!   signed provider callbacks, and forwards completion events to callers'
//!   callback URLs re-signed with Standard Webhooks.
//! - [`idempotency`]: the `idempotency_key` check in front of Invoke
//!   ([`Idempotency`]) over an [`IdempotencyStore`] (memory or Redis).

pub mod idempotency;
mod store;
mod tracker;

pub use idempotency::{Idempotency, IdempotencyStore, MemoryIdempotencyStore};
pub use store::{
    MemoryRunStore, RedisRunStore, RunChange, RunRecord, RunStore, StoreLimits, StoreUnavailable,
    Subscription,
};
pub use tracker::{
    CallbackRejection, Forwarding, IngressConfig, REASON_POLL_GAVE_UP, REASON_SHUTTING_DOWN,
    REASON_STATE_STORE_UNAVAILABLE, REASON_WATCH_FAILED, REASON_WATCH_LIMIT,
    REASON_WATCHERS_EXHAUSTED, RunStream, RunTracker, ShutdownReport, SigningSecrets,
    TrackerConfig, Verification, VerifyKey, WATCHERS_EXHAUSTED_RETRY, WatchEnd, shutting_down,
    store_unavailable,
};
