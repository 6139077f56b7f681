//! Idempotent Invoke: a paid run is never started twice for one key.
//!
//! An Invoke that carries an `idempotency_key` goes through
//! [`Idempotency::run`]. One store round trip ([`IdempotencyStore::claim`])
//! decides what happens before anything is sent upstream (the first call
//! makes one more, after answering its caller, to record or release):
//!
//! - **claimed**: this call is the first; a pending record (the request's
//!   [`RequestHash`], no answer yet) is in the store. The call's work runs
//!   in its own task, detached from the caller: a caller that gives up
//!   (deadline, cancellation) does not cancel it, so a retry can pick up its
//!   answer. When it ends, its answer is recorded ([`IdempotencyStore::record`])
//!   or, when the failure proves no run was started, the claim is released
//!   ([`IdempotencyStore::release`]) so a retry runs afresh (see
//!   [`records_error`]).
//! - **recorded**: the first call's answer, replayed byte for byte (same run
//!   id, same output, same status and details for a recorded error); no
//!   upstream call.
//! - **in flight**: the second call waits for the first's answer up to its
//!   own deadline ([`IdempotencyStore::settled`]), then answers
//!   DEADLINE_EXCEEDED, reason `IDEMPOTENT_REQUEST_IN_FLIGHT`. Async starts
//!   are short (the start, not the run), so the second gets the same run id.
//! - **mismatch**: the key holds a different request: FAILED_PRECONDITION,
//!   reason `IDEMPOTENCY_KEY_REUSED`, whatever state the first is in.
//!
//! What is recorded is opaque to the engine ([`RecordedAnswer`]): the edge
//! encodes its wire answer, so a replay is exactly what the first caller
//! got. Keys are scoped ([`IdempotencyKey::scope`]): one scope for now,
//! the calling identity once callers exist.
//!
//! A store that cannot be reached fails closed: UNAVAILABLE, reason
//! `STATE_STORE_UNAVAILABLE` — never an unchecked upstream call.
//!
//! A first call's work that panics answers its caller INTERNAL, reason
//! `INTERNAL_PANIC` (the panic message is logged once by the process's
//! panic hook). Its claim is never released (the upstream run may have
//! started): the edge's encoding of that answer
//! ([`Idempotency::with_panic_answer`]) is recorded and replayed to
//! retries; without one the claim stays until its lease lapses. The detached tasks are tracked:
//! at shutdown [`Idempotency::drain`] lets them finish within the grace and
//! logs and counts (`flowgate.shutdown.abandoned{kind="idempotent_call"}`)
//! those it abandons.

mod fingerprint;
mod memory;
mod redis;

#[cfg(any(test, feature = "contract-tests"))]
pub mod contract;

use std::{fmt, future::Future, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use flowgate_core::{Deadline, ErrorClass, FieldViolation, GatewayError, reason::Reason};
use tokio::{sync::oneshot, time::Instant};
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

pub use fingerprint::RequestHash;
pub use memory::MemoryIdempotencyStore;
pub use redis::RedisIdempotencyStore;

/// Longest accepted key, in bytes (Stripe's limit).
pub const MAX_KEY_BYTES: usize = 255;
/// A scope for engine users without caller identities (the gRPC service
/// scopes each key by its caller's name).
pub const SHARED_SCOPE: &str = "-";
/// How long a pending claim outlives the first call's own deadline in a
/// store with leases, so a crashed owner's key becomes usable again.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// Most times a waiter claims again after the first call released its key.
const MAX_CLAIMS: usize = 8;

/// A caller's key within its scope: what a record is stored under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    scope: String,
    key: String,
}

impl IdempotencyKey {
    /// `key` in `scope`; INVALID_ARGUMENT (field `idempotency_key`) when it
    /// is empty or longer than [`MAX_KEY_BYTES`].
    pub fn new(scope: impl Into<String>, key: impl Into<String>) -> Result<Self, GatewayError> {
        let key = key.into();
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(GatewayError::invalid_argument(vec![FieldViolation::new(
                "idempotency_key",
                format!("must be 1 to {MAX_KEY_BYTES} bytes"),
            )]));
        }
        Ok(Self {
            scope: scope.into(),
            key,
        })
    }

    /// Whose key it is: the caller's name at the gRPC edge.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The caller's key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// The first call's answer as the edge encoded it; opaque to the engine.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordedAnswer(pub Bytes);

