//! Where the guard's limits live: this replica's [`MemoryLimitStore`],
//! and optionally a shared [`LimitStore`] that several replicas spend as
//! one budget.
//!
//! - **Hot path.** A call that asks for neither a rate token nor a run slot
//!   never touches the shared store; one that does costs one
//!   [`LimitStore::admit`] (one round trip: window, token and slot in one
//!   step). The local window copy is checked first, for free.
//! - **Windows.** Every vendor window an answer reports is written to both
//!   stores. Shared windows are read as part of a shared admission; polls
//!   and unlimited calls read the local copy only (a replica that has not
//!   seen the window pays at most one upstream 429 to learn it).
//! - **Store down.** [`LimitFailurePolicy`] decides: `local` (default)
//!   enforces the limits per replica from the memory store, `open` admits,
//!   `closed` refuses with UNAVAILABLE / `STATE_STORE_UNAVAILABLE`. Each
//!   such decision counts in `flowgate.state_store.degraded`; a warning is
//!   logged at most every [`WARN_EVERY`].

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use flowgate_core::{
    LimitFailurePolicy, LimitRequest, LimitStore, LimitVerdict, StateStoreUnavailable, WindowNote,
};

use crate::limits::MemoryLimitStore;

/// At most one "state store unavailable" warning per guard this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub(super) struct GuardLimits {
    local: MemoryLimitStore,
    shared: Option<SharedLimits>,
}

#[derive(Debug)]
struct SharedLimits {
    store: Arc<dyn LimitStore>,
    on_unavailable: LimitFailurePolicy,
    last_warning: Mutex<Option<Instant>>,
}

fn policy_label(policy: LimitFailurePolicy) -> &'static str {
    match policy {
        LimitFailurePolicy::Local => "local",
        LimitFailurePolicy::Open => "open",
        LimitFailurePolicy::Closed => "closed",
    }
}

impl SharedLimits {
    /// Counts and (rate-limited) logs one decision taken without the store.
    fn degraded(&self, scope: &str, error: &StateStoreUnavailable) {
        let policy = policy_label(self.on_unavailable);
        flowgate_telemetry::metrics().state_store_degraded("limits", policy);
        let now = Instant::now();
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
            *last = Some(now);
            tracing::warn!(
                provider = scope,
                policy,
                %error,
                "shared limits unavailable; applying the failure policy"
            );
        }
    }
}

impl GuardLimits {
    pub(super) fn shared(store: Arc<dyn LimitStore>, on_unavailable: LimitFailurePolicy) -> Self {
        Self {
            local: MemoryLimitStore::new(),
            shared: Some(SharedLimits {
                store,
                on_unavailable,
                last_warning: Mutex::new(None),
            }),
        }
    }

    /// Admits one Invoke. `Err` only under the `closed` policy.
    pub(super) async fn admit(
        &self,
        scope: &str,
        request: LimitRequest,
    ) -> Result<LimitVerdict, StateStoreUnavailable> {
        let Some(shared) = self
            .shared
            .as_ref()
            .filter(|_| request.rate.is_some() || request.slot.is_some())
        else {
            return self.local.admit_now(scope, request).await;
        };
        if let Some(retry_after) = self.local.window_now(scope) {
            return Ok(LimitVerdict::WindowExhausted { retry_after });
        }
        match shared.store.admit(scope, request).await {
            Ok(verdict) => Ok(verdict),
            Err(error) => {
                shared.degraded(scope, &error);
                match shared.on_unavailable {
                    LimitFailurePolicy::Local => self.local.admit_now(scope, request).await,
                    LimitFailurePolicy::Open => Ok(LimitVerdict::Admitted(None)),
                    LimitFailurePolicy::Closed => Err(error),
                }
            }
        }
    }

    /// How long the window is known to be spent (the local copy: no round
    /// trip).
    pub(super) fn window(&self, scope: &str) -> Option<Duration> {
        self.local.window_now(scope)
    }

    /// Remembers a reported window locally and, if shared, in the store.
    pub(super) async fn note_window(&self, scope: &str, note: WindowNote) {
        if note.is_empty() {
            return;
        }
        self.local.note_window_now(scope, note);
        if let Some(shared) = &self.shared
            && let Err(error) = shared.store.note_window(scope, note).await
        {
            shared.degraded(scope, &error);
        }
    }
}
