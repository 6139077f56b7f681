//! Knouds: `X-Knouds-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
//!
//! Several `v1=` entries may be sent while Knouds rotates its secret; the
//! delivery is valid when any of them matches any configured secret.

use std::time::{Duration, SystemTime};

use flowgate_core::SecretString;
use http::HeaderMap;

use crate::clock::{from_unix_secs, outside_tolerance, parse_unix_digits, unix_secs};
use crate::failure::{FailureReason, WebhookFailure};
use crate::mac::{self, TAG_LEN};
use crate::signature::{SignatureMatch, required_header};

/// The signature header (lowercase).
pub(crate) const SIGNATURE_HEADER: &str = "x-knouds-signature";

/// A parsed `t=…,v1=…` header.
#[derive(Debug)]
struct SignatureHeader<'a> {
    /// `t` exactly as sent: it is what was signed.
    timestamp_text: &'a str,
    timestamp: i64,
    signatures: Vec<[u8; TAG_LEN]>,
}

fn parse(value: &str) -> Result<SignatureHeader<'_>, WebhookFailure> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    let mut undecodable = 0usize;
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((key, val)) = entry.split_once('=') else {
            return Err(WebhookFailure::malformed(format!(
                "`{SIGNATURE_HEADER}` has an entry without `=`"
            )));
        };
        match key.trim() {
            "t" => {
                if timestamp.is_some() {
                    return Err(WebhookFailure::malformed(format!(
                        "`{SIGNATURE_HEADER}` has more than one `t`"
                    )));
                }
                let text = val.trim();
                let secs = parse_unix_digits(text).ok_or_else(|| {
                    WebhookFailure::malformed(format!(
                        "`{SIGNATURE_HEADER}` timestamp `t` is not unix seconds"
                    ))
                })?;
                timestamp = Some((text, secs));
            }
            "v1" => {
                let mut tag = [0u8; TAG_LEN];
                match hex::decode_to_slice(val.trim(), &mut tag) {
                    Ok(()) => signatures.push(tag),
                    Err(_) => undecodable += 1,
                }
            }
            // Other schemes versions (`v0`, …) are not ours to check.
            _ => {}
        }
    }
    let Some((timestamp_text, timestamp)) = timestamp else {
        return Err(WebhookFailure::malformed(format!(
            "`{SIGNATURE_HEADER}` has no `t` timestamp"
        )));
    };
    if signatures.is_empty() {
        let detail = if undecodable > 0 {
            "no `v1` signature is 64 hex digits"
        } else {
            "no `v1` signature"
        };
        return Err(WebhookFailure::malformed(format!(
            "`{SIGNATURE_HEADER}` has {detail}"
        )));
    }
    Ok(SignatureHeader {
        timestamp_text,
        timestamp,
        signatures,
    })
}

pub(crate) fn verify(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[SecretString],
    now: SystemTime,
    tolerance: Duration,
) -> Result<SignatureMatch, WebhookFailure> {
    let header = parse(required_header(headers, SIGNATURE_HEADER)?)?;
    let parts: [&[u8]; 3] = [header.timestamp_text.as_bytes(), b".", body];
    let matched = secrets.iter().position(|secret| {
        header
            .signatures
            .iter()
            .any(|tag| mac::verify(secret.expose().as_bytes(), &parts, tag))
    });
    let Some(matched_secret) = matched else {
        return Err(WebhookFailure::mismatch());
    };
    if outside_tolerance(header.timestamp, now, tolerance) {
        return Err(WebhookFailure::new(
            FailureReason::Expired,
            format!(
                "signed {}s from now, tolerance is {}s",
                unix_secs(now).abs_diff(header.timestamp),
                tolerance.as_secs()
            ),
        ));
    }
    Ok(SignatureMatch {
        matched_secret,
        signed_at: from_unix_secs(header.timestamp),
        message_id: None,
    })
}

/// The `X-Knouds-Signature` value Knouds would send for `body` at `timestamp`.
pub fn sign_knouds(secret: &SecretString, timestamp: SystemTime, body: &[u8]) -> String {
    let t = unix_secs(timestamp).to_string();
    let tag = mac::sign(secret.expose().as_bytes(), &[t.as_bytes(), b".", body]);
    format!("t={t},v1={}", hex::encode(tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rotation_and_ignores_unknown_versions() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let text = format!(" t=1700000000 , v0=zz, v1={a},v1={b},");
        let header = parse(&text).unwrap();
        assert_eq!(header.timestamp, 1_700_000_000);
        assert_eq!(header.timestamp_text, "1700000000");
        assert_eq!(header.signatures.len(), 2);
    }

    #[test]
    fn rejects_malformed_headers() {
        let sig = "0".repeat(64);
        for bad in [
            format!("v1={sig}"),
            "t=1700000000".to_owned(),
            "t=1700000000,v1=xyz".to_owned(),
            format!("t=soon,v1={sig}"),
            format!("t=1,t=2,v1={sig}"),
            format!("t=1700000000;v1={sig}"),
        ] {
            let err = parse(&bad).unwrap_err();
            assert_eq!(err.reason(), FailureReason::Malformed, "{bad}");
            assert!(!err.message().contains(&sig));
        }
    }
}
