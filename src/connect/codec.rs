//! What the Connect layer knows about the API and its wire formats: the
//! served methods (from the crate's descriptor set), proto3 JSON ↔
//! protobuf transcoding through `prost-reflect`, and the five-byte message
//! frame gRPC and Connect streaming share (flags byte, big-endian length).

use std::{collections::HashMap, sync::LazyLock};

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::Value;

use crate::proto::FILE_DESCRIPTOR_SET;

/// Length of a frame's prefix: one flags byte, four length bytes.
pub const FRAME_HEADER: usize = 5;
/// Flags bit of a compressed message (never produced or accepted here).
pub const FLAG_COMPRESSED: u8 = 0b01;
/// Flags bit of the Connect end-of-stream message.
pub const FLAG_END_STREAM: u8 = 0b10;

/// One method served over Connect.
#[derive(Debug, Clone)]
pub struct Method {
    /// The request message.
    pub input: MessageDescriptor,
    /// The response message.
    pub output: MessageDescriptor,
    /// True for server-streaming methods (`StreamStatus`).
    pub server_streaming: bool,
}

/// The methods of the `flowgate.v1` and `grpc.health.v1` services by path
/// (`/flowgate.v1.WorkflowGateway/Invoke`): the ones Connect JSON can be
/// transcoded for; and the pool that also knows the `google.rpc` error
/// detail types (for the `debug` form of details).
#[derive(Debug)]
pub struct Catalog {
    pool: DescriptorPool,
    methods: HashMap<String, Method>,
}

/// Built once from the descriptor sets compiled into the binary; `None`
/// only if they did not decode, which a unit test rules out.
static CATALOG: LazyLock<Option<Catalog>> = LazyLock::new(|| Catalog::build().ok());

impl Catalog {
    /// The catalog, built on first use.
    pub fn get() -> Option<&'static Self> {
        CATALOG.as_ref()
    }

    fn build() -> Result<Self, prost_reflect::DescriptorError> {
        let mut pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET)?;
        // The detail types and health, unless the crate's own set already
        // has them; a version that clashes with it is left out (details
        // then lose only their `debug` form).
        for (has, extra) in [
            ("google.rpc.ErrorInfo", tonic_types::pb::FILE_DESCRIPTOR_SET),
            (
                "grpc.health.v1.HealthCheckRequest",
                tonic_health::pb::FILE_DESCRIPTOR_SET,
            ),
        ] {
            if pool.get_message_by_name(has).is_none() {
                let mut extended = pool.clone();
                if extended.decode_file_descriptor_set(extra).is_ok() {
                    pool = extended;
                }
            }
        }
        let mut methods = HashMap::new();
        for service in pool.services() {
            if !matches!(service.package_name(), "flowgate.v1" | "grpc.health.v1") {
                continue;
            }
            for method in service.methods() {
                // Client and bidirectional streaming are not Connect's
                // unary or server-streaming shapes; flowgate has none.
                if method.is_client_streaming() {
                    continue;
                }
                methods.insert(
                    format!("/{}/{}", service.full_name(), method.name()),
                    Method {
                        input: method.input(),
                        output: method.output(),
                        server_streaming: method.is_server_streaming(),
                    },
                );
            }
        }
        Ok(Self { pool, methods })
    }

    /// The method served at `path`, if any.
    pub fn method(&self, path: &str) -> Option<&Method> {
        self.methods.get(path)
    }

    /// A message type by full name (`google.rpc.ErrorInfo`).
    pub fn message(&self, name: &str) -> Option<MessageDescriptor> {
        self.pool.get_message_by_name(name)
    }
}

