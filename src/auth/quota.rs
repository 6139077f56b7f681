//! Per-caller quotas at the edge: admission before any upstream call,
//! credits charged once a run's cost is known, and the caller's balance as
//! response metadata on every Invoke answer.
//!
//! - **Admission** ([`CallerQuotas::admit`]): after authentication and the
//!   capability check, before idempotency, schemas or the provider. A caller
//!   without `[callers.<name>.quota]` costs nothing (no store is asked); one
//!   with a quota costs one [`CallerQuotaStore::admit`] (one Redis round trip
//!   with `[state] store = "redis"`). A refusal is RESOURCE_EXHAUSTED with
//!   reason `CALLER_QUOTA_EXCEEDED`, a QuotaFailure violation with subject
//!   `caller:<name>` naming the quota, and RetryInfo until the window, day or
//!   month resets (none for concurrent runs).
//! - **Charging** ([`QuotaCharge::run_started`]): every Invoke that got a
//!   run from the vendor (whatever its status) is charged the credits the
//!   vendor reported in its answer, or `unknown_cost` when it reported none.
//!   An async run is charged when it is accepted, from that answer (usually
//!   `unknown_cost`): its final cost may arrive on a poll or callback on
//!   another replica, or never. Failed calls (no run) and idempotent replays
//!   are not charged.
//! - **Concurrent runs** are Invokes in flight: a synchronous run for its
//!   whole length, an async one while it is submitted.
//! - **Store down** (Redis): `[state.limits] on_unavailable` decides, as for
//!   provider limits: `local` counts on this replica's memory store, `open`
//!   admits without counting, `closed` refuses with UNAVAILABLE /
//!   `STATE_STORE_UNAVAILABLE`; each decision counts in
//!   `flowgate.state_store.degraded{component="caller_quotas"}`.
//! - **Metadata** on every Invoke answer of a caller with a quota, success
//!   or error: [`REQUESTS_REMAINING`] and [`REQUESTS_RESET_AFTER`] with a
//!   request rate, [`CREDITS_REMAINING`] and [`CREDITS_RESET_AFTER`] with a
//!   budget (after this call's charge when it was known in time).

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use flowgate_core::{
    CallerQuota, CallerQuotaStore, ErrorClass, GatewayError, LimitFailurePolicy,
    MemoryCallerQuotaStore, QuotaBalance, QuotaLimit, QuotaVerdict, RunSlot, StateStoreUnavailable,
    reason::Reason,
};
use tonic::{
    Response, Status,
    metadata::{MetadataMap, MetadataValue},
};

use super::Caller;

/// Requests left in the caller's current window (this call counted).
pub const REQUESTS_REMAINING: &str = "x-flowgate-requests-remaining";
/// Seconds (rounded up) until the caller's request window resets.
pub const REQUESTS_RESET_AFTER: &str = "x-flowgate-requests-reset-after";
/// Credits left: the smallest of the caller's day and month budgets.
pub const CREDITS_REMAINING: &str = "x-flowgate-credits-remaining";
/// Seconds (rounded up) until that budget's period resets.
pub const CREDITS_RESET_AFTER: &str = "x-flowgate-credits-reset-after";

/// At most one "state store unavailable" warning this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Where caller quotas are counted: this replica's memory, or a shared
/// store with this replica's memory as the `local` fallback.
#[derive(Debug, Default)]
pub struct CallerQuotas {
    local: MemoryCallerQuotaStore,
    shared: Option<SharedQuotas>,
}

#[derive(Debug)]
struct SharedQuotas {
    store: Arc<dyn CallerQuotaStore>,
    on_unavailable: LimitFailurePolicy,
    last_warning: Mutex<Option<Instant>>,
}

impl SharedQuotas {
    /// Counts and (rate-limited) logs one decision taken without the store.
    fn degraded(&self, error: &StateStoreUnavailable) {
        let policy = match self.on_unavailable {
            LimitFailurePolicy::Local => "local",
            LimitFailurePolicy::Open => "open",
            LimitFailurePolicy::Closed => "closed",
        };
        flowgate_telemetry::metrics().state_store_degraded("caller_quotas", policy);
        let now = Instant::now();
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
            *last = Some(now);
            tracing::warn!(policy, %error, "caller quotas unavailable; applying the failure policy");
        }
    }
}

