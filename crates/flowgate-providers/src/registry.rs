//! The dialects the gateway knows, one registration line each.
//!
//! [`BUILTIN`] lists the shipped dialects; [`Dialects::with`] adds one
//! more in code (an embedding binary, or a test). A registration carries
//! what the rest of the gateway asks of a dialect without holding a
//! provider: its defaults, its workflow-key syntax for the configuration,
//! and how to build a provider of it (wrapped in the [`Guarded`]
//! protections).

use std::{sync::Arc, time::Duration};

use flowgate_core::{AsyncMode, Provider, ProviderKind};

use crate::{
    Guarded, HttpClient, ProviderSettings,
    aitutor::AiTutorDialect,
    dialect::{Dialect, HttpProvider},
    fetchhive::FetchHiveDialect,
    knouds::KnoudsDialect,
};

/// The shipped dialects.
pub static BUILTIN: [Registration; 3] = [
    Registration::of::<FetchHiveDialect>(),
    Registration::of::<AiTutorDialect>(),
    Registration::of::<KnoudsDialect>(),
];

/// One registered dialect.
#[derive(Clone, Copy, Debug)]
pub struct Registration {
    /// Its identity.
    pub kind: ProviderKind,
    /// Its documented public base URL.
    pub default_base_url: &'static str,
    /// Its default request timeout.
    pub default_timeout: Duration,
    /// How its async invocations run (see [`Dialect::ASYNC_MODE`]).
    pub async_mode: AsyncMode,
    /// See [`Dialect::CONFIGURED_WEBHOOK_SECRET`].
    pub configured_webhook_secret: bool,
    /// See [`Dialect::HAS_VARIANTS`].
    pub has_variants: bool,
    /// Its workflow-key syntax (see [`Dialect::check_workflow_key`]).
    pub check_workflow_key: fn(&str) -> Result<(), String>,
    build: fn(ProviderSettings, HttpClient) -> Arc<dyn Provider>,
}

impl Registration {
    /// The registration of dialect `D`.
    pub const fn of<D: Dialect>() -> Self {
        Self {
            kind: D::KIND,
            default_base_url: D::DEFAULT_BASE_URL,
            default_timeout: D::DEFAULT_TIMEOUT,
            async_mode: D::ASYNC_MODE,
            configured_webhook_secret: D::CONFIGURED_WEBHOOK_SECRET,
            has_variants: D::HAS_VARIANTS,
            check_workflow_key: D::check_workflow_key,
            build: build::<D>,
        }
    }
}

fn build<D: Dialect>(settings: ProviderSettings, http: HttpClient) -> Arc<dyn Provider> {
    Arc::new(HttpProvider::<D>::new(settings, http))
}

/// No dialect of this kind is registered.
#[derive(Debug, thiserror::Error)]
#[error("no {0} dialect is registered")]
pub struct UnknownDialect(pub ProviderKind);

/// A set of dialects: the built-in ones plus any registered in code.
#[derive(Clone, Debug)]
pub struct Dialects(Vec<Registration>);

impl Default for Dialects {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Dialects {
    /// The shipped dialects ([`BUILTIN`]).
    pub fn builtin() -> Self {
        Self(BUILTIN.to_vec())
    }

    /// Adds (or replaces) the dialect `registration` names.
    pub fn with(mut self, registration: Registration) -> Self {
        self.0.retain(|known| known.kind != registration.kind);
        self.0.push(registration);
        self
    }

    /// The registration of `kind`.
    pub fn get(&self, kind: ProviderKind) -> Option<&Registration> {
        self.0.iter().find(|known| known.kind == kind)
    }

    /// Builds the provider `settings` describe, sharing `http`, with the
    /// configured protections ([`Guarded`]) around it.
    pub fn build(
        &self,
        settings: ProviderSettings,
        http: &HttpClient,
    ) -> Result<Arc<dyn Provider>, UnknownDialect> {
        let registration = self
            .get(settings.kind)
            .ok_or(UnknownDialect(settings.kind))?;
        let resilience = settings.resilience.clone();
        let dialect = (registration.build)(settings, http.clone());
        Ok(Arc::new(Guarded::new(dialect, resilience)))
    }

    /// [`Dialects::build`], with the window, rate and run-slot limits kept
    /// in `store`, shared by every replica that uses it (see
    /// [`Guarded::with_shared_limits`]).
    pub fn build_sharing_limits(
        &self,
        settings: ProviderSettings,
        http: &HttpClient,
        store: Arc<dyn flowgate_core::LimitStore>,
        on_unavailable: flowgate_core::LimitFailurePolicy,
    ) -> Result<Arc<dyn Provider>, UnknownDialect> {
        let registration = self
            .get(settings.kind)
            .ok_or(UnknownDialect(settings.kind))?;
        let resilience = settings.resilience.clone();
        let dialect = (registration.build)(settings, http.clone());
        Ok(Arc::new(
            Guarded::new(dialect, resilience).with_shared_limits(store, on_unavailable),
        ))
    }
}

/// The built-in registration of `kind`: what the configuration may ask of
/// a dialect it names.
pub fn builtin(kind: ProviderKind) -> Option<&'static Registration> {
    BUILTIN.iter().find(|known| known.kind == kind)
}

/// Checks a configured workflow key against the syntax of a built-in
/// dialect (see [`Dialect::check_workflow_key`]).
pub fn check_workflow_key(kind: ProviderKind, key: &str) -> Result<(), String> {
    match builtin(kind) {
        Some(registration) => (registration.check_workflow_key)(key),
        None => Err(UnknownDialect(kind).to_string()),
    }
}
