//! The tracker's settings: pacing and bounds, callback ingress, forwarding.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use flowgate_core::{ReplayStore, SecretString};
use flowgate_webhook::{Forwarder, StandardSecret};

/// Pacing and bounds of the tracker's background work.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackerConfig {
    /// First poll interval after a run was seen running.
    pub poll_initial: Duration,
    /// Longest poll interval (intervals grow by half each poll).
    pub poll_max: Duration,
    /// Longest a run is polled, and longest one StreamStatus stream stays
    /// open: a stream that reaches it ends with DEADLINE_EXCEEDED, reason
    /// `RUN_WATCH_LIMIT` (open a new one to keep following the run).
    pub max_watch: Duration,
    /// Consecutive poll failures after which a poller gives up (its
    /// streams end with UNAVAILABLE, reason `RUN_POLL_GAVE_UP`).
    pub max_poll_failures: u32,
    /// Most runs polled at once. A StreamStatus on a run that would need
    /// one more ends at once with UNAVAILABLE, reason
    /// `RUN_WATCHERS_EXHAUSTED`, and RetryInfo.
    pub max_watchers: usize,
    /// Most gateway-run background runs (AI Tutor async) at once.
    pub max_background_runs: usize,
    /// The owner lease of a run's work (a gateway-run call, a poller, a
    /// queued forward): renewed every third of it; a replica that dies
    /// loses its work to another within about one lease.
    pub owner_lease: Duration,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            poll_initial: Duration::from_millis(500),
            poll_max: Duration::from_secs(10),
            max_watch: Duration::from_secs(3600),
            max_poll_failures: 10,
            max_watchers: 10_000,
            max_background_runs: 256,
            owner_lease: Duration::from_secs(15),
        }
    }
}

/// How provider callbacks reach the gateway.
#[derive(Clone, Debug, Default)]
pub struct IngressConfig {
    /// Public base URL of the ingress listener (what providers call back),
    /// e.g. `https://flowgate.example.com`. Callbacks go to
    /// `{public_url}/webhooks/{provider}`.
    pub public_url: Option<String>,
    /// Webhook secrets configured per provider (Knouds signs with a per-key
    /// secret); several for rotation.
    pub provider_secrets: HashMap<String, Vec<SecretString>>,
    /// Signature timestamp tolerance.
    pub tolerance: Duration,
    /// Where accepted webhook event ids are claimed across replicas (the
    /// ingress and VerifyWebhook); `None` keeps them per process.
    pub replay_store: Option<Arc<dyn ReplayStore>>,
}

/// Forwarding of completion events to callers.
#[derive(Debug)]
pub struct Forwarding {
    /// The delivery queue.
    pub forwarder: Forwarder,
    /// flowgate's Standard Webhooks secrets.
    pub secrets: SigningSecrets,
}

/// The secret flowgate signs forwarded events with (Standard Webhooks) and
/// every secret VerifyWebhook still accepts for the Standard scheme (the
/// signing one first, older ones after, for rotation).
///
/// Clones share them: [`SigningSecrets::replace`] (a rotated secret file)
/// changes them for every later delivery and verification; a delivery
/// already queued keeps the secret it was queued with.
#[derive(Clone)]
pub struct SigningSecrets(Arc<RwLock<Arc<SigningSet>>>);

struct SigningSet {
    signing: StandardSecret,
    verify: Vec<SecretString>,
}

impl SigningSecrets {
    /// Signs with `signing`; VerifyWebhook accepts every one of `verify`.
    pub fn new(signing: StandardSecret, verify: Vec<SecretString>) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(SigningSet {
            signing,
            verify,
        }))))
    }

    /// Replaces both, for every clone.
    pub fn replace(&self, signing: StandardSecret, verify: Vec<SecretString>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(SigningSet { signing, verify });
    }

    fn current(&self) -> Arc<SigningSet> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The secret new deliveries are signed with.
    pub fn signing(&self) -> StandardSecret {
        self.current().signing.clone()
    }

    /// Every secret accepted, the signing one first.
    pub fn verify(&self) -> Vec<SecretString> {
        self.current().verify.clone()
    }
}

impl fmt::Debug for SigningSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecrets([redacted])")
    }
}
