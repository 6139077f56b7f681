//! flowgate: a gRPC gateway in front of hosted AI-workflow APIs.
//!
//! This crate is the edge: configuration, the gRPC service and its
//! protobuf conversions, the one error → status mapping, server wiring, and
//! the CLI's subcommands (serve, check-config, and with the default
//! `emulator` feature: emulator, demo). The engine
//! lives in `flowgate-core` (domain, errors, routing) and
//! `flowgate-providers` (the dialects); neither sees protobuf or tonic.
//! Telemetry (subscriber, OTLP, Prometheus, the server span layer) is in
//! `flowgate-telemetry`; [`admin`] serves its `/metrics` page.

pub mod admin;
pub mod auth;
pub mod config;
pub mod connect;
pub mod convert;
#[cfg(feature = "emulator")]
pub mod demo;
pub mod grpc_timeout;
pub mod health;
pub mod ingress;
pub mod layers;
pub mod logging;
pub mod proto;
pub mod recorded;
pub mod reload;
pub mod server;
pub mod service;
pub mod status;
pub mod tls;

pub use proto::pb;
