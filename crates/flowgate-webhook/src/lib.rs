//! flowgate's webhook engine, free of any wire format.
//!
//! Inbound, a [`Verifier`] checks a provider's signed callback (or any
//! [Standard Webhooks](https://www.standardwebhooks.com/) delivery) and turns
//! it into one [`WebhookEvent`] shape, or rejects it with a typed
//! [`FailureReason`]. Outbound, a [`Forwarder`] re-signs run events with the
//! Standard Webhooks scheme and delivers them at least once.
//!
//! - [`WebhookScheme`]: Fetch Hive, Knouds, Standard Webhooks.
//! - [`verify_signature`]: the pure check (constant-time HMAC comparison,
//!   timestamp tolerance, several active secrets for rotation).
//! - [`Verifier`]: signature, then body, then a moka replay guard keyed on
//!   the event id: [`VerifiedDelivery`] or [`WebhookFailure`]; with a
//!   shared [`ReplayStore`](flowgate_core::ReplayStore), replays are caught
//!   across replicas ([`Verifier::verify_shared`]).
//! - [`MemoryReplayStore`]: the in-memory replay guard.
//! - [`sign_knouds`], [`sign_fetchhive`], [`sign_standard`],
//!   [`standard_headers`]: the sending side of each scheme (emulators, tests,
//!   the forwarder).
//! - [`StandardSecret`]: a `whsec_…` key, parsed or generated.
//! - [`ForwardedEvent`]: the body flowgate forwards.
//! - [`Forwarder`]: bounded queue, retries with jittered backoff, dedup.
//!
//! Secrets are [`SecretString`](flowgate_core::SecretString)s and never
//! appear in a [`WebhookFailure`] message, nor do signatures or bodies.
//!
//! ```
//! use std::time::SystemTime;
//! use flowgate_core::{RunStatus, SecretString};
//! use flowgate_webhook::{Verifier, WebhookScheme, sign_knouds};
//!
//! let secret = SecretString::new("knouds-webhook-secret");
//! let body = br#"{"event":"execution.completed","executionId":"ex-1","status":"completed","result":{"ok":true}}"#;
//! let now = SystemTime::now();
//! let mut headers = http::HeaderMap::new();
//! headers.insert("x-knouds-signature", sign_knouds(&secret, now, body).parse()?);
//!
//! let verifier = Verifier::default();
//! let delivery = verifier.verify(WebhookScheme::Knouds, &headers, body, &[secret.clone()], now)?;
//! assert_eq!(delivery.event.status, Some(RunStatus::Completed));
//!
//! // The same delivery again is a replay.
//! let again = verifier.verify(WebhookScheme::Knouds, &headers, body, &[secret], now);
//! assert_eq!(again.unwrap_err().reason(), flowgate_webhook::FailureReason::Replayed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod clock;
mod destination;
mod event;
mod failure;
mod fetchhive;
mod forwarded;
mod forwarder;
mod knouds;
mod mac;
mod replay;
mod scheme;
mod signature;
mod standard;
mod verifier;

pub use destination::{DestinationRefused, callback_client};
pub use event::WebhookEvent;
pub use failure::{FailureReason, WebhookFailure};
pub use fetchhive::sign_fetchhive;
pub use forwarded::ForwardedEvent;
pub use forwarder::{
    Delivery, DeliveryOutcome, DeliveryResult, DrainReport, EnqueueError, Enqueued, Forwarder,
    ForwarderConfig, ForwarderStats,
};
pub use knouds::sign_knouds;
pub use replay::MemoryReplayStore;
pub use scheme::{WebhookScheme, verify_signature};
pub use signature::SignatureMatch;
pub use standard::{
    InvalidSecret, StandardSecret, WEBHOOK_ID_HEADER, WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_TIMESTAMP_HEADER, sign_standard, standard_headers,
};
pub use verifier::{VerifiedDelivery, Verifier, VerifierConfig};