/// Which store admitted a call (and so is charged for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counted {
    Shared,
    Local,
    /// Admitted without counting (`open` while the store is down).
    Nowhere,
}

impl CallerQuotas {
    /// Quotas counted in this process only (one replica).
    pub fn memory() -> Self {
        Self::default()
    }

    /// Quotas counted in `store`, shared by every replica using it;
    /// `on_unavailable` decides what happens while it cannot answer.
    pub fn shared(store: Arc<dyn CallerQuotaStore>, on_unavailable: LimitFailurePolicy) -> Self {
        Self {
            local: MemoryCallerQuotaStore::new(),
            shared: Some(SharedQuotas {
                store,
                on_unavailable,
                last_warning: Mutex::new(None),
            }),
        }
    }

    /// Admits one Invoke of `caller` (module docs).
    pub async fn admit(self: &Arc<Self>, caller: &Caller) -> Result<QuotaTicket, QuotaRefusal> {
        let name = Arc::clone(caller.shared_name());
        let Some(quota) = caller.quota().copied() else {
            return Ok(QuotaTicket::unlimited(name));
        };
        let (verdict, counted) = match &self.shared {
            None => (self.local.admit_now(&name, &quota), Counted::Local),
            Some(shared) => match shared.store.admit(&name, &quota).await {
                Ok(verdict) => (verdict, Counted::Shared),
                Err(error) => {
                    shared.degraded(&error);
                    match shared.on_unavailable {
                        LimitFailurePolicy::Local => {
                            (self.local.admit_now(&name, &quota), Counted::Local)
                        }
                        LimitFailurePolicy::Open => (
                            QuotaVerdict::Admitted {
                                balance: QuotaBalance::default(),
                                run: None,
                            },
                            Counted::Nowhere,
                        ),
                        LimitFailurePolicy::Closed => {
                            return Err(QuotaRefusal {
                                error: store_unavailable(&error),
                                balance: QuotaBalance::default(),
                            });
                        }
                    }
                }
            },
        };
        match verdict {
            QuotaVerdict::Admitted { balance, run } => Ok(QuotaTicket {
                charge: QuotaCharge(Arc::new(ChargeState {
                    caller: name,
                    quota: Some(quota),
                    quotas: Some((Arc::clone(self), counted)),
                    balance: Mutex::new(balance),
                })),
                _run: run,
            }),
            QuotaVerdict::Refused {
                limit,
                retry_after,
                balance,
            } => Err(QuotaRefusal {
                error: exceeded(&name, limit, retry_after),
                balance,
            }),
        }
    }

    /// Charges `credits` to `caller` on the store that admitted it.
    async fn charge(
        &self,
        counted: Counted,
        caller: &str,
        quota: &CallerQuota,
        credits: f64,
    ) -> Option<QuotaBalance> {
        match (counted, &self.shared) {
            (Counted::Nowhere, _) => None,
            (Counted::Shared, Some(shared)) => {
                match shared.store.charge(caller, quota, credits).await {
                    Ok(balance) => Some(balance),
                    Err(error) => {
                        shared.degraded(&error);
                        (shared.on_unavailable == LimitFailurePolicy::Local)
                            .then(|| self.local.charge_now(caller, quota, credits))
                    }
                }
            }
            _ => Some(self.local.charge_now(caller, quota, credits)),
        }
    }
}

/// RESOURCE_EXHAUSTED / `CALLER_QUOTA_EXCEEDED` for `limit`.
pub fn exceeded(caller: &str, limit: QuotaLimit, retry_after: Option<Duration>) -> GatewayError {
    let class = match limit {
        QuotaLimit::Requests | QuotaLimit::ConcurrentRuns => ErrorClass::RateLimited,
        QuotaLimit::CreditsPerDay | QuotaLimit::CreditsPerMonth => ErrorClass::QuotaExhausted,
    };
    GatewayError::new(
        class,
        Reason::CallerQuotaExceeded,
        format!("this caller's quota is spent: {}", limit.description()),
    )
    .with_quota(format!("caller:{caller}"), limit.description())
    .with_retry_after(retry_after)
}