impl fmt::Debug for RecordedAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordedAnswer({} bytes)", self.0.len())
    }
}

/// What [`Idempotency::run`] answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotentAnswer {
    /// The answer of the one call that ran.
    pub answer: RecordedAnswer,
    /// True when this call did not run it (a replay, or a wait for the
    /// first call).
    pub replayed: bool,
}

/// What a claim found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key was free: this call owns it until it records or releases.
    Claimed,
    /// The same request already finished: its answer.
    Recorded(RecordedAnswer),
    /// The same request is still running.
    InFlight,
    /// The key holds a different request (pending or finished).
    Mismatch,
}

/// What waiting for an in-flight request found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// It finished: its answer.
    Recorded(RecordedAnswer),
    /// Its claim is gone (released, expired or taken by another request):
    /// claim again.
    Released,
    /// Still running when the wait ended.
    InFlight,
}

/// The store could not be asked (down, slow, refused).
#[derive(Debug, Clone, thiserror::Error)]
#[error("idempotency store unavailable: {0}")]
pub struct StoreUnavailable(pub String);

/// Where idempotency records live. Implementations: [`MemoryIdempotencyStore`]
/// (one replica) and a Redis store (several). Every record expires: a
/// pending one when its lease ends (or, in memory, when its owner ends),
/// a recorded one `ttl` after it was recorded.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + fmt::Debug + 'static {
    /// Claims `key` for the request `hash`, or reports what the key holds.
    /// A claim is held for at most `lease` where the store cannot see its
    /// owner die.
    async fn claim(
        &self,
        key: &IdempotencyKey,
        hash: RequestHash,
        lease: Duration,
    ) -> Result<Claim, StoreUnavailable>;

    /// Stores the answer of the claimed request `hash` under `key`.
    async fn record(
        &self,
        key: &IdempotencyKey,
        hash: RequestHash,
        answer: RecordedAnswer,
    ) -> Result<(), StoreUnavailable>;

    /// Drops the claim of `hash` on `key` (no-op when another holds it).
    async fn release(
        &self,
        key: &IdempotencyKey,
        hash: RequestHash,
    ) -> Result<(), StoreUnavailable>;

    /// Waits, up to `wait`, until the request `hash` under `key` is no
    /// longer in flight.
    async fn settled(
        &self,
        key: &IdempotencyKey,
        hash: RequestHash,
        wait: Duration,
    ) -> Result<Settled, StoreUnavailable>;
}

/// How the first call's work ended.
#[derive(Debug)]
pub enum Settlement {
    /// Record this answer: every retry within the TTL gets it.
    Record(RecordedAnswer),
    /// Answer the first caller but record nothing: no run was started, so a
    /// retry with the key runs afresh.
    Forget(RecordedAnswer),
}

/// True when a failed first call is recorded (replayed to every retry)
/// rather than forgotten.
///
/// Forgotten: errors that prove no paid run started — the request never
/// left the gateway (`never_sent`, a failed connection), or the gateway or
/// the upstream refused it outright: INVALID_ARGUMENT, NOT_FOUND,
/// PERMISSION_DENIED, UNAUTHENTICATED (including the upstream rejecting the
/// gateway's key), RESOURCE_EXHAUSTED (rate or credit limits),
/// FAILED_PRECONDITION, UNIMPLEMENTED.
///
/// Recorded: outcomes where a run may have started upstream and its fate is
/// unknown — DEADLINE_EXCEEDED (an upstream timeout), UNAVAILABLE (502,
/// 503, a dropped connection, an open circuit), INTERNAL (upstream 500,
/// undecodable answer, gateway fault). Replaying these is what makes the
/// key safe: a retry never starts a second run whose cost the first may
/// already have incurred. A caller who accepts that risk sends a new key.
pub fn records_error(error: &GatewayError) -> bool {
    if error.never_sent {
        return false;
    }
    match error.class {
        ErrorClass::InvalidArgument
        | ErrorClass::Unauthenticated
        | ErrorClass::PermissionDenied
        | ErrorClass::NotFound
        | ErrorClass::RateLimited
        | ErrorClass::QuotaExhausted
        | ErrorClass::FailedPrecondition
        | ErrorClass::UpstreamCredentialRejected
        | ErrorClass::Unimplemented => false,
        ErrorClass::DeadlineExceeded
        | ErrorClass::Unavailable
        | ErrorClass::UpstreamFailure
        | ErrorClass::ProtocolError
        | ErrorClass::Internal => true,
    }
}

