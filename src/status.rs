//! The one place a [`GatewayError`] becomes a `tonic::Status`.
//!
//! | class | gRPC code | details |
//! |---|---|---|
//! | InvalidArgument | INVALID_ARGUMENT | BadRequest |
//! | Unauthenticated | UNAUTHENTICATED | |
//! | PermissionDenied | PERMISSION_DENIED | (required capability in ErrorInfo) |
//! | NotFound | NOT_FOUND | ResourceInfo |
//! | RateLimited | RESOURCE_EXHAUSTED | RetryInfo, QuotaFailure |
//! | QuotaExhausted | RESOURCE_EXHAUSTED | QuotaFailure |
//! | FailedPrecondition | FAILED_PRECONDITION | PreconditionFailure |
//! | UpstreamCredentialRejected | UNAUTHENTICATED | reason UPSTREAM_CREDENTIAL_REJECTED |
//! | DeadlineExceeded | DEADLINE_EXCEEDED | |
//! | Unavailable | UNAVAILABLE | RetryInfo when known |
//! | UpstreamFailure, ProtocolError, Internal | INTERNAL | |
//! | Unimplemented | UNIMPLEMENTED | |
//!
//! Every status carries `ErrorInfo` (reason, domain = provider kind or
//! `flowgate`, metadata = provider, http_status, upstream_request_id) and,
//! when known, the rate-limit window as `x-ratelimit-*` metadata.
//!
//! Echo caps: messages and details may echo caller input (a metadata key,
//! an input name, a run id). Every echoed text is cut here, in one place,
//! so a status stays a few KiB whatever the caller sent (standard clients
//! reject statuses over their metadata limit, typically 8 KiB to 16 KiB):
//! names and values at [`MAX_ECHOED_CHARS`], descriptions and the message
//! at [`MAX_MESSAGE_CHARS`]. A cut text ends with [`CUT_MARK`]. Field
//! violations are listed up to [`MAX_LISTED_VIOLATIONS`] and
//! [`MAX_VIOLATION_BYTES`]; one closing entry, field `…`, says `and K more`.

use std::{borrow::Cow, collections::HashMap};

use flowgate_core::{
    ErrorClass, FieldViolation, GatewayError, MAX_LISTED_VIOLATIONS, RateLimitInfo,
};
use tonic::{
    Code, Status,
    metadata::{MetadataMap, MetadataValue},
};
use tonic_types::{ErrorDetails, StatusExt};

/// Longest echoed name or value (a field path, an ErrorInfo metadata
/// value, a resource name), in characters, before the cut mark.
pub const MAX_ECHOED_CHARS: usize = 128;
/// Longest message or violation description, in characters.
pub const MAX_MESSAGE_CHARS: usize = 512;
/// Ends a text that was cut.
pub const CUT_MARK: char = '…';

/// `text` cut to at most `max` characters plus [`CUT_MARK`] when longer;
/// borrowed (no copy) when it fits.
pub fn cap(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((end, _)) => {
            let mut cut = String::with_capacity(end + CUT_MARK.len_utf8());
            cut.push_str(&text[..end]);
            cut.push(CUT_MARK);
            Cow::Owned(cut)
        }
    }
}

/// A name or value echoed to the caller, capped at [`MAX_ECHOED_CHARS`].
pub fn echo(text: &str) -> String {
    cap(text, MAX_ECHOED_CHARS).into_owned()
}

/// A message or description, capped at [`MAX_MESSAGE_CHARS`].
fn message(text: &str) -> String {
    cap(text, MAX_MESSAGE_CHARS).into_owned()
}

/// Most bytes of field names and descriptions one status lists; the
/// violations past it are counted in the closing entry instead.
pub const MAX_VIOLATION_BYTES: usize = 4096;
/// The field of the closing entry that counts the violations not listed.
pub const UNLISTED_FIELD: &str = "…";

/// Lists `violations` in `details`: at most [`MAX_LISTED_VIOLATIONS`] of
/// them within [`MAX_VIOLATION_BYTES`], each field and description capped,
/// then one entry `…` / `and K more` counting the rest and `unlisted`.
fn add_violations(details: &mut ErrorDetails, violations: &[FieldViolation], unlisted: usize) {
    let mut bytes = 0usize;
    let mut listed = 0usize;
    for violation in violations.iter().take(MAX_LISTED_VIOLATIONS) {
        let field = echo(&violation.field);
        let description = message(&violation.description);
        bytes = bytes.saturating_add(field.len() + description.len());
        // The first one always fits: each text is capped.
        if listed > 0 && bytes > MAX_VIOLATION_BYTES {
            break;
        }
        details.add_bad_request_violation(field, description);
        listed += 1;
    }
    let more = unlisted.saturating_add(violations.len() - listed);
    if more > 0 {
        details.add_bad_request_violation(UNLISTED_FIELD, format!("and {more} more"));
    }
}

