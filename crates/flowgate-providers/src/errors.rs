//! What every dialect's error decoder shares: reading a vendor error body,
//! the status-class fallback for codes nobody documented, and attaching the
//! upstream context, rate-limit data and retry hints to the typed error.
//!
//! Upstream bodies never reach a message whole: only the vendor's own short
//! `error`/`message` text, truncated, with the provider key redacted.
//!
//! Redaction of every upstream-derived string lives in [`crate::redaction`].

use std::time::SystemTime;

use flowgate_core::{
    ErrorClass, GatewayError, RunError, RunOutcome, RunStatus, UpstreamContext, reason::Reason,
};
use serde_json::{Map, Value};

pub use crate::redaction::{UNREADABLE_REASON, safe_message, upstream_reason};
use crate::{ProviderSettings, http::UpstreamResponse};

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
    /// what cannot be read is simply absent, down to single fields (a
    /// `"limit": 1e400` never hides the `error_code` beside it).
    pub fn parse(body: &[u8]) -> Self {
        let Some(object) = crate::numbers::lenient::object(body, 1) else {
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
pub fn reason_for_status(status: u16) -> Reason {
    match class_for_status(status) {
        ErrorClass::InvalidArgument => Reason::UpstreamInvalidRequest,
        ErrorClass::UpstreamCredentialRejected => Reason::UpstreamCredentialRejected,
        ErrorClass::QuotaExhausted => Reason::UpstreamPaymentRequired,
        ErrorClass::PermissionDenied => Reason::UpstreamForbidden,
        ErrorClass::NotFound => Reason::UpstreamNotFound,
        ErrorClass::DeadlineExceeded => Reason::UpstreamTimeout,
        ErrorClass::FailedPrecondition => Reason::UpstreamConflict,
        ErrorClass::RateLimited => Reason::UpstreamRateLimited,
        ErrorClass::Unavailable => Reason::UpstreamUnavailable,
        ErrorClass::UpstreamFailure => Reason::UpstreamInternalError,
        _ => Reason::UpstreamProtocolError,
    }
}

/// Builds the typed error for an upstream answer: context (provider, HTTP
/// status, request id), the rate-limit window, and the hints its class needs
/// (RetryInfo for rate limits and unavailability, QuotaFailure for quotas).
pub fn upstream_error(
    settings: &ProviderSettings,
    response: &UpstreamResponse,
    class: ErrorClass,
    reason: impl Into<String>,
    message: impl Into<String>,
) -> GatewayError {
    let rate_limit = response.rate_limit.clone();
    let reason = upstream_reason(settings, &reason.into());
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
pub fn run_not_found(
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
pub fn protocol_error(
    settings: &ProviderSettings,
    response: &UpstreamResponse,
    what: &str,
) -> GatewayError {
    upstream_error(
        settings,
        response,
        ErrorClass::ProtocolError,
        Reason::UpstreamProtocolError,
        format!(
            "{} answered HTTP {} with {what}",
            settings.name, response.status
        ),
    )
}

/// The answer's JSON body as `T`, or the protocol error naming `what` the
/// body was not (the raw body never reaches the message).
pub fn decode_body<T: serde::de::DeserializeOwned>(
    settings: &ProviderSettings,
    response: &UpstreamResponse,
    what: &str,
) -> Result<T, GatewayError> {
    serde_json::from_slice(&response.body).map_err(|_| protocol_error(settings, response, what))
}

/// The fallback for statuses and codes a dialect does not document: the
/// class from the status, the vendor's code (or one derived from the status)
/// as the reason. An answer that is not even a JSON error body is a protocol
/// error whatever its status class, so a caller can tell "the vendor said
/// no" from "something in between answered".
pub fn fallback_error(
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
            Reason::UpstreamProtocolError
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
        .unwrap_or_else(|| reason_for_status(response.status).into());
    upstream_error(
        settings,
        response,
        class,
        reason,
        describe(settings, response, body),
    )
}

/// `"<provider> answered HTTP <status>: <upstream message>"`.
pub fn describe(
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
pub fn credential_rejected(
    settings: &ProviderSettings,
    response: &UpstreamResponse,
) -> GatewayError {
    let upstream_code = ErrorBody::parse(&response.body).code;
    let error = upstream_error(
        settings,
        response,
        ErrorClass::UpstreamCredentialRejected,
        Reason::UpstreamCredentialRejected,
        format!(
            "{} rejected the gateway's API key: check the provider's api_key configuration",
            settings.name
        ),
    );
    match upstream_code {
        Some(code) => error.with_metadata("upstream_code", upstream_reason(settings, &code)),
        None => error,
    }
}

/// A run error from a body's `error` value (read by
/// [`RunError::from_value`]), made safe ([`safe_run_error`]).
pub fn run_error(error: Option<Value>, settings: &ProviderSettings) -> RunError {
    const FAILED: &str = "the run failed";
    let error = error
        .as_ref()
        .and_then(|error| RunError::from_value(error, Reason::RunFailed.as_str(), FAILED))
        .unwrap_or_else(|| RunError {
            code: Reason::RunFailed.into(),
            message: FAILED.to_owned(),
        });
    safe_run_error(settings, error)
}

/// The outcome of a run the vendor says ran and failed (an error answer
/// that is a FAILED run, not a call error): the vendor's `code`, its
/// `message` (or `default_message` when it gave none), both made safe
/// ([`safe_run_error`]), and the answer's request id and rate limit.
pub fn failed_run(
    settings: &ProviderSettings,
    response: &UpstreamResponse,
    code: &str,
    message: Option<&str>,
    default_message: &str,
) -> RunOutcome {
    let error = RunError {
        code: code.to_owned(),
        message: message.unwrap_or(default_message).to_owned(),
    };
    RunOutcome {
        upstream_request_id: response.request_id(),
        status: Some(RunStatus::Failed),
        error: Some(safe_run_error(settings, error)),
        rate_limit: response.rate_limit.clone(),
        ..RunOutcome::default()
    }
}

/// A vendor's run error as a caller may see it: the code kept only as a
/// plain token without the key ([`upstream_reason`]), the message redacted
/// and bounded ([`safe_message`]).
pub fn safe_run_error(settings: &ProviderSettings, error: RunError) -> RunError {
    RunError {
        code: upstream_reason(settings, &error.code),
        message: safe_message(settings, &error.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redaction::{MAX_MESSAGE_CHARS, MIN_FRAGMENT, upstream_request_id};

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
    fn a_number_beyond_f64_hides_no_other_field() {
        let daily = ErrorBody::parse(
            br#"{"error":"Daily limit","error_code":"api_rate_limit_exceeded","limit":1e400}"#,
        );
        assert_eq!(daily.code.as_deref(), Some("api_rate_limit_exceeded"));
        assert_eq!(daily.message.as_deref(), Some("Daily limit"));
        assert_eq!(daily.field("limit"), None);
        let nested =
            ErrorBody::parse(br#"{"error":{"code":"EXECUTION_FAILED","message":"m","ms":-1e400}}"#);
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

    const KEY: &str = "knouds_live_7Hq2ZpX9vB4mN8rT1cW6yK3jD5fG0sLaQeU";

    fn settings() -> ProviderSettings {
        ProviderSettings::new(
            "kn",
            flowgate_core::ProviderKind::Knouds,
            flowgate_core::SecretString::new(KEY),
        )
    }

    /// No run of 10 or more key characters anywhere in `text`.
    fn leaks(text: &str) -> bool {
        (0..=KEY.len() - MIN_FRAGMENT).any(|at| text.contains(&KEY[at..at + MIN_FRAGMENT]))
    }

    #[test]
    fn messages_are_redacted_before_they_are_cut() {
        let settings = settings();
        // The key straddles the cut: truncating first would keep most of it.
        for pad in [0, 1, 255, 270, 290, 299, 300] {
            let message = format!("{}{KEY} trailing text", "x".repeat(pad));
            let safe = safe_message(&settings, &message);
            assert!(!leaks(&safe), "pad {pad}: {safe}");
            assert!(safe.chars().count() <= MAX_MESSAGE_CHARS + 1);
        }
        let partial = format!("key prefix {} and suffix {}", &KEY[..20], &KEY[25..]);
        let safe = safe_message(&settings, &partial);
        assert!(!leaks(&safe), "{safe}");
        assert_eq!(safe, "key prefix [redacted] and suffix [redacted]");
        let huge = format!("{}{KEY}", "y".repeat(5_000_000));
        assert!(safe_message(&settings, &huge).ends_with('…'));
    }

    #[test]
    fn reasons_must_be_plain_codes_without_the_key() {
        let settings = settings();
        assert_eq!(
            upstream_reason(&settings, "RATE_LIMIT_EXCEEDED"),
            "RATE_LIMIT_EXCEEDED"
        );
        assert_eq!(
            upstream_reason(&settings, "workflow.not-found"),
            "workflow.not-found"
        );
        for bad in [
            KEY,
            &format!("BAD_{}", &KEY[3..15]),
            "has space",
            "",
            &"A".repeat(65),
            "é",
        ] {
            assert_eq!(upstream_reason(&settings, bad), UNREADABLE_REASON, "{bad}");
        }
    }

    #[test]
    fn request_ids_without_the_key_pass() {
        let settings = settings();
        assert_eq!(
            upstream_request_id(&settings, "req_8f2:a-1").as_deref(),
            Some("req_8f2:a-1")
        );
        assert_eq!(upstream_request_id(&settings, KEY), None);
        assert_eq!(
            upstream_request_id(&settings, &format!("r-{}", &KEY[5..30])),
            None
        );
        assert_eq!(upstream_request_id(&settings, "a b"), None);
        assert_eq!(upstream_request_id(&settings, &"r".repeat(129)), None);
    }

    #[test]
    fn failed_runs_carry_redacted_errors() {
        let settings = settings();
        let error = run_error(
            Some(serde_json::json!({"code": KEY, "message": format!("{}{KEY}", "m".repeat(290))})),
            &settings,
        );
        assert_eq!(error.code, UNREADABLE_REASON);
        assert!(!leaks(&error.message), "{}", error.message);
    }

    proptest::proptest! {
        /// Whatever a vendor wraps around (pieces of) the key, in any
        /// length, no 10-character piece of it survives, and the message
        /// stays bounded.
        #[test]
        fn no_key_fragment_survives(
            parts in proptest::collection::vec(
                (0usize..KEY.len(), 0usize..KEY.len(), "[a-zé€ _]{0,40}"),
                0..12,
            ),
            pad in 0usize..400,
        ) {
            let mut message = "p".repeat(pad);
            for (from, to, noise) in parts {
                let (from, to) = (from.min(to), from.max(to));
                message.push_str(&KEY[from..to]);
                message.push_str(&noise);
            }
            let settings = settings();
            let safe = safe_message(&settings, &message);
            proptest::prop_assert!(!leaks(&safe), "{}", safe);
            proptest::prop_assert!(safe.chars().count() <= MAX_MESSAGE_CHARS + 1);
            let reason = upstream_reason(&settings, &message);
            proptest::prop_assert!(!leaks(&reason));
        }
    }
}
