//! The fault matrix: a badly behaved vendor (the emulator's fault
//! injection and small misbehaving servers on 127.0.0.1), hostile callers
//! and shutdown. Every case asserts the exact gRPC code and ErrorInfo reason
//! and that the gateway still serves afterwards.

#[path = "../common/mod.rs"]
mod common;

mod edge;
mod panics;
mod runs;
mod secrets;
mod upstream;
