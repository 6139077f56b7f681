//! HMAC-SHA256 over concatenated parts, and its constant-time check.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of an HMAC-SHA256 tag.
pub(crate) const TAG_LEN: usize = 32;

fn keyed(key: &[u8], parts: &[&[u8]]) -> Option<HmacSha256> {
    // HMAC takes keys of any length, so this never fails in practice.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).ok()?;
    for part in parts {
        mac.update(part);
    }
    Some(mac)
}

/// HMAC-SHA256(`key`, concatenation of `parts`).
pub(crate) fn sign(key: &[u8], parts: &[&[u8]]) -> [u8; TAG_LEN] {
    let mut tag = [0u8; TAG_LEN];
    if let Some(mac) = keyed(key, parts) {
        tag.copy_from_slice(&mac.finalize().into_bytes());
    }
    tag
}

/// True when `tag` is HMAC-SHA256(`key`, `parts`); compared in constant time.
pub(crate) fn verify(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    keyed(key, parts).is_some_and(|mac| mac.verify_slice(tag).is_ok())
}
