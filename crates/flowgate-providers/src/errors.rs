//! What every dialect's error decoder shares: reading a vendor error body,
//! the status-class fallback for codes nobody documented, and attaching the
//! upstream context, rate-limit data and retry hints to the typed error.
//!
//! Upstream bodies never reach a message whole: only the vendor's own short
//! `error`/`message` text, truncated, with the provider key redacted.

use std::time::SystemTime;

use flowgate_core::{ErrorClass, GatewayError, RunError, UpstreamContext};
use serde_json::{Map, Value};

use crate::{ProviderSettings, http::UpstreamResponse};

/// Longest upstream message text carried into an error message.
const MAX_MESSAGE_CHARS: usize = 300;

/// The useful fields of a vendor error body, whatever the dialect.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ErrorBody {
    /// `code`, `error_code`, or `error.code`.
    pub code: Option<String>,
    /// `error` (when a string), `message`, or `error.message`.
    pub message: Option<String>,
    /// The whole JSON object, for dialect-specific fields.
    pub object: Option<Map<String, Value>>,
}

impl ErrorBody {
    /// Reads a body that may be JSON, HTML, empty or truncated. Never fails:
    /// what cannot be read is simply absent.
    pub fn parse(body: &[u8]) -> Self {
        let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
            return Self::default();
        };
        let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
        let nested = object.get("error").and_then(Value::as_object);
        let code = text(object.get("code"))
            .or_else(|| text(object.get("error_code")))
            .or_else(|| text(nested.and_then(|error| error.get("code"))));
        let message = text(object.get("error"))
            .or_else(|| text(object.get("message")))
            .or_else(|| text(nested.and_then(|error| error.get("message"))));
        Self {
            code: code.filter(|code| !code.is_empty()),
            message: message.filter(|message| !message.is_empty()),
            object: Some(object),
        }
    }

    /// A string field of the body object.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.object.as_ref()?.get(name)?.as_str()
    }
}

/// The class an HTTP status implies when the body says nothing more.
pub fn class_for_status(status: u16) -> ErrorClass {
    match status {
        400 | 413 | 422 => ErrorClass::InvalidArgument,
        401 => ErrorClass::UpstreamCredentialRejected,
        402 => ErrorClass::QuotaExhausted,
        403 => ErrorClass::PermissionDenied,
        404 => ErrorClass::NotFound,
        408 | 504 => ErrorClass::DeadlineExceeded,
        409 => ErrorClass::FailedPrecondition,
        429 => ErrorClass::RateLimited,
        502 | 503 => ErrorClass::Unavailable,
        500..=599 => ErrorClass::UpstreamFailure,
        _ => ErrorClass::ProtocolError,
    }
}

/// The reason used when the upstream gave no code.
pub fn reason_for_status(status: u16) -> &'static str {
    match class_for_status(status) {
        ErrorClass::InvalidArgument => "UPSTREAM_INVALID_REQUEST",
        ErrorClass::UpstreamCredentialRejected => "UPSTREAM_CREDENTIAL_REJECTED",
        ErrorClass::QuotaExhausted => "UPSTREAM_PAYMENT_REQUIRED",
        ErrorClass::PermissionDenied => "UPSTREAM_FORBIDDEN",
        ErrorClass::NotFound => "UPSTREAM_NOT_FOUND",
        ErrorClass::DeadlineExceeded => "UPSTREAM_TIMEOUT",
        ErrorClass::FailedPrecondition => "UPSTREAM_CONFLICT",
        ErrorClass::RateLimited => "UPSTREAM_RATE_LIMITED",
        ErrorClass::Unavailable => "UPSTREAM_UNAVAILABLE",
        ErrorClass::UpstreamFailure => "UPSTREAM_INTERNAL_ERROR",
        _ => "UPSTREAM_PROTOCOL_ERROR",
    }
}

/// The upstream's message made safe for a caller: truncated, key redacted.
pub(crate) fn safe_message(settings: &ProviderSettings, message: &str) -> String {
    let mut text: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    if message.chars().count() > MAX_MESSAGE_CHARS {
        text.push('…');
    }
    settings.api_key.redact_from(&text)
}

/// Builds the typed error for an upstream answer: context (provider, HTTP
/// status, request id), the rate-limit window, and the hints its class needs
/// (RetryInfo for rate limits and unavailability, QuotaFailure for quotas).
pub(crate) fn upstream_error(
    settings: &ProviderSettings,
    response: &UpstreamResponse,
    class: ErrorClass,
    reason: impl Into<String>,
    message: impl Into<String>,
) -> GatewayError {
    let rate_limit = response.rate_limit.clone();
    let mut error = GatewayError::new(class, reason, message).with_upstream(UpstreamContext {
        provider: settings.name.clone(),
        kind: settings.kind,
        http_status: Some(response.status),
        request_id: response.request_id(),
    });
    let wait = rate_limit.retry_after.or_else(|| {
        rate_limit
            .reset_at
            .and_then(|at| at.duration_since(SystemTime::now()).ok())
    });
    match class {
        ErrorClass::RateLimited => {
            error = error.with_retry_after(wait).with_quota(
                format!("provider:{}", settings.name),
                "upstream request rate",
            );
        }
        ErrorClass::QuotaExhausted => {
            error = error.with_quota(format!("provider:{}", settings.name), "upstream credits");
        }
        ErrorClass::Unavailable => error = error.with_retry_after(rate_limit.retry_after),
        _ => {}
    }
    if rate_limit.is_empty() {
        error
    } else {
        error.with_rate_limit(rate_limit)
    }
}

