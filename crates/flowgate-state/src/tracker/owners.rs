//! Owner leases: one owner at a time for a run's work, and nothing left
//! RUNNING when a replica dies.
//!
//! The replica running a gateway-run call, and the one polling a run,
//! hold the run's owner lease ([`crate::RunStore::claim_owner`]) and renew
//! it every third of `owner_lease`; they release it when the work is done.
//! A holder that dies stops renewing, and every replica sweeps every third
//! of the lease ([`RunTracker::sweep_owners`]): a lapsed lease of a
//! gateway-run run (its call cannot be resumed) makes the run FAILED with
//! reason `GATEWAY_REPLICA_LOST`; a lapsed lease of a polled run is
//! claimed (only one claim wins) and the run polled here; a lapsed lease
//! of a forward (see `forward`) is claimed and the event forwarded here.
//!
//! A lease is released only when its work is done: a lease dropped with
//! its work unfinished (shutdown, a panic) lapses, so another replica takes
//! the work over.

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use flowgate_core::{RunError, RunId, RunStatus, reason::Reason};
use tokio::task::JoinHandle;

use super::RunTracker;
use crate::{RunChange, RunStore, StoreUnavailable};

/// Most lapsed leases taken over in one sweep (the rest wait for the next).
const SWEEP_BATCH: usize = 100;

/// What a gateway-run run lost with its replica says.
const REPLICA_LOST_MESSAGE: &str = "the gateway replica running this call stopped before it finished; the call cannot be resumed (start a new run)";

/// This replica's owner tokens: a random replica id and a counter, so
/// every holding has a token of its own (a stale release never ends a
/// later holding, here or elsewhere).
#[derive(Debug)]
pub(super) struct OwnerTokens {
    replica: String,
    next: AtomicU64,
}

impl OwnerTokens {
    pub(super) fn new() -> Self {
        use rand::Rng as _;
        let replica: u64 = rand::rng().random();
        Self {
            replica: format!("{replica:016x}"),
            next: AtomicU64::new(0),
        }
    }

    pub(super) fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.replica)
    }
}

/// A held owner lease, renewed in the background until released or
/// dropped (a dropped lease is not released: it lapses).
#[derive(Debug)]
pub(super) struct OwnerLease {
    store: Arc<dyn RunStore>,
    run_id: RunId,
    token: String,
    lost: Arc<AtomicBool>,
    renewer: JoinHandle<()>,
}

impl OwnerLease {
    /// Claims the run's lease for this replica: `None` while another owner
    /// holds it.
    pub(super) async fn claim(
        tracker: &RunTracker,
        run_id: &RunId,
    ) -> Result<Option<Self>, StoreUnavailable> {
        let token = tracker.owner_tokens.next();
        Self::claim_as(&tracker.store, run_id, token, tracker.config.owner_lease).await
    }

    /// Claims the run's lease with `token` (see [`OwnerTokens::next`]).
    pub(super) async fn claim_as(
        store: &Arc<dyn RunStore>,
        run_id: &RunId,
        token: String,
        lease: Duration,
    ) -> Result<Option<Self>, StoreUnavailable> {
        if !store.claim_owner(run_id, &token, lease).await? {
            return Ok(None);
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = tokio::spawn(renew(
            Arc::clone(store),
            run_id.clone(),
            token.clone(),
            lease,
            Arc::clone(&lost),
        ));
        Ok(Some(Self {
            store: Arc::clone(store),
            run_id: run_id.clone(),
            token,
            lost,
            renewer,
        }))
    }

    /// True once the lease lapsed and could not be claimed back (another
    /// owner may hold it now).
    pub(super) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// The work is done: ends the lease (if the store cannot be reached,
    /// it lapses, and a sweep finds the work done).
    pub(super) async fn release(self) {
        self.renewer.abort();
        if let Err(error) = self.store.release_owner(&self.run_id, &self.token).await {
            tracing::debug!(%error, run_id = %self.run_id.encode(), "owner lease not released; it will lapse");
        }
    }
}

impl Drop for OwnerLease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Renews every third of the lease. A lease that lapsed (the store was out
/// of reach for a whole lease) is claimed back if nobody took it;
/// otherwise it is lost.
async fn renew(
    store: Arc<dyn RunStore>,
    run_id: RunId,
    token: String,
    lease: Duration,
    lost: Arc<AtomicBool>,
) {
    loop {
        tokio::time::sleep(third(lease)).await;
        match store.renew_owner(&run_id, &token, lease).await {
            Ok(true) => {}
            Ok(false) => {
                if let Ok(true) = store.claim_owner(&run_id, &token, lease).await {
                    continue;
                }
                tracing::warn!(
                    run_id = %run_id.encode(),
                    "owner lease lost (the state store was out of reach for a whole lease?); another replica may own the run now"
                );
                lost.store(true, Ordering::Relaxed);
                return;
            }
            Err(error) => {
                tracing::debug!(%error, run_id = %run_id.encode(), "owner lease not renewed; retrying");
            }
        }
    }
}

/// A third of the lease: how often it is renewed and swept (at least
/// 10 ms, whatever a library user configures).
fn third(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(10))
}

impl RunTracker {
    /// Sweeps every third of the owner lease until shutdown (holding the
    /// tracker only while sweeping).
    pub(super) fn start_sweeper(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no runtime: lapsed owner leases are not swept");
            return;
        };
        let tracker: Weak<Self> = Arc::downgrade(self);
        let shutdown = self.shutdown.clone();
        let every = third(self.config.owner_lease);
        runtime.spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                let Some(tracker) = tracker.upgrade() else {
                    return;
                };
                tracker.sweep_owners().await;
            }
        });
    }

    /// Takes over the work of every lapsed owner lease (see the module
    /// docs).
    pub(super) async fn sweep_owners(self: &Arc<Self>) {
        let expired = match self.store.expired_owners(SWEEP_BATCH).await {
            Ok(expired) => expired,
            Err(error) => {
                super::log_store_failure(&error);
                return;
            }
        };
        for run_id in expired {
            let lease = match OwnerLease::claim(self, &run_id).await {
                Ok(Some(lease)) => lease,
                // Taken over elsewhere, or the store is gone: next sweep.
                Ok(None) => continue,
                Err(error) => {
                    super::log_store_failure(&error);
                    return;
                }
            };
            if let Some(run_id) = super::forward::forwarded_run(&run_id) {
                self.take_over_forward(&run_id, lease).await;
                continue;
            }
            if !run_id.is_local() {
                tracing::info!(run_id = %run_id.encode(), "taking over the poller of a run whose owner lease lapsed");
                self.watch_with(&run_id, Some(lease));
                continue;
            }
            if self.background_fates.lock().contains_key(&run_id.encode()) {
                // Still running here (its lease lapsed while the store was
                // out of reach): its renewer claims it back.
                lease.release().await;
                continue;
            }
            let lost = RunChange {
                status: RunStatus::Failed,
                output: None,
                error: Some(RunError {
                    code: Reason::GatewayReplicaLost.as_str().to_owned(),
                    message: REPLICA_LOST_MESSAGE.to_owned(),
                }),
                usage: Default::default(),
            };
            match self.store.update(&run_id, lost).await {
                Ok(updated) => {
                    if let Some(record) = updated {
                        tracing::warn!(run_id = %run_id.encode(), "gateway-run run lost with its replica: FAILED, GATEWAY_REPLICA_LOST");
                        self.forward(&record);
                    }
                    lease.release().await;
                }
                Err(error) => super::log_store_failure(&error),
            }
        }
    }
}
