//! [Standard Webhooks](https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md),
//! flowgate's own outgoing scheme.
//!
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<ts>.<body>")>`
//! (a space-separated list, so a sender can sign with several keys while
//! rotating), keyed with the bytes of a `whsec_<base64>` secret.
//!
//! Hand-written rather than delegated to the `standardwebhooks` crate: that
//! crate reads the wall clock itself (no injectable `now`, no configurable
//! tolerance), reports untyped errors, and would add a second `base64` major
//! version to the build. `tests/standard_crosscheck.rs` proves both
//! implementations (and the official Python one) agree byte for byte.

use std::fmt;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use flowgate_core::SecretString;
use http::header::InvalidHeaderValue;
use http::{HeaderMap, HeaderValue};
use rand::Rng;

use crate::clock::{from_unix_secs, outside_tolerance, parse_unix_digits, unix_secs};
use crate::failure::{FailureReason, WebhookFailure};
use crate::mac::{self, TAG_LEN};
use crate::signature::{SignatureMatch, required_header};

/// `webhook-id`: the message id, stable across retries.
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
/// `webhook-timestamp`: unix seconds of this attempt.
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// `webhook-signature`: space-separated `v1,<base64>` signatures.
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";

pub(crate) const SIGNATURE_HEADER: &str = WEBHOOK_SIGNATURE_HEADER;
const SECRET_PREFIX: &str = "whsec_";
/// Bytes in a [`StandardSecret::generate`]d key.
const GENERATED_KEY_LEN: usize = 32;

/// A Standard Webhooks signing key. `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct StandardSecret {
    key: Vec<u8>,
}

/// The text is not a `whsec_<base64>` secret (or the key is empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a Standard Webhooks secret: expected `whsec_` followed by a non-empty base64 key")]
pub struct InvalidSecret;

impl StandardSecret {
    /// Parses `whsec_<base64 key>`. Like the official libraries, the prefix
    /// is optional and the base64 may be unpadded.
    pub fn parse(text: &str) -> Result<Self, InvalidSecret> {
        let encoded = text.trim();
        let encoded = encoded.strip_prefix(SECRET_PREFIX).unwrap_or(encoded);
        let key = STANDARD
            .decode(encoded)
            .or_else(|_| STANDARD_NO_PAD.decode(encoded))
            .map_err(|_| InvalidSecret)?;
        Self::from_key(key)
    }

    /// Wraps raw key bytes.
    pub fn from_key(key: impl Into<Vec<u8>>) -> Result<Self, InvalidSecret> {
        let key = key.into();
        if key.is_empty() {
            return Err(InvalidSecret);
        }
        Ok(Self { key })
    }

    /// A fresh random 32-byte key.
    pub fn generate() -> Self {
        let mut key = [0u8; GENERATED_KEY_LEN];
        rand::rng().fill(&mut key);
        Self { key: key.to_vec() }
    }

    /// The `whsec_<base64>` form, to hand to the receiver.
    pub fn to_secret_string(&self) -> SecretString {
        SecretString::new(format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.key)))
    }

    fn tag(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> [u8; TAG_LEN] {
        let ts = timestamp.to_string();
        mac::sign(
            &self.key,
            &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body],
        )
    }
}

impl fmt::Debug for StandardSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StandardSecret([redacted])")
    }
}

/// The `webhook-signature` value (`v1,<base64>`) for one attempt.
pub fn sign_standard(
    secret: &StandardSecret,
    msg_id: &str,
    timestamp: SystemTime,
    body: &[u8],
) -> String {
    let tag = secret.tag(msg_id, unix_secs(timestamp), body);
    format!("v1,{}", STANDARD.encode(tag))
}

/// The three Standard Webhooks headers for one attempt. Fails only when
/// `msg_id` cannot be a header value.
pub fn standard_headers(
    secret: &StandardSecret,
    msg_id: &str,
    timestamp: SystemTime,
    body: &[u8],
) -> Result<HeaderMap, InvalidHeaderValue> {
    let mut headers = HeaderMap::with_capacity(3);
    headers.insert(WEBHOOK_ID_HEADER, HeaderValue::from_str(msg_id)?);
    headers.insert(
        WEBHOOK_TIMESTAMP_HEADER,
        HeaderValue::from(unix_secs(timestamp)),
    );
    headers.insert(
        WEBHOOK_SIGNATURE_HEADER,
        HeaderValue::from_str(&sign_standard(secret, msg_id, timestamp, body))?,
    );
    Ok(headers)
}

