//! Signed webhooks: provider callbacks the ingress receives (they update
//! runs) and VerifyWebhook (a caller checks a delivery it received).

use std::time::SystemTime;

use bytes::Bytes;
use flowgate_core::{
    AsyncMode, ErrorClass, FieldViolation, GatewayError, RunId, RunStatus, SecretString,
};
use flowgate_webhook::{FailureReason, WebhookEvent, WebhookFailure, WebhookScheme};
use http::HeaderMap;

use super::{RunTracker, log_store_failure};
use crate::{RunChange, RunRecord, StoreUnavailable};

/// A callback the store could not take: the provider should deliver again.
fn rejected(error: StoreUnavailable) -> CallbackRejection {
    log_store_failure(&error);
    CallbackRejection::StoreUnavailable
}

/// Why a provider callback was refused.
#[derive(Debug)]
pub enum CallbackRejection {
    /// No provider of that name, or it sends no callbacks.
    UnknownProvider,
    /// The delivery did not verify (or no secret can verify it).
    Unverified(FailureReason),
    /// The shared state store is unreachable: the delivery was not recorded
    /// and should be retried (the ingress answers 503).
    StoreUnavailable,
}

/// The outcome of VerifyWebhook.
#[derive(Debug)]
pub enum Verification {
    /// Signature valid; the normalized event and the run it belongs to.
    Valid {
        /// The event.
        event: Box<WebhookEvent>,
        /// The gateway run id, when the provider is known.
        run_id: Option<String>,
    },
    /// Signature invalid, and why.
    Invalid(FailureReason),
}

