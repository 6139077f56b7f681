//! A gRPC status as a Connect error: the code's name and HTTP status, and
//! the JSON `{code, message, details: [{type, value, debug}]}` whose
//! details are the status's `google.rpc` details (`value` the protobuf
//! bytes in base64, `debug` their proto3 JSON).

use base64::Engine as _;
use http::{HeaderMap, StatusCode};
use prost::Message as _;
use serde_json::{Map, Value, json};
use tonic::{Code, Status};

use super::codec::{Catalog, proto_to_value};

/// Connect's name for `code` (`invalid_argument`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status of a unary Connect error with `code` (the protocol's
/// table).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The Connect error JSON of `status`.
pub fn error_json(status: &Status) -> Value {
    let mut error = Map::new();
    error.insert("code".into(), code_name(status.code()).into());
    if !status.message().is_empty() {
        error.insert("message".into(), status.message().into());
    }
    let details = details(status.details());
    if !details.is_empty() {
        error.insert("details".into(), Value::Array(details));
    }
    Value::Object(error)
}

/// The details of an encoded `google.rpc.Status`, in Connect's form.
fn details(encoded: &[u8]) -> Vec<Value> {
    if encoded.is_empty() {
        return Vec::new();
    }
    let Ok(status) = tonic_types::pb::Status::decode(encoded) else {
        return Vec::new();
    };
    let catalog = Catalog::get();
    status
        .details
        .iter()
        .map(|any| {
            let name = any.type_url.rsplit('/').next().unwrap_or_default();
            let mut detail = Map::new();
            detail.insert("type".into(), name.into());
            detail.insert(
                "value".into(),
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .encode(&any.value)
                    .into(),
            );
            let debug = catalog
                .and_then(|catalog| catalog.message(name))
                .and_then(|desc| proto_to_value(&desc, &any.value).ok());
            if let Some(debug) = debug {
                detail.insert("debug".into(), debug);
            }
            Value::Object(detail)
        })
        .collect()
}

/// The JSON of a Connect end-of-stream message: the error unless `status`
/// is OK, and the trailing metadata.
pub fn end_stream_json(status: &Status, trailers: &HeaderMap) -> Vec<u8> {
    let mut end = Map::new();
    if status.code() != Code::Ok {
        end.insert("error".into(), error_json(status));
    }
    let metadata = metadata_json(trailers);
    if !metadata.is_empty() {
        end.insert("metadata".into(), Value::Object(metadata));
    }
    serde_json::to_vec(&Value::Object(end)).unwrap_or_else(|_| b"{}".to_vec())
}

/// Metadata other than gRPC's own as `{name: [values]}`.
fn metadata_json(headers: &HeaderMap) -> Map<String, Value> {
    let mut metadata = Map::new();
    for name in headers.keys() {
        if is_protocol_header(name.as_str()) {
            continue;
        }
        let values: Vec<Value> = headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .map(|value| json!(value))
            .collect();
        metadata.insert(name.as_str().into(), Value::Array(values));
    }
    metadata
}

/// Headers that belong to the gRPC or HTTP framing, not to the caller.
pub fn is_protocol_header(name: &str) -> bool {
    name.starts_with("grpc-")
        || matches!(
            name,
            "content-type" | "content-length" | "transfer-encoding" | "te" | "trailer"
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tonic_types::{ErrorDetails, StatusExt as _};

    #[test]
    fn details_carry_type_value_and_debug() {
        let mut details = ErrorDetails::with_error_info(
            "CALLER_QUOTA_EXCEEDED",
            "flowgate",
            HashMap::from([("quota".to_owned(), "requests".to_owned())]),
        );
        details.set_retry_info(Some(std::time::Duration::from_secs(3)));
        let status = Status::with_error_details(Code::ResourceExhausted, "slow down", details);
        let json = error_json(&status);
        assert_eq!(json["code"], "resource_exhausted");
        assert_eq!(json["message"], "slow down");
        let details = json["details"].as_array().unwrap();
        assert_eq!(details.len(), 2);
        let info = details
            .iter()
            .find(|d| d["type"] == "google.rpc.ErrorInfo")
            .unwrap();
        assert_eq!(info["debug"]["reason"], "CALLER_QUOTA_EXCEEDED");
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(info["value"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            tonic_types::pb::ErrorInfo::decode(&bytes[..])
                .unwrap()
                .reason,
            "CALLER_QUOTA_EXCEEDED"
        );
        let retry = details
            .iter()
            .find(|d| d["type"] == "google.rpc.RetryInfo")
            .unwrap();
        assert_eq!(retry["debug"]["retryDelay"], "3s");
        assert_eq!(http_status(status.code()), StatusCode::TOO_MANY_REQUESTS);
    }

    #[test]
    fn end_stream_has_error_and_metadata() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "5".parse().unwrap());
        trailers.insert("x-ratelimit-remaining", "4".parse().unwrap());
        let ok: Value =
            serde_json::from_slice(&end_stream_json(&Status::ok(""), &trailers)).unwrap();
        assert_eq!(ok, json!({"metadata": {"x-ratelimit-remaining": ["4"]}}));
        let failed: Value = serde_json::from_slice(&end_stream_json(
            &Status::not_found("no such run"),
            &HeaderMap::new(),
        ))
        .unwrap();
        assert_eq!(
            failed,
            json!({"error": {"code": "not_found", "message": "no such run"}})
        );
    }
}