/// The idempotency check in front of Invoke, over one store.
#[derive(Debug, Clone)]
pub struct Idempotency {
    store: Arc<dyn IdempotencyStore>,
    /// The first calls' detached tasks (see [`Self::drain`]).
    tasks: TaskTracker,
    /// Recorded for a first call whose work panicked.
    panic_answer: Option<RecordedAnswer>,
}

impl Idempotency {
    /// Checks keys against `store`.
    pub fn new(store: Arc<dyn IdempotencyStore>) -> Self {
        Self {
            store,
            tasks: TaskTracker::new(),
            panic_answer: None,
        }
    }

    /// Records `answer` (the edge's encoding of [`panicked`]) under the key
    /// of a first call whose work panicked, so its retries replay it
    /// instead of starting a second, maybe paid, run.
    #[must_use]
    pub fn with_panic_answer(mut self, answer: RecordedAnswer) -> Self {
        self.panic_answer = Some(answer);
        self
    }

    /// Shutdown: lets the first calls' tasks still running (their callers
    /// may have gone; a retry elsewhere waits for their answer) finish
    /// until `deadline`. Those still running then are abandoned: logged
    /// once at warn and counted in `flowgate.shutdown.abandoned` (kind
    /// `idempotent_call`). Returns how many.
    pub async fn drain(&self, deadline: Instant) -> usize {
        self.tasks.close();
        let _ = tokio::time::timeout_at(deadline, self.tasks.wait()).await;
        let abandoned = self.tasks.len();
        if abandoned > 0 {
            flowgate_telemetry::metrics().shutdown_abandoned("idempotent_call", abandoned as u64);
            tracing::warn!(
                idempotent_calls = abandoned,
                "shutdown grace ran out: idempotent calls abandoned"
            );
        }
        abandoned
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn IdempotencyStore> {
        &self.store
    }

    /// Answers the request `hash` under `key`: the recorded answer, the
    /// in-flight first call's answer once it ends, or — when this call is
    /// the first — `work`'s, which then runs in its own task up to
    /// `work_deadline` (at least the caller's `deadline`) even if this
    /// caller stops waiting at `deadline`.
    pub async fn run<F>(
        &self,
        key: IdempotencyKey,
        hash: RequestHash,
        deadline: Deadline,
        work_deadline: Deadline,
        work: F,
    ) -> Result<IdempotentAnswer, GatewayError>
    where
        F: Future<Output = Settlement> + Send + 'static,
    {
        let replayed = |answer| IdempotentAnswer {
            answer,
            replayed: true,
        };
        let lease = work_deadline
            .remaining()
            .map_or(Duration::from_secs(24 * 3600), |left| left + LEASE_MARGIN);
        let mut work = Some(work);
        for _ in 0..MAX_CLAIMS {
            match self
                .store
                .claim(&key, hash, lease)
                .await
                .map_err(unavailable)?
            {
                Claim::Claimed => {
                    let Some(work) = work.take() else {
                        return Err(GatewayError::internal("idempotent work claimed twice"));
                    };
                    let answer = self.spawn(key, hash, work);
                    let answer = wait_for_own(answer, deadline).await?;
                    return Ok(IdempotentAnswer {
                        answer,
                        replayed: false,
                    });
                }
                Claim::Recorded(answer) => {
                    tracing::debug!("idempotent replay");
                    return Ok(replayed(answer));
                }
                Claim::Mismatch => return Err(key_reused()),
                Claim::InFlight => {
                    let wait = deadline
                        .remaining()
                        .unwrap_or(Duration::from_secs(24 * 3600));
                    match self
                        .store
                        .settled(&key, hash, wait)
                        .await
                        .map_err(unavailable)?
                    {
                        Settled::Recorded(answer) => return Ok(replayed(answer)),
                        Settled::Released => {}
                        Settled::InFlight => return Err(in_flight()),
                    }
                }
            }
        }
        Err(in_flight())
    }

    /// Runs the first call's work in its own task and settles the key when
    /// it ends (also when the task panics: see [`ClaimGuard`]).
    fn spawn<F>(
        &self,
        key: IdempotencyKey,
        hash: RequestHash,
        work: F,
    ) -> oneshot::Receiver<RecordedAnswer>
    where
        F: Future<Output = Settlement> + Send + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        let store = Arc::clone(&self.store);
        let panic_answer = self.panic_answer.clone();
        let task = async move {
            let mut claim = ClaimGuard {
                store: Some(Arc::clone(&store)),
                key: key.clone(),
                hash,
                panic_answer,
            };
            let settlement = work.await;
            claim.store = None;
            // The first caller gets its answer at once (if still there); the
            // store learns it after, off the caller's path. A retry arriving
            // in between waits the few milliseconds that takes.
            let (answer, record) = match settlement {
                Settlement::Record(answer) => (answer, true),
                Settlement::Forget(answer) => (answer, false),
            };
            let _ = sender.send(answer.clone());
            if record {
                if let Err(err) = store.record(&key, hash, answer).await {
                    // The pending claim stays until its lease ends:
                    // retries wait, then run again.
                    tracing::warn!(error = %err, "idempotent answer not recorded");
                }
            } else if let Err(err) = store.release(&key, hash).await {
                tracing::warn!(error = %err, "idempotency claim not released");
            }
        };
        self.tasks.spawn(task.in_current_span());
        receiver
    }
}

