//! flowgate's own `ErrorInfo.reason` codes, typed.
//!
//! A [`GatewayError`](crate::GatewayError) carries its reason as text
//! because a reason is often the vendor's own code (`RATE_LIMIT_EXCEEDED`,
//! `not_found`, …), which flowgate passes on unchanged. The codes flowgate
//! itself decides are listed here once, as a [`Reason`]: errors are built
//! with one and checked with [`GatewayError::has_reason`], never by spelling
//! the text again, so a typo is a compile error and the wire strings (the
//! README's error table) live in this one table.
//!
//! The wire text of each reason is its `UPPER_SNAKE_CASE` name and never
//! changes: callers match on it.

use std::fmt;

use crate::GatewayError;

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident => $wire:literal,)*) => {
        /// One of flowgate's own `ErrorInfo.reason` codes (see the module docs).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Reason {
            $($(#[$doc])* $variant,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The wire text (`ErrorInfo.reason`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $wire,)*
                }
            }
        }
    };
}

reasons! {
    // The request.
    /// INVALID_ARGUMENT: one or more request fields are wrong.
    InvalidRequest => "INVALID_REQUEST",
    /// A fault inside the gateway.
    Internal => "INTERNAL",
    /// The caller's deadline passed.
    DeadlineExceeded => "DEADLINE_EXCEEDED",
    /// The `callback_url` host name could not be resolved in time (the
    /// resolver was slow or down); nothing was started.
    CallbackDnsTimeout => "CALLBACK_DNS_TIMEOUT",

    // Routing.
    /// No provider of that name is configured.
    UnknownProvider => "UNKNOWN_PROVIDER",
    /// No provider (or more than one) speaks the target's dialect.
    NoProviderForDialect => "NO_PROVIDER_FOR_DIALECT",
    /// No run with this id is known to the gateway.
    UnknownRun => "UNKNOWN_RUN",

    // Schemas.
    /// Strict schemas: the workflow has no declared or discovered schema.
    SchemaNotDeclared => "SCHEMA_NOT_DECLARED",
    /// The workflow's schema is still being fetched.
    SchemaFetchPending => "SCHEMA_FETCH_PENDING",

    // Upstream transport.
    /// The provider's own timeout passed before it answered.
    UpstreamTimeout => "UPSTREAM_TIMEOUT",
    /// The provider could not be reached (connect or TLS failure).
    UpstreamUnreachable => "UPSTREAM_UNREACHABLE",
    /// The connection failed mid-exchange.
    UpstreamTransportError => "UPSTREAM_TRANSPORT_ERROR",
    /// The provider answered with a redirect (never followed).
    UpstreamRedirect => "UPSTREAM_REDIRECT",
    /// The provider's answer could not be read.
    UpstreamProtocolError => "UPSTREAM_PROTOCOL_ERROR",
    /// The provider rejected the gateway's own key.
    UpstreamCredentialRejected => "UPSTREAM_CREDENTIAL_REJECTED",
    /// A vendor code that is not a plain code token (or holds key material).
    UpstreamError => "UPSTREAM_ERROR",

    // Upstream answers without a vendor code, by HTTP status class.
    /// 400, 413, 422 without a code.
    UpstreamInvalidRequest => "UPSTREAM_INVALID_REQUEST",
    /// 402 without a code.
    UpstreamPaymentRequired => "UPSTREAM_PAYMENT_REQUIRED",
    /// 403 without a code.
    UpstreamForbidden => "UPSTREAM_FORBIDDEN",
    /// 404 without a code.
    UpstreamNotFound => "UPSTREAM_NOT_FOUND",
    /// 409 without a code.
    UpstreamConflict => "UPSTREAM_CONFLICT",
    /// 429 without a code.
    UpstreamRateLimited => "UPSTREAM_RATE_LIMITED",
    /// 502, 503 without a code.
    UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
    /// Other 5xx without a code.
    UpstreamInternalError => "UPSTREAM_INTERNAL_ERROR",

    // Protections (the guard).
    /// The provider said its rate window is spent until a reset time.
    RateLimitWindowExhausted => "RATE_LIMIT_WINDOW_EXHAUSTED",
    /// The provider's circuit is open after consecutive failures.
    CircuitOpen => "CIRCUIT_OPEN",
    /// The provider's local request budget is spent.
    LocalRateLimit => "LOCAL_RATE_LIMIT",
    /// Every local run slot of the provider is busy.
    LocalConcurrencyLimit => "LOCAL_CONCURRENCY_LIMIT",
    /// The shared state store cannot answer (Redis down or slow) and the
    /// call needs it (a keyed Invoke, an async run, a stream, or limits
    /// configured to fail closed); nothing was sent upstream.
    StateStoreUnavailable => "STATE_STORE_UNAVAILABLE",

    // Runs.
    /// A FAILED run whose upstream error had no code.
    RunFailed => "RUN_FAILED",
    /// Every background-run slot is busy.
    BackgroundRunsExhausted => "BACKGROUND_RUNS_EXHAUSTED",
    /// A FAILED gateway-run run (AI Tutor async): the replica running its
    /// call stopped (its owner lease lapsed); the call cannot be resumed.
    GatewayReplicaLost => "GATEWAY_REPLICA_LOST",
    /// VerifyWebhook has no secret to verify with.
    NoWebhookSecret => "NO_WEBHOOK_SECRET",
    /// A stream ended: status polls kept failing.
    RunPollGaveUp => "RUN_POLL_GAVE_UP",
    /// A stream ended: the gateway lost track of the run.
    RunWatchFailed => "RUN_WATCH_FAILED",
    /// A stream ended: it reached `max_watch`.
    RunWatchLimit => "RUN_WATCH_LIMIT",
    /// A stream ended at once: this replica already polls `max_watchers`
    /// runs, so nothing would make its run progress.
    RunWatchersExhausted => "RUN_WATCHERS_EXHAUSTED",
    /// This replica is shutting down.
    ShuttingDown => "SHUTTING_DOWN",

    // Idempotency (`idempotency_key`).
    /// The key was already used with a different request.
    IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
    /// The first call with the key was still running at this call's deadline.
    IdempotentRequestInFlight => "IDEMPOTENT_REQUEST_IN_FLIGHT",

    // The edge.
    /// The call was shed because the queue was full.
    Overloaded => "OVERLOADED",
    /// The call panicked.
    InternalPanic => "INTERNAL_PANIC",
    /// The request could not be decoded.
    MalformedRequest => "MALFORMED_REQUEST",

    // Callers.
    /// The call carries no valid caller credentials (missing, malformed,
    /// unknown or revoked key, or an unknown client certificate).
    CallerUnauthenticated => "CALLER_UNAUTHENTICATED",
    /// The caller lacks the capability (ErrorInfo `required_capability`).
    CallerCapabilityDenied => "CALLER_CAPABILITY_DENIED",
    /// One of the caller's quotas is spent (QuotaFailure subject
    /// `caller:<name>`; RetryInfo until it resets, except concurrent runs).
    CallerQuotaExceeded => "CALLER_QUOTA_EXCEEDED",
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Reason> for String {
    fn from(reason: Reason) -> Self {
        reason.as_str().to_owned()
    }
}

impl PartialEq<Reason> for str {
    fn eq(&self, reason: &Reason) -> bool {
        self == reason.as_str()
    }
}

impl PartialEq<Reason> for String {
    fn eq(&self, reason: &Reason) -> bool {
        self.as_str() == reason.as_str()
    }
}

impl GatewayError {
    /// True when this error's reason is flowgate's `reason` (a vendor code
    /// that happens to spell the same is a vendor code all the same: the
    /// gateway never emits one of its own reasons for a vendor's).
    pub fn has_reason(&self, reason: Reason) -> bool {
        self.reason == reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_text_is_the_upper_snake_case_name_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            let text = reason.as_str();
            assert!(
                text.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{text}"
            );
            assert_eq!(format!("{reason:?}").to_uppercase(), text.replace('_', ""));
            assert!(seen.insert(text), "{text} twice");
        }
    }

    /// The wire strings callers match on, written out once more by hand:
    /// renaming a variant's text (or dropping one) fails here.
    #[test]
    fn every_reason_has_its_documented_wire_text() {
        let wire: Vec<&str> = Reason::ALL.iter().map(|reason| reason.as_str()).collect();
        assert_eq!(
            wire,
            [
                "INVALID_REQUEST",
                "INTERNAL",
                "DEADLINE_EXCEEDED",
                "CALLBACK_DNS_TIMEOUT",
                "UNKNOWN_PROVIDER",
                "NO_PROVIDER_FOR_DIALECT",
                "UNKNOWN_RUN",
                "SCHEMA_NOT_DECLARED",
                "SCHEMA_FETCH_PENDING",
                "UPSTREAM_TIMEOUT",
                "UPSTREAM_UNREACHABLE",
                "UPSTREAM_TRANSPORT_ERROR",
                "UPSTREAM_REDIRECT",
                "UPSTREAM_PROTOCOL_ERROR",
                "UPSTREAM_CREDENTIAL_REJECTED",
                "UPSTREAM_ERROR",
                "UPSTREAM_INVALID_REQUEST",
                "UPSTREAM_PAYMENT_REQUIRED",
                "UPSTREAM_FORBIDDEN",
                "UPSTREAM_NOT_FOUND",
                "UPSTREAM_CONFLICT",
                "UPSTREAM_RATE_LIMITED",
                "UPSTREAM_UNAVAILABLE",
                "UPSTREAM_INTERNAL_ERROR",
                "RATE_LIMIT_WINDOW_EXHAUSTED",
                "CIRCUIT_OPEN",
                "LOCAL_RATE_LIMIT",
                "LOCAL_CONCURRENCY_LIMIT",
                "STATE_STORE_UNAVAILABLE",
                "RUN_FAILED",
                "BACKGROUND_RUNS_EXHAUSTED",
                "GATEWAY_REPLICA_LOST",
                "NO_WEBHOOK_SECRET",
                "RUN_POLL_GAVE_UP",
                "RUN_WATCH_FAILED",
                "RUN_WATCH_LIMIT",
                "RUN_WATCHERS_EXHAUSTED",
                "SHUTTING_DOWN",
                "IDEMPOTENCY_KEY_REUSED",
                "IDEMPOTENT_REQUEST_IN_FLIGHT",
                "OVERLOADED",
                "INTERNAL_PANIC",
                "MALFORMED_REQUEST",
                "CALLER_UNAUTHENTICATED",
                "CALLER_CAPABILITY_DENIED",
                "CALLER_QUOTA_EXCEEDED",
            ]
        );
    }

    #[test]
    fn errors_are_built_and_checked_by_reason() {
        let error = GatewayError::new(
            crate::ErrorClass::DeadlineExceeded,
            Reason::UpstreamTimeout,
            "slow",
        );
        assert_eq!(error.reason, "UPSTREAM_TIMEOUT");
        assert!(error.has_reason(Reason::UpstreamTimeout));
        assert!(!error.has_reason(Reason::DeadlineExceeded));
    }
}