/// The `v1` signatures of a `webhook-signature` list; other versions (such
/// as asymmetric `v1a`) are skipped.
fn v1_signatures(list: &str) -> Vec<[u8; TAG_LEN]> {
    list.split_ascii_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, encoded)| {
            STANDARD
                .decode(encoded)
                .or_else(|_| STANDARD_NO_PAD.decode(encoded))
                .ok()
                .and_then(|bytes| <[u8; TAG_LEN]>::try_from(bytes.as_slice()).ok())
        })
        .collect()
}

pub(crate) fn verify(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[SecretString],
    now: SystemTime,
    tolerance: Duration,
) -> Result<SignatureMatch, WebhookFailure> {
    let list = required_header(headers, WEBHOOK_SIGNATURE_HEADER)?;
    let msg_id = required_header(headers, WEBHOOK_ID_HEADER)
        .map_err(|e| WebhookFailure::malformed(e.message().to_owned()))?;
    let ts_text = required_header(headers, WEBHOOK_TIMESTAMP_HEADER)
        .map_err(|e| WebhookFailure::malformed(e.message().to_owned()))?;
    let timestamp = parse_unix_digits(ts_text).ok_or_else(|| {
        WebhookFailure::malformed(format!("`{WEBHOOK_TIMESTAMP_HEADER}` is not unix seconds"))
    })?;
    let signatures = v1_signatures(list);
    if signatures.is_empty() {
        return Err(WebhookFailure::malformed(format!(
            "`{WEBHOOK_SIGNATURE_HEADER}` has no `v1,<base64 HMAC-SHA256>` entry"
        )));
    }
    let ts = timestamp.to_string();
    let parts: [&[u8]; 5] = [msg_id.as_bytes(), b".", ts.as_bytes(), b".", body];
    let mut unparsable = None;
    let mut matched = None;
    for (index, secret) in secrets.iter().enumerate() {
        let Ok(key) = StandardSecret::parse(secret.expose()) else {
            unparsable.get_or_insert(index);
            continue;
        };
        if signatures
            .iter()
            .any(|tag| mac::verify(&key.key, &parts, tag))
        {
            matched = Some(index);
            break;
        }
    }
    let Some(matched_secret) = matched else {
        return Err(match unparsable {
            Some(index) => WebhookFailure::malformed(format!(
                "configured secret #{index} is not a `whsec_<base64>` secret"
            )),
            None => WebhookFailure::mismatch(),
        });
    };
    if outside_tolerance(timestamp, now, tolerance) {
        return Err(WebhookFailure::new(
            FailureReason::Expired,
            format!(
                "signed {}s from now, tolerance is {}s",
                unix_secs(now).abs_diff(timestamp),
                tolerance.as_secs()
            ),
        ));
    }
    Ok(SignatureMatch {
        matched_secret,
        signed_at: from_unix_secs(timestamp),
        message_id: Some(msg_id.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector from the Standard Webhooks reference implementations.
    #[test]
    fn matches_the_reference_vector() {
        let secret = StandardSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let at = from_unix_secs(1_649_367_553).unwrap();
        assert_eq!(
            sign_standard(
                &secret,
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                at,
                br#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn secrets_parse_with_or_without_prefix_and_padding() {
        let a = StandardSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let b = StandardSecret::parse("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(a, b);
        let c = StandardSecret::parse("whsec_AAE=").unwrap();
        let d = StandardSecret::parse("whsec_AAE").unwrap();
        assert_eq!(c, d);
        for bad in ["", "whsec_", "whsec_!!!", "whsec_AAE=="] {
            assert_eq!(StandardSecret::parse(bad), Err(InvalidSecret), "{bad}");
        }
    }

    #[test]
    fn generated_secrets_round_trip_and_never_print() {
        let secret = StandardSecret::generate();
        let text = secret.to_secret_string();
        assert!(text.expose().starts_with("whsec_"));
        assert_eq!(StandardSecret::parse(text.expose()).unwrap(), secret);
        assert_ne!(StandardSecret::generate(), secret);
        assert_eq!(format!("{secret:?}"), "StandardSecret([redacted])");
    }

    #[test]
    fn signature_lists_keep_only_v1() {
        let tag = STANDARD.encode([7u8; TAG_LEN]);
        let list = format!("v1a,{tag} v2,{tag}  v1,{tag} v1,short v1");
        assert_eq!(v1_signatures(&list), vec![[7u8; TAG_LEN]]);
    }
}
