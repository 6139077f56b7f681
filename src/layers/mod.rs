//! The tower layers of the gRPC edge, each one concern, assembled in
//! [`crate::server::edge_stack`]:
//!
//! - [`cors`]: CORS for browser callers from `[server.cors]` (none by
//!   default);
//! - [`panic`]: a panic anywhere in a call becomes INTERNAL with reason
//!   `INTERNAL_PANIC`;
//! - [`auth`]: every call is resolved to a caller or refused with
//!   UNAUTHENTICATED / `CALLER_UNAUTHENTICATED` (health always open);
//! - [`shed`]: the concurrency limit with a bounded, deadline-aware queue
//!   that sheds load with RESOURCE_EXHAUSTED / `OVERLOADED`;
//! - [`malformed`]: a request tonic cannot decode becomes INVALID_ARGUMENT
//!   with reason `MALFORMED_REQUEST` instead of tonic's INTERNAL.
//!
//! Every answer a layer makes itself is a trailers-only gRPC response built
//! from a [`flowgate_core::GatewayError`] by [`crate::status::to_status`],
//! so it carries the same details as the service's own errors.

pub mod auth;
pub mod cors;
pub mod malformed;
pub mod panic;
pub mod shed;

use flowgate_core::GatewayError;
use http::Response;

/// A trailers-only gRPC response answering `error`.
fn error_response<B: Default>(error: &GatewayError) -> Response<B> {
    crate::status::to_status(error).into_http()
}
