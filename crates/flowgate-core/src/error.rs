//! The one error type of the engine.
//!
//! A [`GatewayError`] says what happened in terms a caller can act on: its
//! [`ErrorClass`] fixes the gRPC code, `reason` is the machine-readable code
//! (the upstream's own, or flowgate's), and the optional details become the
//! rich `google.rpc` details at the edge. Messages never hold secrets or raw
//! upstream bodies.

use std::time::Duration;

use crate::{ProviderKind, RateLimitInfo, Violations, reason::Reason};

/// What kind of failure, from the caller's point of view. Each class maps to
/// exactly one gRPC code at the edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The request is wrong: fix a field (INVALID_ARGUMENT).
    InvalidArgument,
    /// The caller is not authenticated to the gateway (UNAUTHENTICATED).
    Unauthenticated,
    /// The caller (or the gateway's key) lacks a capability (PERMISSION_DENIED).
    PermissionDenied,
    /// Unknown provider, workflow, deployment, slug or run (NOT_FOUND).
    NotFound,
    /// A rate window is exhausted: wait (RESOURCE_EXHAUSTED + RetryInfo).
    RateLimited,
    /// Credits are exhausted: pay (RESOURCE_EXHAUSTED + QuotaFailure).
    QuotaExhausted,
    /// A plan, tier or mode requirement is unmet (FAILED_PRECONDITION).
    FailedPrecondition,
    /// The upstream rejected the gateway's own key: a configuration fault
    /// (UNAUTHENTICATED, reason `UPSTREAM_CREDENTIAL_REJECTED`).
    UpstreamCredentialRejected,
    /// The deadline passed before the upstream answered (DEADLINE_EXCEEDED).
    DeadlineExceeded,
    /// The upstream is unreachable or overloaded (UNAVAILABLE).
    Unavailable,
    /// The upstream failed internally (INTERNAL).
    UpstreamFailure,
    /// The upstream answered something undecodable (INTERNAL,
    /// reason `UPSTREAM_PROTOCOL_ERROR`).
    ProtocolError,
    /// The gateway does not offer this yet (UNIMPLEMENTED).
    Unimplemented,
    /// A fault inside the gateway (INTERNAL).
    Internal,
}

impl ErrorClass {
    /// A low-cardinality label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::NotFound => "not_found",
            Self::RateLimited => "rate_limited",
            Self::QuotaExhausted => "quota_exhausted",
            Self::FailedPrecondition => "failed_precondition",
            Self::UpstreamCredentialRejected => "upstream_credential_rejected",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Unavailable => "unavailable",
            Self::UpstreamFailure => "upstream_failure",
            Self::ProtocolError => "protocol_error",
            Self::Unimplemented => "unimplemented",
            Self::Internal => "internal",
        }
    }
}

/// Which upstream answered, for `ErrorInfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamContext {
    /// Configured provider name.
    pub provider: String,
    /// Its dialect (the `ErrorInfo.domain`).
    pub kind: ProviderKind,
    /// The HTTP status, when a response arrived.
    pub http_status: Option<u16>,
    /// The upstream's request id, when it sent one.
    pub request_id: Option<String>,
}

/// One bad field of the request (`BadRequest.FieldViolation`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request, e.g. `inputs.topic`, `target.slug`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// A quota that ran out (`QuotaFailure.Violation`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaViolation {
    /// What the quota applies to, e.g. `provider:knouds-prod`.
    pub subject: String,
    /// Which quota, e.g. `requests per minute`, `credits`.
    pub description: String,
}

/// An unmet precondition (`PreconditionFailure.Violation`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreconditionViolation {
    /// The kind of precondition: `PLAN`, `TIER`, `MODE`.
    pub kind: String,
    /// What it applies to, e.g. the workflow.
    pub subject: String,
    /// How to satisfy it.
    pub description: String,
}

/// A resource that does not exist (`ResourceInfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceRef {
    /// e.g. `fetchhive.deployment`, `knouds.workflow`, `flowgate.provider`.
    pub resource_type: String,
    /// Its name.
    pub name: String,
}

/// Every failure of the engine, typed. See the module docs. Boxed, so a
/// `Result<_, GatewayError>` stays one pointer wide on the success path;
/// fields are reached through `Deref` to [`ErrorData`].
#[derive(Clone, Debug, thiserror::Error)]
#[error("{}", .0.message)]
pub struct GatewayError(Box<ErrorData>);

