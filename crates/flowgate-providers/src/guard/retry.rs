//! The retry loop of [`Guarded`]: which failures are retried, after how
//! long, and within which budget (see [`RetryPolicy`]).

use std::time::Duration;

use flowgate_core::{Deadline, ErrorClass, GatewayError, Invocation, RunOutcome, reason::Reason};
use rand::Rng as _;
use tower::retry::budget::Budget as _;

use super::Guarded;
use crate::RetryPolicy;

impl Guarded {
    /// Admits one call, then runs `attempt` until it succeeds or a retry is
    /// unsafe, unaffordable or no longer fits the deadline; `may_retry`
    /// says whether the call may be repeated at all (a stream that already
    /// sent output may not). Every attempt's answer updates the window and
    /// the circuit.
    pub(super) async fn attempts<F>(
        &self,
        invocation: &Invocation,
        deadline: Deadline,
        may_retry: impl Fn() -> bool,
        mut attempt_once: impl FnMut() -> F,
    ) -> Result<RunOutcome, GatewayError>
    where
        F: Future<Output = Result<RunOutcome, GatewayError>>,
    {
        let (mut admission, _slot) = self.admit(deadline).await?;
        self.budget.deposit();
        let mut attempt = 1;
        loop {
            let result = crate::http::ATTEMPT
                .scope(attempt, attempt_once())
                .await
                .and_then(|outcome| self.checked_depth(outcome));
            self.record(&mut admission, result.as_ref()).await;
            let error = match result {
                Ok(outcome) => return Ok(outcome),
                Err(error) => error,
            };
            if !may_retry() {
                return Err(error);
            }
            let Some(delay) = self.retry_delay(&error, attempt, invocation, deadline) else {
                return Err(error);
            };
            if !self.budget.withdraw() {
                tracing::debug!(
                    provider = self.inner.name(),
                    "retry budget spent; not retrying"
                );
                return Err(error);
            }
            tracing::debug!(
                provider = self.inner.name(),
                attempt,
                reason = %error.reason,
                delay_ms = delay.as_millis() as u64,
                "retrying"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// How long to wait before attempt `attempt + 1`, if it is safe at all.
    fn retry_delay(
        &self,
        error: &GatewayError,
        attempt: u32,
        invocation: &Invocation,
        deadline: Deadline,
    ) -> Option<Duration> {
        let policy = &self.policy.retry;
        if attempt >= policy.max_attempts {
            return None;
        }
        let delay = if error.never_sent {
            backoff(policy, attempt)
        } else if error.class == ErrorClass::RateLimited
            && error
                .upstream
                .as_ref()
                .is_some_and(|up| up.http_status.is_some())
        {
            error.retry_after?
        } else if policy.idempotent_retries
            && invocation.idempotency_key.is_some()
            && (matches!(
                error.class,
                ErrorClass::Unavailable | ErrorClass::UpstreamFailure
            ) || error.has_reason(Reason::UpstreamTimeout))
        {
            backoff(policy, attempt)
        } else {
            return None;
        };
        // The retry must fit in the caller's deadline, with room to run.
        match deadline.remaining() {
            Some(left) if delay >= left => None,
            _ => Some(delay),
        }
    }
}

/// Exponential backoff with equal jitter: half fixed, half random.
pub(super) fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    let base = policy
        .initial_backoff
        .saturating_mul(1 << exponent)
        .min(policy.max_backoff);
    let half = base / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}
