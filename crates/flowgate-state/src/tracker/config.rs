//! The tracker's settings: pacing and bounds, callback ingress, forwarding.

use std::{collections::HashMap, sync::Arc, time::Duration};

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
    /// Most runs polled at once.
    pub max_watchers: usize,
    /// Most gateway-run background runs (AI Tutor async) at once.
    pub max_background_runs: usize,
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
    /// The secret flowgate signs with (Standard Webhooks).
    pub signing_secret: StandardSecret,
    /// Every secret still accepted by VerifyWebhook for the Standard scheme
    /// (the signing one first, older ones after, for rotation).
    pub verify_secrets: Vec<SecretString>,
}