/// The gRPC code of an error class.
pub fn code_for(class: ErrorClass) -> Code {
    match class {
        ErrorClass::InvalidArgument => Code::InvalidArgument,
        ErrorClass::Unauthenticated | ErrorClass::UpstreamCredentialRejected => {
            Code::Unauthenticated
        }
        ErrorClass::PermissionDenied => Code::PermissionDenied,
        ErrorClass::NotFound => Code::NotFound,
        ErrorClass::RateLimited | ErrorClass::QuotaExhausted => Code::ResourceExhausted,
        ErrorClass::FailedPrecondition => Code::FailedPrecondition,
        ErrorClass::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorClass::Unavailable => Code::Unavailable,
        ErrorClass::UpstreamFailure | ErrorClass::ProtocolError | ErrorClass::Internal => {
            Code::Internal
        }
        ErrorClass::Unimplemented => Code::Unimplemented,
    }
}

/// Converts an engine error into the status the caller receives.
pub fn to_status(error: &GatewayError) -> Status {
    let mut details = ErrorDetails::new();
    let mut info: HashMap<String, String> = HashMap::new();
    let domain = match &error.upstream {
        Some(upstream) => {
            info.insert("provider".into(), echo(&upstream.provider));
            if let Some(status) = upstream.http_status {
                info.insert("http_status".into(), status.to_string());
            }
            if let Some(request_id) = &upstream.request_id {
                info.insert("upstream_request_id".into(), echo(request_id));
            }
            upstream.kind.as_str()
        }
        None => "flowgate",
    };
    for (key, value) in &error.metadata {
        info.insert(echo(key), echo(value));
    }
    details.set_error_info(echo(&error.reason), domain, info);
    add_violations(&mut details, &error.violations, error.unlisted_violations);
    if let Some(retry_after) = error.retry_after {
        details.set_retry_info(Some(retry_after));
    }
    if let Some(quota) = &error.quota {
        details.add_quota_failure_violation(echo(&quota.subject), message(&quota.description));
    }
    if let Some(precondition) = &error.precondition {
        details.add_precondition_failure_violation(
            echo(&precondition.kind),
            echo(&precondition.subject),
            message(&precondition.description),
        );
    }
    if let Some(resource) = &error.resource {
        let owner = error
            .upstream
            .as_ref()
            .map(|upstream| echo(&upstream.provider))
            .unwrap_or_default();
        details.set_resource_info(
            echo(&resource.resource_type),
            echo(&resource.name),
            owner,
            message(&error.message),
        );
    }
    let mut metadata = MetadataMap::new();
    if let Some(rate_limit) = &error.rate_limit {
        insert_rate_limit(rate_limit, &mut metadata);
    }
    Status::with_error_details_and_metadata(
        code_for(error.class),
        message(&error.message),
        details,
        metadata,
    )
}

