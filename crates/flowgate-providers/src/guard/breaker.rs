//! The circuit breaker's states and transitions, for Invoke attempts only
//! (status polls never count; see the parent module).

use tokio::time::Instant;

use flowgate_core::{ErrorClass, GatewayError, reason::Reason};

use super::later;
use crate::CircuitPolicy;

/// Where the circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Breaker {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_in_flight: bool },
}

impl Breaker {
    /// The state after one Invoke attempt at `now` that `failed` (or not).
    /// A reopened circuit stays open for `open_for`, however large (checked
    /// arithmetic, see [`later`]).
    pub(super) fn after(self, failed: bool, policy: &CircuitPolicy, now: Instant) -> Self {
        match (self, failed) {
            (_, _) if policy.failure_threshold == 0 => Self::Closed {
                consecutive_failures: 0,
            },
            (_, false) => Self::Closed {
                consecutive_failures: 0,
            },
            (
                Self::Closed {
                    consecutive_failures,
                },
                true,
            ) if consecutive_failures.saturating_add(1) < policy.failure_threshold => {
                Self::Closed {
                    consecutive_failures: consecutive_failures + 1,
                }
            }
            (_, true) => Self::Open {
                until: later(now, policy.open_for),
            },
        }
    }
}

/// Failures that say the upstream itself is unwell.
pub(super) fn trips_breaker(error: &GatewayError) -> bool {
    match error.class {
        ErrorClass::Unavailable | ErrorClass::UpstreamFailure | ErrorClass::ProtocolError => {
            error.upstream.is_some()
        }
        ErrorClass::DeadlineExceeded => error.has_reason(Reason::UpstreamTimeout),
        _ => false,
    }
}
