//! The signature schemes and the entry point that checks a delivery's
//! signature without touching its body's meaning.

use std::fmt;
use std::time::{Duration, SystemTime};

use flowgate_core::{ProviderKind, SecretString};
use http::HeaderMap;

use crate::failure::WebhookFailure;
use crate::signature::SignatureMatch;
use crate::{fetchhive, knouds, standard};

/// How a delivery is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WebhookScheme {
    /// Fetch Hive run callbacks: `X-Fetch-Hive-Signature`, HMAC-SHA256 of
    /// the raw body with the run's webhook secret; no timestamp.
    FetchHive,
    /// Knouds execution webhooks: `X-Knouds-Signature: t=…,v1=…`.
    Knouds,
    /// [Standard Webhooks](https://www.standardwebhooks.com/): flowgate's own
    /// outgoing scheme (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    Standard,
}

impl WebhookScheme {
    /// Every scheme, in a stable order.
    pub const ALL: [WebhookScheme; 3] = [Self::FetchHive, Self::Knouds, Self::Standard];

    /// A stable lowercase name: `fetchhive`, `knouds`, `standard`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FetchHive => "fetchhive",
            Self::Knouds => "knouds",
            Self::Standard => "standard",
        }
    }

    /// Parses [`as_str`](Self::as_str) names; `standard_webhooks` and
    /// `standard-webhooks` are accepted too.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "standard_webhooks" | "standard-webhooks" => Some(Self::Standard),
            _ => Self::ALL.into_iter().find(|scheme| scheme.as_str() == name),
        }
    }

    /// The scheme a provider signs its callbacks with; `None` for AI Tutor,
    /// which has no callbacks, and for dialects registered in code.
    pub fn for_provider(kind: ProviderKind) -> Option<Self> {
        match kind {
            ProviderKind::FetchHive => Some(Self::FetchHive),
            ProviderKind::Knouds => Some(Self::Knouds),
            ProviderKind::AiTutor | ProviderKind::Other { .. } => None,
        }
    }

    /// The (lowercase) header that carries the signature.
    pub fn signature_header(self) -> &'static str {
        match self {
            Self::FetchHive => fetchhive::SIGNATURE_HEADER,
            Self::Knouds => knouds::SIGNATURE_HEADER,
            Self::Standard => standard::SIGNATURE_HEADER,
        }
    }
}

impl fmt::Display for WebhookScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks the signature of one delivery, and its timestamp against
/// `tolerance` where the scheme signs one. Pure: no replay check, no body
/// parsing (see [`Verifier`](crate::Verifier) for both).
///
/// `secrets` are the currently active secrets (rotation): the delivery is
/// valid if any of them matches any signature sent. For
/// [`WebhookScheme::Standard`] each is a `whsec_<base64>` secret; for the
/// other schemes the raw secret text is the HMAC key.
///
/// The signature is checked before the timestamp, so
/// [`Expired`](crate::FailureReason::Expired) is only ever reported for a
/// delivery that was genuinely signed with a configured secret.
pub fn verify_signature(
    scheme: WebhookScheme,
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[SecretString],
    now: SystemTime,
    tolerance: Duration,
) -> Result<SignatureMatch, WebhookFailure> {
    match scheme {
        WebhookScheme::FetchHive => fetchhive::verify(headers, body, secrets),
        WebhookScheme::Knouds => knouds::verify(headers, body, secrets, now, tolerance),
        WebhookScheme::Standard => standard::verify(headers, body, secrets, now, tolerance),
    }
}