impl RunTracker {
    /// Ingests one provider callback received by the ingress listener.
    pub async fn ingest(
        &self,
        provider_name: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(), CallbackRejection> {
        let provider = self
            .gateway
            .provider(provider_name)
            .ok_or(CallbackRejection::UnknownProvider)?;
        let scheme = WebhookScheme::for_provider(provider.kind())
            .ok_or(CallbackRejection::UnknownProvider)?;
        let secrets = match provider.async_mode() {
            // A callback-mode dialect (Fetch Hive) signs with the run's own
            // secret: the body's run id (not yet trusted) only selects which
            // secret to try.
            AsyncMode::Callback => match WebhookEvent::claimed_run_id(scheme, body) {
                Some(upstream) => self
                    .store
                    .get(&RunId::new(provider_name, upstream))
                    .await
                    .map_err(rejected)?
                    .and_then(|record| record.webhook_secret)
                    .into_iter()
                    .collect(),
                None => Vec::new(),
            },
            _ => self
                .ingress
                .provider_secrets
                .get(provider_name)
                .cloned()
                .unwrap_or_default(),
        };
        let verified = self
            .ingress_verifier
            .verify_shared(scheme, headers, body, &secrets, SystemTime::now())
            .await
            .map_err(|failure: WebhookFailure| {
                tracing::warn!(
                    provider = provider_name,
                    reason = failure.reason().as_str(),
                    "callback rejected"
                );
                CallbackRejection::Unverified(failure.reason())
            })?;
        let event = verified.event;
        let (Some(upstream), Some(status)) = (event.upstream_run_id.clone(), event.status) else {
            // A test ping or an event without a run: acknowledged, nothing to do.
            return Ok(());
        };
        let run_id = RunId::new(provider_name, upstream);
        if self.store.get(&run_id).await.map_err(rejected)?.is_none() {
            let mut record = RunRecord::new(run_id.clone(), RunStatus::Running);
            record.provider_kind = Some(provider.kind());
            self.store.insert(record).await.map_err(rejected)?;
        }
        self.apply(
            &run_id,
            RunChange {
                status,
                output: event.output,
                // The vendor's text, as every decoded answer: redacted, bounded.
                error: event.error.map(|error| provider.safe_run_error(error)),
                usage: Default::default(),
            },
        )
        .await
        .map_err(rejected)
    }

    /// VerifyWebhook: checks a delivery the caller received.
    pub async fn verify(
        &self,
        scheme: Option<WebhookScheme>,
        provider: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
        key: VerifyKey,
    ) -> Result<Verification, GatewayError> {
        let provider = match provider {
            Some(name) => Some(self.gateway.provider(name).cloned().ok_or_else(|| {
                GatewayError::not_found(
                    flowgate_core::reason::Reason::UnknownProvider,
                    "flowgate.provider",
                    name,
                    format!("no provider named {name:?} is configured"),
                )
            })?),
            None => None,
        };
        let scheme = scheme
            .or_else(|| {
                provider
                    .as_ref()
                    .and_then(|p| WebhookScheme::for_provider(p.kind()))
            })
            .ok_or_else(|| {
                GatewayError::invalid_argument(vec![FieldViolation::new(
                    "scheme",
                    "required: a scheme, or a provider whose dialect signs webhooks",
                )])
            })?;
        let secrets = match key {
            VerifyKey::Secret(secret) => vec![secret],
            VerifyKey::RunId(text) => self.secrets_for_run(scheme, &text).await?,
            VerifyKey::Configured => match scheme {
                WebhookScheme::Standard => self
                    .forwarding
                    .as_ref()
                    .map(|forwarding| forwarding.secrets.verify())
                    .unwrap_or_default(),
                _ => provider
                    .as_ref()
                    .and_then(|p| self.ingress.provider_secrets.get(p.name()).cloned())
                    .unwrap_or_default(),
            },
        };
        if secrets.is_empty() {
            return Err(GatewayError::new(
                ErrorClass::FailedPrecondition,
                flowgate_core::reason::Reason::NoWebhookSecret,
                "no secret to verify with: pass one, or a run id whose secret the gateway holds",
            )
            .with_precondition(
                "SECRET",
                scheme.as_str(),
                "configure or pass the webhook secret",
            ));
        }
        match self
            .rpc_verifier
            .verify_shared(scheme, headers, body, &secrets, SystemTime::now())
            .await
        {
            Ok(verified) => {
                let event = verified.event;
                let run_id = event.run_id.clone().or_else(|| {
                    let provider = provider.as_ref()?;
                    let upstream = event.upstream_run_id.as_ref()?;
                    Some(
                        self.gateway
                            .run_ids()
                            .sign(&RunId::new(provider.name(), upstream.clone())),
                    )
                });
                Ok(Verification::Valid {
                    event: Box::new(event),
                    run_id,
                })
            }
            Err(failure) => Ok(Verification::Invalid(failure.reason())),
        }
    }

    async fn secrets_for_run(
        &self,
        scheme: WebhookScheme,
        run_id: &str,
    ) -> Result<Vec<SecretString>, GatewayError> {
        if scheme == WebhookScheme::Standard {
            return Ok(self
                .forwarding
                .as_ref()
                .map(|forwarding| forwarding.secrets.verify())
                .unwrap_or_default());
        }
        let unknown = || {
            GatewayError::not_found(
                flowgate_core::reason::Reason::UnknownRun,
                "flowgate.run",
                run_id,
                "no run with this id is known to the gateway",
            )
        };
        let id = self.gateway.run_ids().verify(run_id).ok_or_else(unknown)?;
        let record = self
            .store
            .get(&id)
            .await
            .map_err(super::store_unavailable)?
            .ok_or_else(unknown)?;
        Ok(match record.webhook_secret {
            Some(secret) => vec![secret],
            None => self
                .ingress
                .provider_secrets
                .get(&id.provider)
                .cloned()
                .unwrap_or_default(),
        })
    }
}

/// The secret VerifyWebhook checks against.
#[derive(Debug)]
pub enum VerifyKey {
    /// Given by the caller.
    Secret(SecretString),
    /// The secret of a run the gateway knows.
    RunId(String),
    /// The gateway's configured secrets for the scheme.
    Configured,
}
