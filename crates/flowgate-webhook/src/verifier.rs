//! Signature check, body normalization and replay guard in one call.

use std::fmt;
use std::time::{Duration, SystemTime};

use flowgate_core::SecretString;
use http::HeaderMap;
use moka::sync::Cache;

use crate::event::WebhookEvent;
use crate::failure::{FailureReason, WebhookFailure};
use crate::scheme::{WebhookScheme, verify_signature};

/// Settings of a [`Verifier`].
#[derive(Clone, Debug)]
pub struct VerifierConfig {
    /// How far a signed timestamp may be from now (either way).
    pub tolerance: Duration,
    /// How many event ids the replay guard remembers.
    pub replay_capacity: u64,
}

impl VerifierConfig {
    /// Five minutes, as Knouds and Standard Webhooks specify.
    pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
    /// Default number of remembered event ids.
    pub const DEFAULT_REPLAY_CAPACITY: u64 = 100_000;
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            tolerance: Self::DEFAULT_TOLERANCE,
            replay_capacity: Self::DEFAULT_REPLAY_CAPACITY,
        }
    }
}

/// A delivery that passed every check.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedDelivery {
    /// What it said.
    pub event: WebhookEvent,
    /// Index into `secrets` of the secret that matched.
    pub matched_secret: usize,
}

/// Verifies deliveries of every scheme and rejects replays.
///
/// The replay guard is an in-process moka cache of accepted event ids,
/// bounded by `replay_capacity`, each kept for twice the tolerance: long
/// enough that a replayed timestamped delivery is `Expired` by the time its
/// id is forgotten. Fetch Hive signs no timestamp, so for it the guard only
/// covers that window. One `Verifier` is meant to be shared (it is `Sync`).
pub struct Verifier {
    tolerance: Duration,
    seen: Cache<String, ()>,
}

impl Verifier {
    /// A verifier with an empty replay cache.
    pub fn new(config: VerifierConfig) -> Self {
        let ttl = config
            .tolerance
            .saturating_mul(2)
            .max(Duration::from_secs(1));
        Self {
            tolerance: config.tolerance,
            seen: Cache::builder()
                .max_capacity(config.replay_capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The timestamp tolerance.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// Checks the signature (any of `secrets`), the timestamp, the body and
    /// finally the replay guard, in that order: only an authentic, well-formed
    /// delivery can claim an event id, so forged deliveries cannot poison the
    /// cache. The first delivery of an id is accepted; any later one within
    /// the window is `Replayed`.
    pub fn verify(
        &self,
        scheme: WebhookScheme,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[SecretString],
        now: SystemTime,
    ) -> Result<VerifiedDelivery, WebhookFailure> {
        let signature = verify_signature(scheme, headers, body, secrets, now, self.tolerance)?;
        let event = WebhookEvent::decode(scheme, body, &signature)?;
        let key = format!("{scheme}:{}", event.event_id);
        if !self.seen.entry(key).or_insert(()).is_fresh() {
            return Err(WebhookFailure::new(
                FailureReason::Replayed,
                "this event was already delivered",
            ));
        }
        Ok(VerifiedDelivery {
            event,
            matched_secret: signature.matched_secret,
        })
    }
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new(VerifierConfig::default())
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("tolerance", &self.tolerance)
            .field("remembered_ids", &self.seen.entry_count())
            .finish()
    }
}