fn store_unavailable(error: &StateStoreUnavailable) -> GatewayError {
    GatewayError::new(
        ErrorClass::Unavailable,
        Reason::StateStoreUnavailable,
        format!("the caller's quota cannot be checked ({error}); refusing, as configured"),
    )
    .with_retry_after(Some(Duration::from_secs(1)))
}

/// A refused admission: the error, and the balance to show with it.
#[derive(Debug)]
pub struct QuotaRefusal {
    /// Why.
    pub error: GatewayError,
    balance: QuotaBalance,
}

impl QuotaRefusal {
    /// `status` (made from [`Self::error`]) with the balance metadata.
    pub fn annotate(&self, mut status: Status) -> Status {
        insert_balance(&self.balance, status.metadata_mut());
        status
    }
}

/// An admitted Invoke: holds its run lease until dropped.
#[derive(Debug)]
pub struct QuotaTicket {
    charge: QuotaCharge,
    _run: Option<RunSlot>,
}

impl QuotaTicket {
    fn unlimited(caller: Arc<str>) -> Self {
        Self {
            charge: QuotaCharge(Arc::new(ChargeState {
                caller,
                quota: None,
                quotas: None,
                balance: Mutex::new(QuotaBalance::default()),
            })),
            _run: None,
        }
    }

    /// What charges the call's run (cheap to clone).
    pub fn charge(&self) -> &QuotaCharge {
        &self.charge
    }

    /// Puts the caller's balance into `metadata` (a streamed answer's
    /// headers); the run lease lasts while the ticket is kept.
    pub fn insert_balance(&self, metadata: &mut tonic::metadata::MetadataMap) {
        if self.charge.0.quota.is_some() {
            insert_balance(&self.charge.balance(), metadata);
        }
    }

    /// `answer` with the caller's balance as metadata; ends the run lease.
    pub fn answer<T>(self, answer: Result<Response<T>, Status>) -> Result<Response<T>, Status> {
        if self.charge.0.quota.is_none() {
            return answer;
        }
        let balance = self.charge.balance();
        match answer {
            Ok(mut response) => {
                insert_balance(&balance, response.metadata_mut());
                Ok(response)
            }
            Err(mut status) => {
                insert_balance(&balance, status.metadata_mut());
                Err(status)
            }
        }
    }
}

/// Charges a call's run to its caller, and counts the credits vendors
/// reported in `flowgate.credits.used{caller, flowgate.provider}`.
#[derive(Clone)]
pub struct QuotaCharge(Arc<ChargeState>);

struct ChargeState {
    caller: Arc<str>,
    quota: Option<CallerQuota>,
    quotas: Option<(Arc<CallerQuotas>, Counted)>,
    balance: Mutex<QuotaBalance>,
}

impl fmt::Debug for QuotaCharge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaCharge")
            .field("caller", &self.0.caller)
            .finish_non_exhaustive()
    }
}

impl QuotaCharge {
    /// A charge for a caller without quota (tools and tests).
    pub fn unlimited(caller: &str) -> Self {
        QuotaTicket::unlimited(caller.into()).charge
    }