/// Proto3 JSON → the protobuf message of `desc` in one uncompressed
/// frame; the error says what was wrong (serde's description with line
/// and column, never the input itself).
pub fn json_to_frame(desc: &MessageDescriptor, json: &[u8]) -> Result<Bytes, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let message = DynamicMessage::deserialize(desc.clone(), &mut deserializer)
        .map_err(|err| err.to_string())?;
    deserializer.end().map_err(|err| err.to_string())?;
    let len = message.encoded_len();
    let declared = u32::try_from(len).map_err(|_| "message too large".to_owned())?;
    let mut out = BytesMut::with_capacity(FRAME_HEADER.saturating_add(len));
    out.put_u8(0);
    out.put_u32(declared);
    message.encode(&mut out).map_err(|err| err.to_string())?;
    Ok(out.freeze())
}

/// Protobuf bytes of `desc` → proto3 JSON (field names in lowerCamelCase,
/// default values left out, as Connect clients expect).
pub fn proto_to_json(desc: &MessageDescriptor, proto: &[u8]) -> Result<Vec<u8>, String> {
    serde_json::to_vec(&proto_to_value(desc, proto)?).map_err(|err| err.to_string())
}

/// Protobuf bytes of `desc` → a proto3 JSON value, whole numbers in
/// `double` fields (every number of a `google.protobuf.Value`) written as
/// integers (`3`, not `3.0`), as the gRPC answer's readers see them.
pub fn proto_to_value(desc: &MessageDescriptor, proto: &[u8]) -> Result<Value, String> {
    let message = DynamicMessage::decode(desc.clone(), proto).map_err(|err| err.to_string())?;
    let mut value = message
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .map_err(|err| err.to_string())?;
    whole_numbers_as_integers(&mut value);
    Ok(value)
}

/// Largest integer a double holds exactly (2^53).
const EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