/// Writes a rate-limit window as `x-ratelimit-limit`, `-remaining`,
/// `-reset` (unix seconds) and `-retry-after` (seconds) metadata.
pub fn insert_rate_limit(rate_limit: &RateLimitInfo, metadata: &mut MetadataMap) {
    let mut put = |key: &'static str, value: u64| {
        metadata.insert(key, MetadataValue::from(value));
    };
    if let Some(limit) = rate_limit.limit {
        put("x-ratelimit-limit", limit);
    }
    if let Some(remaining) = rate_limit.remaining {
        put("x-ratelimit-remaining", remaining);
    }
    if let Some(reset) = rate_limit
        .reset_at
        .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
    {
        put("x-ratelimit-reset", reset.as_secs());
    }
    if let Some(retry_after) = rate_limit.retry_after {
        put("x-ratelimit-retry-after", retry_after.as_secs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowgate_core::{ProviderKind, UpstreamContext};
    use std::time::Duration;

    #[test]
    fn rate_limited_carries_retry_quota_and_metadata() {
        let error = GatewayError::new(ErrorClass::RateLimited, "RATE_LIMIT_EXCEEDED", "slow down")
            .with_upstream(UpstreamContext {
                provider: "kn".into(),
                kind: ProviderKind::Knouds,
                http_status: Some(429),
                request_id: Some("req-9".into()),
            })
            .with_retry_after(Some(Duration::from_secs(7)))
            .with_quota("provider:kn", "upstream request rate")
            .with_rate_limit(RateLimitInfo {
                limit: Some(100),
                remaining: Some(0),
                ..Default::default()
            });
        let status = to_status(&error);
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "RATE_LIMIT_EXCEEDED");
        assert_eq!(info.domain, "knouds");
        assert_eq!(info.metadata["http_status"], "429");
        assert_eq!(info.metadata["upstream_request_id"], "req-9");
        assert_eq!(
            details.retry_info().unwrap().retry_delay,
            Some(Duration::from_secs(7))
        );
        assert_eq!(details.quota_failure().unwrap().violations.len(), 1);
        assert_eq!(status.metadata().get("x-ratelimit-remaining").unwrap(), "0");
    }

    /// flowgate's own reasons reach the wire as exactly their
    /// `Reason::as_str` text (pinned in `flowgate_core::reason`'s tests).
    #[test]
    fn every_typed_reason_is_the_wire_reason() {
        for reason in flowgate_core::reason::Reason::ALL {
            let status = to_status(&GatewayError::new(ErrorClass::Internal, *reason, "x"));
            let details = status.get_error_details();
            assert_eq!(details.error_info().unwrap().reason, reason.as_str());
        }
    }

    #[test]
    fn invalid_argument_lists_violations() {
        let status = to_status(&GatewayError::invalid_argument(vec![
            FieldViolation::new("target.slug", "bad"),
            FieldViolation::new("metadata.x", "flat"),
        ]));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        assert_eq!(details.bad_request().unwrap().field_violations.len(), 2);
        assert_eq!(details.error_info().unwrap().domain, "flowgate");
    }

    #[test]
    fn caps_cut_on_characters_and_mark_the_cut() {
        assert!(matches!(cap("short", 8), Cow::Borrowed("short")));
        assert_eq!(cap("ééééé", 3), "ééé…");
        assert_eq!(cap("abc", 3), "abc");
    }

    #[test]
    fn echoed_caller_input_is_capped_everywhere() {
        let key = "k".repeat(3_500_000);
        let field = format!("metadata.{key}");
        let mut error = GatewayError::invalid_argument(vec![FieldViolation::new(
            field.clone(),
            format!("{key} is too long"),
        )]);
        error.metadata.push((key.clone(), key.clone()));
        let error = error.with_resource("run", key.clone());
        let status = to_status(&error);
        let size = status.message().len() + status.details().len();
        assert!(size < 4096, "status is {size} bytes");
        assert!(status.message().ends_with(CUT_MARK), "{}", status.message());
        let details = status.get_error_details();
        let violation = &details.bad_request().unwrap().field_violations[0];
        assert!(violation.field.starts_with("metadata.kkk"));
        assert!(violation.field.ends_with(CUT_MARK));
        assert_eq!(violation.field.chars().count(), MAX_ECHOED_CHARS + 1);
        assert!(details.resource_info().unwrap().resource_name.len() < 200);
    }

    #[test]
    fn many_violations_list_twenty_within_the_budget_and_count_the_rest() {
        let many: Vec<FieldViolation> = (0..60_000)
            .map(|index| FieldViolation::new(format!("inputs.f{index}"), "unknown input"))
            .collect();
        let status = to_status(&GatewayError::invalid_argument(many));
        assert_eq!(status.message(), "invalid request: 60000 field violations");
        let details = status.get_error_details();
        let listed = &details.bad_request().unwrap().field_violations;
        assert_eq!(listed.len(), MAX_LISTED_VIOLATIONS + 1);
        assert_eq!(listed[0].field, "inputs.f0");
        let last = &listed[MAX_LISTED_VIOLATIONS];
        assert_eq!(last.field, UNLISTED_FIELD);
        assert_eq!(last.description, "and 59980 more");

        // Long descriptions: the byte budget cuts the list sooner.
        let long: Vec<FieldViolation> = (0..20)
            .map(|index| FieldViolation::new(format!("inputs.f{index}"), "d".repeat(5000)))
            .collect();
        let status = to_status(&GatewayError::invalid_argument(long));
        assert!(
            status.details().len() < 6 * 1024,
            "{}",
            status.details().len()
        );
        let details = status.get_error_details();
        let listed = &details.bad_request().unwrap().field_violations;
        let shown = listed.len() - 1;
        assert!((1..20).contains(&shown), "{shown}");
        assert_eq!(
            listed[shown].description,
            format!("and {} more", 20 - shown)
        );
    }
}
