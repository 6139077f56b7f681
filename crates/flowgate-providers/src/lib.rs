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
//! the error-body helpers ([`errors`]). A fourth dialect is one new module plus a line in
//! [`build_provider`].

pub mod aitutor;
pub mod errors;
pub mod fetchhive;
mod guard;
mod http;
pub mod knouds;
mod limits;
pub mod numbers;
pub mod ratelimit;
mod settings;

use std::sync::Arc;

use flowgate_core::{Provider, ProviderKind};

pub use flowgate_core::depth;
pub use guard::Guarded;
pub use http::{HttpClient, HttpClientError};
pub use limits::MemoryLimitStore;
pub use settings::{CircuitPolicy, LocalLimits, ProviderSettings, Resilience, RetryPolicy};

/// Builds the provider `settings` describe, sharing `http`, with the
/// configured protections ([`Guarded`]) around it.
pub fn build_provider(settings: ProviderSettings, http: &HttpClient) -> Arc<dyn Provider> {
    let resilience = settings.resilience.clone();
    Arc::new(Guarded::new(dialect(settings, http), resilience))
}

/// The bare dialect `settings` describe.
fn dialect(settings: ProviderSettings, http: &HttpClient) -> Arc<dyn Provider> {
    match settings.kind {
        ProviderKind::FetchHive => Arc::new(fetchhive::FetchHive::new(settings, http.clone())),
        ProviderKind::AiTutor => Arc::new(aitutor::AiTutor::new(settings, http.clone())),
        ProviderKind::Knouds => Arc::new(knouds::Knouds::new(settings, http.clone())),
    }
}

/// [`build_provider`], with the window, rate and run-slot limits kept in
/// `store`, shared by every replica that uses it (see
/// [`Guarded::with_shared_limits`]).
pub fn build_provider_sharing_limits(
    settings: ProviderSettings,
    http: &HttpClient,
    store: Arc<dyn flowgate_core::LimitStore>,
    on_unavailable: flowgate_core::LimitFailurePolicy,
) -> Arc<dyn Provider> {
    let resilience = settings.resilience.clone();
    Arc::new(
        Guarded::new(dialect(settings, http), resilience).with_shared_limits(store, on_unavailable),
    )
}
