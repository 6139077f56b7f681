//! Signature check, body normalization and replay guard in one call.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use flowgate_core::{ReplayStore, SecretString};
use http::HeaderMap;

use crate::event::WebhookEvent;
use crate::failure::{FailureReason, WebhookFailure};
use crate::replay::MemoryReplayStore;
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
///
/// With a shared [`ReplayStore`] ([`Verifier::with_shared_replay`]),
/// [`Verifier::verify_shared`] claims ids there, so a delivery accepted by
/// one replica is `Replayed` on every other. Ids are also kept in the local
/// cache; while the shared store cannot answer, the local cache decides
/// (per-replica protection, counted in `flowgate.state_store.degraded`,
/// warned about at most every ten seconds).
pub struct Verifier {
    tolerance: Duration,
    ttl: Duration,
    seen: MemoryReplayStore,
    /// The shared store and this guard's namespace in it.
    shared: Option<(Arc<dyn ReplayStore>, String)>,
    last_warning: Mutex<Option<Instant>>,
}

/// At most one "replay store unavailable" warning this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl Verifier {
    /// A verifier with an empty replay cache.
    pub fn new(config: VerifierConfig) -> Self {
        let ttl = config
            .tolerance
            .saturating_mul(2)
            .max(Duration::from_secs(1));
        Self {
            tolerance: config.tolerance,
            ttl,
            seen: MemoryReplayStore::new(config.replay_capacity),
            shared: None,
            last_warning: Mutex::new(None),
        }
    }

    /// Claims event ids in `store` too (see [`Verifier::verify_shared`]),
    /// under `namespace`: verifiers with the same namespace on every replica
    /// form one guard (the ingress is one, VerifyWebhook another, as the two
    /// separate in-process guards always were).
    pub fn with_shared_replay(
        mut self,
        store: Arc<dyn ReplayStore>,
        namespace: impl Into<String>,
    ) -> Self {
        self.shared = Some((store, namespace.into()));
        self
    }

    /// How long an accepted event id is remembered.
    pub fn replay_ttl(&self) -> Duration {
        self.ttl
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
        let (key, delivery) = self.authenticate(scheme, headers, body, secrets, now)?;
        if !self.seen.first_seen_now(&key, self.ttl) {
            return Err(replayed());
        }
        Ok(delivery)
    }

    /// [`Verifier::verify`], with the replay guard in the shared store when
    /// one is configured (one round trip: SET NX with expiry).
    pub async fn verify_shared(
        &self,
        scheme: WebhookScheme,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[SecretString],
        now: SystemTime,
    ) -> Result<VerifiedDelivery, WebhookFailure> {
        let Some((shared, namespace)) = &self.shared else {
            return self.verify(scheme, headers, body, secrets, now);
        };
        let (key, delivery) = self.authenticate(scheme, headers, body, secrets, now)?;
        let fresh = match shared
            .first_seen(&format!("{namespace}:{key}"), self.ttl)
            .await
        {
            Ok(fresh) => {
                // Kept locally too, so an outage later still knows it.
                self.seen.first_seen_now(&key, self.ttl);
                fresh
            }
            Err(error) => {
                self.degraded(&error);
                self.seen.first_seen_now(&key, self.ttl)
            }
        };
        if fresh { Ok(delivery) } else { Err(replayed()) }
    }

    /// Signature, timestamp and body: the replay key and the delivery.
    fn authenticate(
        &self,
        scheme: WebhookScheme,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[SecretString],
        now: SystemTime,
    ) -> Result<(String, VerifiedDelivery), WebhookFailure> {
        let signature = verify_signature(scheme, headers, body, secrets, now, self.tolerance)?;
        let event = WebhookEvent::decode(scheme, body, &signature)?;
        let key = format!("{scheme}:{}", event.event_id);
        Ok((
            key,
            VerifiedDelivery {
                event,
                matched_secret: signature.matched_secret,
            },
        ))
    }

    fn degraded(&self, error: &flowgate_core::StateStoreUnavailable) {
        flowgate_telemetry::metrics().state_store_degraded("replay", "local");
        let now = Instant::now();
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
            *last = Some(now);
            tracing::warn!(%error, "shared replay guard unavailable; using this replica's");
        }
    }
}

fn replayed() -> WebhookFailure {
    WebhookFailure::new(FailureReason::Replayed, "this event was already delivered")
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
            .field("remembered_ids", &self.seen.len())
            .field("shared", &self.shared.is_some())
            .finish()
    }
}
