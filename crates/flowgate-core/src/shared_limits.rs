//! Seams for the state replicas must share: provider limits and webhook
//! replay ids.
//!
//! [`LimitStore`] holds, per provider (its *scope*), the remembered vendor
//! window ("exhausted for the next N seconds"), the local request rate and
//! the run-slot semaphore (`max_concurrent_runs`). [`ReplayStore`] remembers
//! webhook event ids. The in-memory implementations live next to their
//! users (`flowgate-providers`, `flowgate-webhook`) and are what a single
//! replica uses; the Redis ones (`flowgate-redis`) make several replicas
//! spend one budget.
//!
//! **Durations, not instants.** Every time crossing the seam is relative
//! ("for 20 s", "retry in 3 s"): a shared store measures it on its own
//! clock (Redis's `TIME`), so replicas' clocks never need to agree.
//!
//! **One round trip per admission.** [`LimitStore::admit`] checks the
//! window, takes a rate token and a run slot in one step, so a store across
//! the network answers an Invoke in one round trip (one Lua script), and
//! none at all when the request asks for neither a token nor a slot.
//!
//! A store that cannot answer says [`StateStoreUnavailable`]; what that
//! means (admit, refuse, fall back to local limits) is the caller's policy
//! ([`LimitFailurePolicy`]), never a panic.

use std::{any::Any, fmt, time::Duration};

use async_trait::async_trait;
use serde::Deserialize;

/// A shared store did not answer (down, slow past its per-operation
/// timeout, or answered nonsense).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("state store unavailable: {0}")]
pub struct StateStoreUnavailable(pub String);

/// The local request rate: `requests` per `window`, refilled evenly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateQuota {
    /// Requests per window (at least 1 is enforced).
    pub requests: u32,
    /// The window.
    pub window: Duration,
}

/// A run-slot semaphore: at most `max` calls in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotQuota {
    /// Slots (at least 1 is enforced).
    pub max: u32,
    /// How long to wait for a free slot before refusing.
    pub wait: Duration,
}

/// What one Invoke asks of a [`LimitStore`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitRequest {
    /// Take a rate token, if a rate is configured.
    pub rate: Option<RateQuota>,
    /// Take a run slot, if a slot limit is configured.
    pub slot: Option<SlotQuota>,
}

/// A held run slot; dropping it gives the slot back. A shared store's slot
/// is also a lease that expires by itself if its holder dies.
pub struct RunSlot {
    _held: Box<dyn Any + Send + Sync>,
}

impl RunSlot {
    /// Wraps whatever releases the slot on drop.
    pub fn new(held: impl Any + Send + Sync) -> Self {
        Self {
            _held: Box::new(held),
        }
    }
}

impl fmt::Debug for RunSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RunSlot")
    }
}

/// The answer to [`LimitStore::admit`], checked in this order.
#[derive(Debug)]
pub enum LimitVerdict {
    /// Go ahead; hold the slot (if one was asked for) until the call ends.
    Admitted(Option<RunSlot>),
    /// The vendor's window is known to be spent for `retry_after`.
    WindowExhausted {
        /// Until the window resets.
        retry_after: Duration,
    },
    /// The local rate is spent; a token is back in `retry_after`.
    RateLimited {
        /// Until the next token.
        retry_after: Duration,
    },
    /// Every run slot stayed taken for the whole wait.
    NoSlot,
}

/// What an upstream answer said about the vendor's window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowNote {
    /// `remaining: 0` with a reset this far ahead: the window is spent
    /// exactly until then (replacing what was remembered).
    pub spent_for: Option<Duration>,
    /// A 429's Retry-After: the window is spent at least this long
    /// (extending, never shortening, what was remembered).
    pub at_least: Option<Duration>,
}

impl WindowNote {
    /// Whether the note says nothing.
    pub fn is_empty(&self) -> bool {
        self.spent_for.is_none() && self.at_least.is_none()
    }
}

/// Provider limits shared by whoever holds the same store.
#[async_trait]
pub trait LimitStore: Send + Sync + fmt::Debug {
    /// Checks `scope`'s vendor window, then takes a rate token, then a run
    /// slot (waiting up to its `wait`). A window or rate refusal spends
    /// nothing; whether a token taken by a call that then found no slot is
    /// given back is the store's choice (memory: no, as ever; Redis: nothing
    /// is taken unless both are free).
    async fn admit(
        &self,
        scope: &str,
        request: LimitRequest,
    ) -> Result<LimitVerdict, StateStoreUnavailable>;

    /// How long `scope`'s vendor window is still known to be spent, if at
    /// all (status polls check only this).
    async fn window(&self, scope: &str) -> Result<Option<Duration>, StateStoreUnavailable>;

    /// Remembers what an upstream answer said about `scope`'s window.
    async fn note_window(&self, scope: &str, note: WindowNote)
    -> Result<(), StateStoreUnavailable>;
}

/// What a shared limit does while its store is unavailable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitFailurePolicy {
    /// Enforce the limits per replica (each replica's own memory store)
    /// until the store is back: service continues, the budget is at worst
    /// multiplied by the replica count for the outage.
    #[default]
    Local,
    /// Admit without limits (the vendor's own limits still apply).
    Open,
    /// Refuse: UNAVAILABLE / `STATE_STORE_UNAVAILABLE`.
    Closed,
}

/// How provider limits are shared; meant to be read directly from the
/// state section of the configuration (e.g. `[state.limits]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharedLimitsSettings {
    /// What the limits do while the shared store cannot answer.
    pub on_unavailable: LimitFailurePolicy,
    /// How long a run slot stays taken after its holder stopped renewing
    /// it (a crashed replica's slots come back after this). Renewed every
    /// third of it; keep it well above the store's per-operation timeout.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub slot_lease: Duration,
}

impl SharedLimitsSettings {
    /// The default lease.
    pub const DEFAULT_SLOT_LEASE: Duration = Duration::from_secs(30);
    /// The shortest lease accepted.
    pub const MIN_SLOT_LEASE: Duration = Duration::from_secs(1);
    /// The longest lease accepted.
    pub const MAX_SLOT_LEASE: Duration = Duration::from_secs(600);
}

impl Default for SharedLimitsSettings {
    fn default() -> Self {
        Self {
            on_unavailable: LimitFailurePolicy::default(),
            slot_lease: Self::DEFAULT_SLOT_LEASE,
        }
    }
}

/// Webhook event ids seen, shared by whoever holds the same store.
#[async_trait]
pub trait ReplayStore: Send + Sync + fmt::Debug {
    /// `true` the first time `id` is offered within `ttl` (and remembers it
    /// for `ttl`), `false` for every later offer: SET NX with expiry.
    async fn first_seen(&self, id: &str, ttl: Duration) -> Result<bool, StateStoreUnavailable>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_with_defaults_and_refuse_unknown_keys() {
        let read: SharedLimitsSettings =
            serde_json::from_str(r#"{"on_unavailable": "closed", "slot_lease": "45s"}"#).unwrap();
        assert_eq!(read.on_unavailable, LimitFailurePolicy::Closed);
        assert_eq!(read.slot_lease, Duration::from_secs(45));
        let default: SharedLimitsSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(default, SharedLimitsSettings::default());
        assert_eq!(default.on_unavailable, LimitFailurePolicy::Local);
        assert!(serde_json::from_str::<SharedLimitsSettings>(r#"{"lease": "1s"}"#).is_err());
        assert!(
            serde_json::from_str::<SharedLimitsSettings>(r#"{"on_unavailable": "maybe"}"#).is_err()
        );
    }
}
