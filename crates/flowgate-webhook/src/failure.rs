//! Why a delivery was rejected.

use std::fmt;

/// The typed reason a webhook delivery was rejected.
///
/// The gRPC edge maps these onto `VerifyWebhookResponse` reasons; they are
/// also the low-cardinality label for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The scheme's signature header is absent.
    MissingSignature,
    /// A header could not be parsed, a timestamp is not a number, a
    /// configured secret has the wrong format, or the body is not the JSON
    /// the scheme's event requires.
    Malformed,
    /// No configured secret produced any of the signatures sent.
    Mismatch,
    /// The signed timestamp is further from now than the tolerance.
    Expired,
    /// The event id was already accepted within the replay window.
    Replayed,
}

impl FailureReason {
    /// A stable `snake_case` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingSignature => "missing_signature",
            Self::Malformed => "malformed",
            Self::Mismatch => "mismatch",
            Self::Expired => "expired",
            Self::Replayed => "replayed",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected delivery: a [`FailureReason`] and a human message.
///
/// Only this crate builds one, and its messages are made of fixed text,
/// header names and numbers: never a secret, a signature or body content.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("webhook rejected ({reason}): {message}")]
pub struct WebhookFailure {
    reason: FailureReason,
    message: String,
}

impl WebhookFailure {
    pub(crate) fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    pub(crate) fn missing(header: &str) -> Self {
        Self::new(
            FailureReason::MissingSignature,
            format!("header `{header}` is missing"),
        )
    }

    pub(crate) fn malformed(message: impl Into<String>) -> Self {
        Self::new(FailureReason::Malformed, message)
    }

    pub(crate) fn mismatch() -> Self {
        Self::new(
            FailureReason::Mismatch,
            "no configured secret matches the signature",
        )
    }

    /// Why the delivery was rejected.
    pub fn reason(&self) -> FailureReason {
        self.reason
    }

    /// What exactly was wrong, safe to log and to return to the caller.
    pub fn message(&self) -> &str {
        &self.message
    }
}
