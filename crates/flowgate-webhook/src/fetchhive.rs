//! Fetch Hive: `X-Fetch-Hive-Signature`, HMAC-SHA256 of the raw body keyed
//! with the run's webhook secret.
//!
//! What is signed and the encoding are not published (PROVIDERS.md), so the
//! verifier accepts the encodings an HMAC header is commonly sent in:
//! lowercase or uppercase hex, `sha256=`-prefixed hex, and base64 (standard
//! or URL-safe, padded or not). No timestamp is signed, so there is no
//! expiry check; the replay guard is the only defence against re-sends.

use flowgate_core::SecretString;
use http::HeaderMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

use crate::failure::WebhookFailure;
use crate::mac::{self, TAG_LEN};
use crate::signature::{SignatureMatch, required_header};

/// The signature header (lowercase).
pub(crate) const SIGNATURE_HEADER: &str = "x-fetch-hive-signature";

/// Decodes a signature header value into the 32-byte tag it carries.
fn decode(value: &str) -> Option<[u8; TAG_LEN]> {
    let value = value.trim();
    let value = match value.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("sha256=") => &value[7..],
        _ => value,
    };
    let mut tag = [0u8; TAG_LEN];
    if value.len() == 2 * TAG_LEN && hex::decode_to_slice(value, &mut tag).is_ok() {
        return Some(tag);
    }
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| {
            engine
                .decode(value)
                .ok()
                .and_then(|bytes| <[u8; TAG_LEN]>::try_from(bytes.as_slice()).ok())
        })
}

pub(crate) fn verify(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[SecretString],
) -> Result<SignatureMatch, WebhookFailure> {
    let value = required_header(headers, SIGNATURE_HEADER)?;
    let tag = decode(value).ok_or_else(|| {
        WebhookFailure::malformed(format!(
            "`{SIGNATURE_HEADER}` is not a hex or base64 HMAC-SHA256"
        ))
    })?;
    let matched_secret = secrets
        .iter()
        .position(|secret| mac::verify(secret.expose().as_bytes(), &[body], &tag))
        .ok_or_else(WebhookFailure::mismatch)?;
    Ok(SignatureMatch {
        matched_secret,
        signed_at: None,
        message_id: None,
    })
}

/// The `X-Fetch-Hive-Signature` value for `body`: lowercase hex, as the
/// emulator sends it.
pub fn sign_fetchhive(secret: &SecretString, body: &[u8]) -> String {
    hex::encode(mac::sign(secret.expose().as_bytes(), &[body]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_accepted_encoding() {
        let tag: [u8; TAG_LEN] = std::array::from_fn(|i| (i * 7 + 250) as u8);
        let lower = hex::encode(tag);
        for text in [
            lower.clone(),
            lower.to_uppercase(),
            format!("sha256={lower}"),
            format!("SHA256={}", lower.to_uppercase()),
            STANDARD.encode(tag),
            STANDARD_NO_PAD.encode(tag),
            URL_SAFE.encode(tag),
            URL_SAFE_NO_PAD.encode(tag),
            format!("sha256={}", STANDARD.encode(tag)),
        ] {
            assert_eq!(decode(&text), Some(tag), "{text}");
        }
    }

    #[test]
    fn rejects_other_lengths_and_alphabets() {
        for text in ["", "sha256=", "abcd", &"g".repeat(64), &"a".repeat(63), "é"] {
            assert_eq!(decode(text), None, "{text}");
        }
    }
}