/// The fields of a [`GatewayError`].
#[derive(Clone, Debug)]
pub struct ErrorData {
    /// Decides the gRPC code.
    pub class: ErrorClass,
    /// Machine-readable reason: the upstream's code or flowgate's own
    /// (`UPPER_SNAKE_CASE` for flowgate's).
    pub reason: String,
    /// Safe, human-readable explanation.
    pub message: String,
    /// The upstream that answered, if any.
    pub upstream: Option<UpstreamContext>,
    /// Bad request fields (at most
    /// [`MAX_LISTED_VIOLATIONS`](crate::violations::MAX_LISTED_VIOLATIONS)
    /// when built from [`Violations`]).
    pub violations: Vec<FieldViolation>,
    /// Bad request fields counted but not listed in `violations`.
    pub unlisted_violations: usize,
    /// How long to wait before retrying, when waiting helps.
    pub retry_after: Option<Duration>,
    /// The quota that ran out.
    pub quota: Option<QuotaViolation>,
    /// The precondition that failed.
    pub precondition: Option<PreconditionViolation>,
    /// The resource that was not found.
    pub resource: Option<ResourceRef>,
    /// Extra `ErrorInfo` metadata, e.g. `required_capability`.
    pub metadata: Vec<(String, String)>,
    /// The provider's rate-limit window as of this failure.
    pub rate_limit: Option<RateLimitInfo>,
    /// True when the request provably never reached the upstream (the
    /// connection failed), so repeating it cannot start a paid run twice.
    pub never_sent: bool,
}

impl std::ops::Deref for GatewayError {
    type Target = ErrorData;

    fn deref(&self) -> &ErrorData {
        &self.0
    }
}

impl std::ops::DerefMut for GatewayError {
    fn deref_mut(&mut self) -> &mut ErrorData {
        &mut self.0
    }
}

impl GatewayError {
    /// An error of `class` with a reason and message and no details.
    pub fn new(class: ErrorClass, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self(Box::new(ErrorData {
            class,
            reason: reason.into(),
            message: message.into(),
            upstream: None,
            violations: Vec::new(),
            unlisted_violations: 0,
            retry_after: None,
            quota: None,
            precondition: None,
            resource: None,
            metadata: Vec::new(),
            rate_limit: None,
            never_sent: false,
        }))
    }

    /// INVALID_ARGUMENT listing every bad field at once.
    /// At most [`MAX_LISTED_VIOLATIONS`](crate::violations::MAX_LISTED_VIOLATIONS)
    /// are listed, the rest counted (see [`crate::violations`]).
    pub fn invalid_argument(violations: impl Into<Violations>) -> Self {
        let violations: Violations = violations.into();
        let message = match (violations.listed(), violations.unlisted()) {
            ([one], 0) => format!("invalid request: {}: {}", one.field, one.description),
            _ => format!("invalid request: {} field violations", violations.len()),
        };
        let (listed, unlisted) = violations.into_parts();
        let mut error = Self::new(ErrorClass::InvalidArgument, Reason::InvalidRequest, message)
            .with_violations(listed);
        error.unlisted_violations = unlisted;
        error
    }

    /// NOT_FOUND for a resource.
    pub fn not_found(
        reason: impl Into<String>,
        resource_type: impl Into<String>,
        name: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(ErrorClass::NotFound, reason, message).with_resource(resource_type, name)
    }

    /// INTERNAL for a fault inside the gateway.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Internal, Reason::Internal, message)
    }

    /// Attaches the upstream that answered.
    pub fn with_upstream(mut self, upstream: UpstreamContext) -> Self {
        self.upstream = Some(upstream);
        self
    }

    /// Attaches a retry delay.
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Attaches the quota that ran out.
    pub fn with_quota(
        mut self,
        subject: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        self.quota = Some(QuotaViolation {
            subject: subject.into(),
            description: description.into(),
        });
        self
    }

    /// Attaches the precondition that failed.
    pub fn with_precondition(
        mut self,
        kind: impl Into<String>,
        subject: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        self.precondition = Some(PreconditionViolation {
            kind: kind.into(),
            subject: subject.into(),
            description: description.into(),
        });
        self
    }

    /// Attaches the resource that was not found.
    pub fn with_resource(
        mut self,
        resource_type: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        self.resource = Some(ResourceRef {
            resource_type: resource_type.into(),
            name: name.into(),
        });
        self
    }

    /// Adds one `ErrorInfo` metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// Attaches bad fields.
    pub fn with_violations(mut self, violations: Vec<FieldViolation>) -> Self {
        self.violations = violations;
        self
    }

    /// Marks the request as never having reached the upstream.
    pub fn never_sent(mut self) -> Self {
        self.never_sent = true;
        self
    }

    /// Attaches the rate-limit window.
    pub fn with_rate_limit(mut self, rate_limit: RateLimitInfo) -> Self {
        self.rate_limit = Some(rate_limit);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_message_names_the_single_field() {
        let err = GatewayError::invalid_argument(vec![FieldViolation::new(
            "target.slug",
            "must be lowercase",
        )]);
        assert_eq!(err.class, ErrorClass::InvalidArgument);
        assert_eq!(
            err.to_string(),
            "invalid request: target.slug: must be lowercase"
        );
    }

    #[test]
    fn invalid_argument_message_counts_many_fields() {
        let err = GatewayError::invalid_argument(vec![
            FieldViolation::new("a", "x"),
            FieldViolation::new("b", "y"),
        ]);
        assert_eq!(err.to_string(), "invalid request: 2 field violations");
        assert_eq!(err.violations.len(), 2);
    }
}