fn whole_numbers_as_integers(value: &mut Value) {
    match value {
        Value::Number(number) => {
            if let Some(float) = number.as_f64().filter(|_| number.is_f64())
                && float.fract() == 0.0
                && float.abs() <= EXACT_INTEGER
            {
                // Exact: a whole number within ±2^53.
                *number = (float as i64).into();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers_as_integers),
        Value::Null | Value::Bool(_) | Value::String(_) => {}
    }
}

/// `message` behind a frame prefix with `flags`; `None` when it is longer
/// than a frame can say (4 GiB).
pub fn frame(flags: u8, message: &[u8]) -> Option<Bytes> {
    let len = u32::try_from(message.len()).ok()?;
    let mut out = BytesMut::with_capacity(FRAME_HEADER.checked_add(message.len())?);
    out.put_u8(flags);
    out.put_u32(len);
    out.put_slice(message);
    Some(out.freeze())
}

/// The first complete frame at the front of `buffer`, removed from it:
/// `Ok(None)` while more bytes are needed, `Err` when the declared length
/// exceeds `max` (the frame is never buffered).
pub fn take_frame(buffer: &mut BytesMut, max: usize) -> Result<Option<(u8, Bytes)>, usize> {
    let Some(header) = buffer.get(..FRAME_HEADER) else {
        return Ok(None);
    };
    let flags = header[0];
    let declared = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let len = usize::try_from(declared).unwrap_or(usize::MAX);
    if len > max {
        return Err(len);
    }
    if buffer.len().saturating_sub(FRAME_HEADER) < len {
        return Ok(None);
    }
    buffer.advance(FRAME_HEADER);
    Ok(Some((flags, buffer.split_to(len).freeze())))
}

/// The one frame `bytes` holds, without copying: `None` unless `bytes`
/// is exactly one whole frame.
pub fn single_frame(bytes: &Bytes) -> Option<(u8, Bytes)> {
    let header = bytes.get(..FRAME_HEADER)?;
    let declared = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let len = usize::try_from(declared).ok()?;
    (bytes.len().checked_sub(FRAME_HEADER)? == len)
        .then(|| (header[0], bytes.slice(FRAME_HEADER..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_knows_every_method_and_the_detail_types() {
        let catalog = Catalog::get().unwrap();
        let invoke = catalog
            .method("/flowgate.v1.WorkflowGateway/Invoke")
            .unwrap();
        assert!(!invoke.server_streaming);
        assert_eq!(invoke.input.full_name(), "flowgate.v1.InvokeRequest");
        let stream = catalog
            .method("/flowgate.v1.WorkflowGateway/StreamStatus")
            .unwrap();
        assert!(stream.server_streaming);
        assert!(
            catalog
                .method("/flowgate.v1.WorkflowGateway/Nope")
                .is_none()
        );
        assert!(catalog.message("google.rpc.ErrorInfo").is_some());
        assert!(catalog.message("google.rpc.BadRequest").is_some());
        assert!(catalog.method("/grpc.health.v1.Health/Check").is_some());
    }

    #[test]
    fn json_round_trips_through_protobuf() {
        let catalog = Catalog::get().unwrap();
        let invoke = catalog
            .method("/flowgate.v1.WorkflowGateway/Invoke")
            .unwrap();
        let json = br#"{"target":{"provider":"kn","slug":"summarize"},"inputs":{"text":"hi","n":[1,2.5,1e300]},"idempotencyKey":"k1"}"#;
        let framed = json_to_frame(&invoke.input, json).unwrap();
        let (flags, proto) = single_frame(&framed).unwrap();
        assert_eq!(flags, 0);
        let back: serde_json::Value =
            serde_json::from_slice(&proto_to_json(&invoke.input, &proto).unwrap()).unwrap();
        assert_eq!(
            back,
            serde_json::from_slice::<serde_json::Value>(json).unwrap()
        );
    }

    #[test]
    fn bad_json_is_an_error_not_a_panic() {
        let catalog = Catalog::get().unwrap();
        let invoke = catalog
            .method("/flowgate.v1.WorkflowGateway/Invoke")
            .unwrap();
        for bad in [
            &b"{"[..],
            b"[]",
            b"{\"target\": 5}",
            b"{\"noSuchField\": 1}",
            b"{} trailing",
            b"\xff\xfe",
        ] {
            assert!(json_to_frame(&invoke.input, bad).is_err(), "{bad:?}");
        }
        let deep = format!(
            "{{\"inputs\":{}{}}}",
            "{\"a\":".repeat(200),
            "1".to_owned() + &"}".repeat(200)
        );
        assert!(json_to_frame(&invoke.input, deep.as_bytes()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let catalog = Catalog::get().unwrap();
            let invoke = catalog.method("/flowgate.v1.WorkflowGateway/Invoke").unwrap();
            let _ = json_to_frame(&invoke.input, &bytes);
            let _ = proto_to_json(&invoke.output, &bytes);
            let _ = single_frame(&Bytes::from(bytes.clone()));
            let mut buffer = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = take_frame(&mut buffer, 16) {}
        }
    }

    #[test]
    fn frames_are_taken_whole_and_bounded() {
        let mut buffer = BytesMut::new();
        let framed = frame(0, b"hello").unwrap();
        buffer.extend_from_slice(&framed[..3]);
        assert_eq!(take_frame(&mut buffer, 10), Ok(None));
        buffer.extend_from_slice(&framed[3..]);
        assert_eq!(
            take_frame(&mut buffer, 10),
            Ok(Some((0, Bytes::from_static(b"hello"))))
        );
        assert!(buffer.is_empty());
        buffer.extend_from_slice(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(take_frame(&mut buffer, 10), Err(0xffff_ffff));
        assert_eq!(
            single_frame(&framed),
            Some((0, Bytes::from_static(b"hello")))
        );
        assert_eq!(single_frame(&framed.slice(..6)), None);
        assert_eq!(single_frame(&Bytes::from_static(b"\0\0")), None);
        let mut two = BytesMut::from(&framed[..]);
        two.extend_from_slice(&framed);
        assert_eq!(single_frame(&two.freeze()), None);
    }
}