    fn balance(&self) -> QuotaBalance {
        *self
            .0
            .balance
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A vendor accepted a run of `provider` and reported `credits` (if
    /// any) in its answer.
    pub async fn run_started(&self, provider: &str, credits: Option<f64>) {
        let state = &self.0;
        if let Some(credits) = credits {
            flowgate_telemetry::metrics().credits_used(&state.caller, provider, credits);
        }
        let (Some(quota), Some((quotas, counted))) = (&state.quota, &state.quotas) else {
            return;
        };
        if !quota.has_budget() {
            return;
        }
        let cost = credits.unwrap_or(quota.unknown_cost);
        if let Some(after) = quotas.charge(*counted, &state.caller, quota, cost).await {
            let mut balance = state
                .balance
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            balance.credits_remaining = after.credits_remaining;
            balance.credits_reset = after.credits_reset;
        }
    }
}

/// Seconds, rounded up.
fn seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// Writes `balance` as the `x-flowgate-*` metadata.
fn insert_balance(balance: &QuotaBalance, metadata: &mut MetadataMap) {
    if let Some(left) = balance.requests_remaining {
        metadata.insert(REQUESTS_REMAINING, MetadataValue::from(left));
    }
    if let Some(reset) = balance.requests_reset {
        metadata.insert(REQUESTS_RESET_AFTER, MetadataValue::from(seconds(reset)));
    }
    if let Some(left) = balance.credits_remaining {
        // Whole millionths: sums of decimal costs carry binary noise.
        let left = (left.max(0.0) * 1e6).round() / 1e6;
        if let Ok(value) = MetadataValue::try_from(left.to_string()) {
            metadata.insert(CREDITS_REMAINING, value);
        }
    }
    if let Some(reset) = balance.credits_reset {
        metadata.insert(CREDITS_RESET_AFTER, MetadataValue::from(seconds(reset)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Capabilities;

    fn caller(quota: CallerQuota) -> Caller {
        Caller::new("ci", Capabilities::all()).with_quota(Some(quota))
    }

    #[tokio::test]
    async fn refusals_name_the_quota_and_answers_carry_the_balance() {
        let quotas = Arc::new(CallerQuotas::memory());
        let ci = caller(CallerQuota {
            requests: Some((1, Duration::from_secs(60))),
            credits_per_day: Some(2.0),
            unknown_cost: 1.5,
            ..CallerQuota::default()
        });
        let ticket = quotas.admit(&ci).await.unwrap();
        ticket.charge().run_started("kn", None).await;
        let answer = ticket.answer(Ok(Response::new(()))).unwrap();
        let metadata = answer.metadata();
        assert_eq!(metadata.get(REQUESTS_REMAINING).unwrap(), "0");
        assert_eq!(metadata.get(CREDITS_REMAINING).unwrap(), "0.5");
        assert!(metadata.get(CREDITS_RESET_AFTER).is_some());
        let refused = quotas.admit(&ci).await.unwrap_err();
        assert!(refused.error.has_reason(Reason::CallerQuotaExceeded));
        let quota = refused.error.quota.clone().unwrap();
        assert_eq!(quota.subject, "caller:ci");
        assert_eq!(quota.description, QuotaLimit::Requests.description());
        let retry = refused.error.retry_after.unwrap();
        assert!(retry > Duration::ZERO && retry <= Duration::from_secs(60));
        let status = refused.annotate(Status::resource_exhausted("x"));
        assert_eq!(status.metadata().get(REQUESTS_REMAINING).unwrap(), "0");
        // A caller without quota asks no store and gets no metadata.
        let open = Caller::new("ops", Capabilities::all());
        let ticket = quotas.admit(&open).await.unwrap();
        let answer = ticket.answer(Ok(Response::new(()))).unwrap();
        assert!(answer.metadata().get(REQUESTS_REMAINING).is_none());
    }

    #[derive(Debug)]
    struct Down;

    #[async_trait::async_trait]
    impl CallerQuotaStore for Down {
        async fn admit(
            &self,
            _: &str,
            _: &CallerQuota,
        ) -> Result<QuotaVerdict, StateStoreUnavailable> {
            Err(StateStoreUnavailable("down".into()))
        }
        async fn charge(
            &self,
            _: &str,
            _: &CallerQuota,
            _: f64,
        ) -> Result<QuotaBalance, StateStoreUnavailable> {
            Err(StateStoreUnavailable("down".into()))
        }
    }

    #[tokio::test]
    async fn a_store_that_is_down_follows_the_failure_policy() {
        let ci = caller(CallerQuota {
            requests: Some((1, Duration::from_secs(60))),
            ..CallerQuota::default()
        });
        let with = |policy| Arc::new(CallerQuotas::shared(Arc::new(Down), policy));
        let local = with(LimitFailurePolicy::Local);
        assert!(local.admit(&ci).await.is_ok());
        assert!(local.admit(&ci).await.is_err(), "counted locally");
        let open = with(LimitFailurePolicy::Open);
        assert!(open.admit(&ci).await.is_ok());
        assert!(open.admit(&ci).await.is_ok(), "not counted");
        let closed = with(LimitFailurePolicy::Closed);
        let refused = closed.admit(&ci).await.unwrap_err();
        assert!(refused.error.has_reason(Reason::StateStoreUnavailable));
    }
}
