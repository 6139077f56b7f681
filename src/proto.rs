//! The generated `flowgate.v1` types and the descriptor set for reflection.

/// Generated from `proto/flowgate/v1/gateway.proto`.
#[rustfmt::skip]
#[allow(missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("flowgate.v1");
}

/// The encoded descriptor set served by gRPC reflection: `proto/` with its
/// imports, the `google.rpc` status and error details, and every
/// well-known type (`google.protobuf.*`).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/flowgate_descriptor.bin"));
