//! An idempotent Invoke's wire answer as the idempotency store keeps it:
//! the response message, or the status (code, message, rich details), each
//! with its ASCII response metadata (`x-ratelimit-*`). A replay decodes it
//! back into exactly what the first caller received, plus the
//! `x-idempotent-replayed: true` header.

use std::collections::BTreeMap;

use bytes::Bytes;
use flowgate_state::idempotency::RecordedAnswer;
use prost::Message as _;
use tonic::{
    Code, Response, Status,
    metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue},
};

use crate::proto::pb;

/// Response header set on every answer this call did not produce itself.
pub const REPLAYED_HEADER: &str = "x-idempotent-replayed";

/// The stored form (private to flowgate; not part of the public API).
#[derive(Clone, PartialEq, prost::Message)]
struct StoredAnswer {
    /// The response, for an OK answer.
    #[prost(message, optional, tag = "1")]
    response: Option<pb::InvokeResponse>,
    /// The gRPC code, for an error.
    #[prost(int32, tag = "2")]
    code: i32,
    /// The status message, for an error.
    #[prost(string, tag = "3")]
    message: String,
    /// The encoded `google.rpc.Status` details, for an error.
    #[prost(bytes = "bytes", tag = "4")]
    details: Bytes,
    /// ASCII response metadata.
    #[prost(btree_map = "string, string", tag = "5")]
    metadata: BTreeMap<String, String>,
}

/// Encodes an answer for the store.
pub fn encode(answer: &Result<Response<pb::InvokeResponse>, Status>) -> RecordedAnswer {
    let stored = match answer {
        Ok(response) => StoredAnswer {
            response: Some(response.get_ref().clone()),
            metadata: ascii(response.metadata()),
            ..StoredAnswer::default()
        },
        Err(status) => StoredAnswer {
            response: None,
            code: status.code() as i32,
            message: status.message().to_owned(),
            details: Bytes::copy_from_slice(status.details()),
            metadata: ascii(status.metadata()),
        },
    };
    RecordedAnswer(Bytes::from(stored.encode_to_vec()))
}

/// The answer recorded for an idempotent call whose work panicked
/// ([`flowgate_state::idempotency::panicked`]), encoded once at start-up.
pub fn panic_answer() -> RecordedAnswer {
    encode(&Err(crate::status::to_status(
        &flowgate_state::idempotency::panicked(),
    )))
}

/// Decodes a stored answer; `replayed` adds [`REPLAYED_HEADER`].
pub fn decode(
    answer: &RecordedAnswer,
    replayed: bool,
) -> Result<Response<pb::InvokeResponse>, Status> {
    let Ok(stored) = StoredAnswer::decode(answer.0.clone()) else {
        return Err(Status::internal(
            "the recorded answer for this idempotency_key cannot be read",
        ));
    };
    let mut metadata = restore(&stored.metadata);
    if replayed {
        metadata.insert(REPLAYED_HEADER, MetadataValue::from_static("true"));
    }
    match stored.response {
        Some(response) => {
            let mut response = Response::new(response);
            *response.metadata_mut() = metadata;
            Ok(response)
        }
        None => Err(Status::with_details_and_metadata(
            Code::from_i32(stored.code),
            stored.message,
            stored.details,
            metadata,
        )),
    }
}

fn ascii(metadata: &MetadataMap) -> BTreeMap<String, String> {
    metadata
        .iter()
        .filter_map(|entry| match entry {
            KeyAndValueRef::Ascii(key, value) => {
                Some((key.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            }
            KeyAndValueRef::Binary(..) => None,
        })
        .collect()
}

fn restore(entries: &BTreeMap<String, String>) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    for (key, value) in entries {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            metadata.insert(key, value);
        }
    }
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_and_statuses_round_trip() {
        let mut response = Response::new(pb::InvokeResponse {
            run_id: "run-1".into(),
            ..pb::InvokeResponse::default()
        });
        response
            .metadata_mut()
            .insert("x-ratelimit-remaining", MetadataValue::from_static("7"));
        let back = decode(&encode(&Ok(response)), true).unwrap();
        assert_eq!(back.get_ref().run_id, "run-1");
        assert_eq!(back.metadata().get("x-ratelimit-remaining").unwrap(), "7");
        assert_eq!(back.metadata().get(REPLAYED_HEADER).unwrap(), "true");

        let status =
            Status::with_details(Code::Unavailable, "down", Bytes::from_static(b"\x08\x0e"));
        let back = decode(&encode(&Err(status)), false).unwrap_err();
        assert_eq!(back.code(), Code::Unavailable);
        assert_eq!(back.message(), "down");
        assert_eq!(back.details(), b"\x08\x0e");
        assert!(back.metadata().get(REPLAYED_HEADER).is_none());
    }
}
