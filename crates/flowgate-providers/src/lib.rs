//! The provider dialects: how flowgate speaks to each workflow vendor.
//!
//! One module per dialect, each with its own request builder, success
//! decoder and error decoder, all behind [`flowgate_core::Provider`]:
//!
//! - [`fetchhive`]: `POST {base}/workflow/invoke`, deployment + variant, Bearer key.
//! - [`aitutor`]: `POST {base}/api/v1/run/{workflow_id}`, flat variables, Bearer key.
//! - [`knouds`]: `POST {base}/api/workflows/{slug}/run`, `{"inputs"}`, `x-api-key`.
//!
//! They share one [`HttpClient`] (one connection pool, built once), the
//! rate-limit header parser ([`ratelimit`]), the bounded and lenient reading
//! of every vendor number ([`numbers`]), the output depth cap ([`depth`]) and
//! the error-body helpers ([`errors`]).
//!
//! A dialect is a set of hooks ([`Dialect`]: build the request, decode
//! success, error, status, schema and callback bodies, async mode,
//! workflow-key syntax) around one shared HTTP path ([`HttpProvider`]).
//! A dialect built in code is one file plus one [`Dialects::with`] line
//! (its kind is a `ProviderKind::Other`; see `tests/fourth_dialect.rs`). A
//! shipped dialect is one module plus one line in [`registry::BUILTIN`],
//! and, so configuration files can name it, a `ProviderKind` variant and
//! a config `kind` name.

pub mod aitutor;
mod api_key;
pub mod dialect;
pub mod errors;
pub mod fetchhive;
mod guard;
mod http;
pub mod knouds;
mod limits;
pub mod ratelimit;
mod redaction;
pub mod registry;
mod settings;

use std::sync::Arc;

use flowgate_core::Provider;

pub use api_key::ApiKey;
pub use dialect::{Dialect, HttpProvider};
pub use flowgate_core::{depth, numbers};
pub use guard::Guarded;
pub use http::{HttpClient, HttpClientError, ProxyConfig, UpstreamResponse};
pub use limits::MemoryLimitStore;
pub use registry::{Dialects, Registration, UnknownDialect, check_workflow_key};
pub use settings::{CircuitPolicy, LocalLimits, ProviderSettings, Resilience, RetryPolicy};

/// Builds the provider `settings` describe (a built-in dialect), sharing
/// `http`, with the configured protections ([`Guarded`]) around it.
pub fn build_provider(
    settings: ProviderSettings,
    http: &HttpClient,
) -> Result<Arc<dyn Provider>, UnknownDialect> {
    Dialects::builtin().build(settings, http)
}
