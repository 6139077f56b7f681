//! Compiles `proto/` into Rust with protox (a pure-Rust protobuf compiler)
//! feeding tonic-prost-build, so no system `protoc` is needed. The encoded
//! descriptor set is kept for gRPC server reflection, together with the
//! `google.rpc` error details (vendored in third_party/googleapis) and the
//! well-known types, so reflection clients can decode every detail.

use std::{env, fs, path::PathBuf};

use protox::prost::Message as _;

const PROTOS: &[&str] = &["flowgate/v1/gateway.proto"];

/// Served by reflection beside `PROTOS` (not compiled to Rust: tonic-types
/// and prost-types have them).
const REFLECTED: &[&str] = &[
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
    "google/protobuf/any.proto",
    "google/protobuf/api.proto",
    "google/protobuf/duration.proto",
    "google/protobuf/empty.proto",
    "google/protobuf/field_mask.proto",
    "google/protobuf/source_context.proto",
    "google/protobuf/struct.proto",
    "google/protobuf/timestamp.proto",
    "google/protobuf/type.proto",
    "google/protobuf/wrappers.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=third_party/googleapis");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let reflected = protox::compile(
        PROTOS.iter().chain(REFLECTED),
        ["proto", "third_party/googleapis"],
    )?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("flowgate_descriptor.bin"),
        reflected.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