/// NOT_FOUND for a status lookup of a run the upstream does not know:
/// the upstream's code (or `default_code`) and a `ResourceInfo`.
pub(crate) fn run_not_found(
    settings: &ProviderSettings,
    response: &UpstreamResponse,
    default_code: &str,
    resource_type: &str,
    id: &str,
) -> GatewayError {
    let body = ErrorBody::parse(&response.body);
    upstream_error(
        settings,
        response,
        ErrorClass::NotFound,
        body.code.clone().unwrap_or_else(|| default_code.to_owned()),
        describe(settings, response, &body),
    )
    .with_resource(resource_type, id)
}

/// INTERNAL / `UPSTREAM_PROTOCOL_ERROR` for an answer the dialect cannot read.
pub(crate) fn protocol_error(
    settings: &ProviderSettings,
    response: &UpstreamResponse,
    what: &str,
) -> GatewayError {
    upstream_error(
        settings,
        response,
        ErrorClass::ProtocolError,
        "UPSTREAM_PROTOCOL_ERROR",
        format!(
            "{} answered HTTP {} with {what}",
            settings.name, response.status
        ),
    )
}

/// The fallback for statuses and codes a dialect does not document: the
/// class from the status, the vendor's code (or one derived from the status)
/// as the reason. An answer that is not even a JSON error body is a protocol
/// error whatever its status class, so a caller can tell "the vendor said
/// no" from "something in between answered".
pub(crate) fn fallback_error(
    settings: &ProviderSettings,
    response: &UpstreamResponse,
    body: &ErrorBody,
) -> GatewayError {
    if body.object.is_none() {
        let class = match class_for_status(response.status) {
            // A bare 429/502/503/504 still says "wait" or "try later".
            class @ (ErrorClass::RateLimited
            | ErrorClass::Unavailable
            | ErrorClass::DeadlineExceeded) => class,
            _ => ErrorClass::ProtocolError,
        };
        let reason = if class == ErrorClass::ProtocolError {
            "UPSTREAM_PROTOCOL_ERROR"
        } else {
            reason_for_status(response.status)
        };
        return upstream_error(
            settings,
            response,
            class,
            reason,
            format!(
                "{} answered HTTP {} without a readable error body",
                settings.name, response.status
            ),
        );
    }
    let class = class_for_status(response.status);
    let reason = body
        .code
        .clone()
        .unwrap_or_else(|| reason_for_status(response.status).to_owned());
    upstream_error(
        settings,
        response,
        class,
        reason,
        describe(settings, response, body),
    )
}

/// `"<provider> answered HTTP <status>: <upstream message>"`.
pub(crate) fn describe(
    settings: &ProviderSettings,
    response: &UpstreamResponse,
    body: &ErrorBody,
) -> String {
    match &body.message {
        Some(message) => format!(
            "{} answered HTTP {}: {}",
            settings.name,
            response.status,
            safe_message(settings, message)
        ),
        None => format!("{} answered HTTP {}", settings.name, response.status),
    }
}

/// UNAUTHENTICATED for a rejected provider key: a gateway configuration
/// fault, said without the key.
pub(crate) fn credential_rejected(
    settings: &ProviderSettings,
    response: &UpstreamResponse,
) -> GatewayError {
    let upstream_code = ErrorBody::parse(&response.body).code;
    let error = upstream_error(
        settings,
        response,
        ErrorClass::UpstreamCredentialRejected,
        "UPSTREAM_CREDENTIAL_REJECTED",
        format!(
            "{} rejected the gateway's API key: check the provider's api_key configuration",
            settings.name
        ),
    );
    match upstream_code {
        Some(code) => error.with_metadata("upstream_code", code),
        None => error,
    }
}

/// Ids may arrive as strings or numbers (one copy, in [`crate::numbers`]).
pub(crate) use crate::numbers::id_text;

/// A run error from a body's `error` value (string or `{code, message}`).
pub(crate) fn run_error(error: Option<Value>, settings: &ProviderSettings) -> RunError {
    let (code, message) = match error {
        Some(Value::String(message)) => ("RUN_FAILED".to_owned(), message),
        Some(Value::Object(object)) => (
            object
                .get("code")
                .and_then(Value::as_str)
                .unwrap_or("RUN_FAILED")
                .to_owned(),
            object
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the run failed")
                .to_owned(),
        ),
        _ => ("RUN_FAILED".to_owned(), "the run failed".to_owned()),
    };
    RunError {
        code,
        message: safe_message(settings, &message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_documented_shape() {
        let fetchhive = ErrorBody::parse(br#"{"error":"Not found","error_code":"not_found"}"#);
        assert_eq!(fetchhive.code.as_deref(), Some("not_found"));
        assert_eq!(fetchhive.message.as_deref(), Some("Not found"));
        let aitutor = ErrorBody::parse(br#"{"success":false,"error":"x","code":"missing_input"}"#);
        assert_eq!(aitutor.code.as_deref(), Some("missing_input"));
        let nested = ErrorBody::parse(br#"{"error":{"code":"EXECUTION_FAILED","message":"m"}}"#);
        assert_eq!(nested.code.as_deref(), Some("EXECUTION_FAILED"));
        assert_eq!(nested.message.as_deref(), Some("m"));
    }

    #[test]
    fn unreadable_bodies_are_empty() {
        for body in [
            &b""[..],
            b"<html>502</html>",
            b"{\"error\":",
            b"[1,2]",
            b"null",
        ] {
            let parsed = ErrorBody::parse(body);
            assert!(parsed.object.is_none() && parsed.code.is_none());
        }
    }
}