/// Settles a claim whose work never settled (it panicked): the upstream
/// run may have started, so the claim is never released. The panic answer
/// is recorded when there is one; otherwise the claim stays until its lease
/// lapses (retries wait, as for any unrecorded answer).
struct ClaimGuard {
    store: Option<Arc<dyn IdempotencyStore>>,
    key: IdempotencyKey,
    hash: RequestHash,
    panic_answer: Option<RecordedAnswer>,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let (Some(store), Some(answer)) = (self.store.take(), self.panic_answer.take()) {
            let key = self.key.clone();
            let hash = self.hash;
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(err) = store.record(&key, hash, answer).await {
                        tracing::warn!(error = %err, "idempotent panic answer not recorded");
                    }
                });
            }
        }
    }
}

/// What the caller of a first call whose work panicked gets (and, encoded
/// by the edge, what its retries replay).
pub fn panicked() -> GatewayError {
    GatewayError::new(
        ErrorClass::Internal,
        Reason::InternalPanic,
        "internal error: the gateway failed while handling this call",
    )
}

async fn wait_for_own(
    answer: oneshot::Receiver<RecordedAnswer>,
    deadline: Deadline,
) -> Result<RecordedAnswer, GatewayError> {
    let answer = match deadline.instant() {
        Some(at) => match tokio::time::timeout_at(at, answer).await {
            Ok(answer) => answer,
            Err(_) => return Err(in_flight()),
        },
        None => answer.await,
    };
    // The sender is dropped unanswered only when the work panicked (the
    // hook logged the panic): answered like any panic in a call.
    answer.map_err(|_| {
        tracing::warn!("idempotent call's work panicked: answered INTERNAL_PANIC");
        panicked()
    })
}

fn key_reused() -> GatewayError {
    GatewayError::new(
        ErrorClass::FailedPrecondition,
        Reason::IdempotencyKeyReused,
        "this idempotency_key was already used with a different request; send a new key for a new request",
    )
    .with_precondition(
        "IDEMPOTENCY",
        "idempotency_key",
        "an idempotency key stands for one request: the same provider, workflow, inputs, metadata, user and async options",
    )
}

fn in_flight() -> GatewayError {
    GatewayError::new(
        ErrorClass::DeadlineExceeded,
        Reason::IdempotentRequestInFlight,
        "the first request with this idempotency_key is still running; retry with the same key to get its answer",
    )
    .with_retry_after(Some(Duration::from_secs(1)))
}

fn unavailable(error: StoreUnavailable) -> GatewayError {
    tracing::warn!(error = %error, "idempotency store unavailable");
    GatewayError::new(
        ErrorClass::Unavailable,
        Reason::StateStoreUnavailable,
        "the idempotency store cannot be reached; the call was not sent",
    )
    .with_retry_after(Some(Duration::from_secs(1)))
}

#[cfg(test)]
mod tests;
