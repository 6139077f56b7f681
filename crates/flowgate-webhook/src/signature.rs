//! What every scheme's check shares: the match it reports and how a
//! signature header is read. Below the scheme modules (and `scheme`, which
//! dispatches to them), so imports flow one way.

use std::time::SystemTime;

use http::HeaderMap;

use crate::failure::WebhookFailure;

/// What a valid signature established about a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureMatch {
    /// Index into the `secrets` slice of the secret that matched (rotation:
    /// a match on an old secret tells the operator it is still in use).
    pub matched_secret: usize,
    /// The signed timestamp (Knouds `t`, Standard `webhook-timestamp`).
    pub signed_at: Option<SystemTime>,
    /// The Standard Webhooks `webhook-id`.
    pub message_id: Option<String>,
}

/// The text of header `name`, or `MissingSignature` / `Malformed`.
pub(crate) fn required_header<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> Result<&'a str, WebhookFailure> {
    let value = headers
        .get(name)
        .ok_or_else(|| WebhookFailure::missing(name))?;
    let text = value
        .to_str()
        .map_err(|_| WebhookFailure::malformed(format!("header `{name}` is not visible ASCII")))?
        .trim();
    if text.is_empty() {
        return Err(WebhookFailure::missing(name));
    }
    Ok(text)
}
