//! Caller API keys: how they are made, hashed and written in the config.
//!
//! A key is `fgk_` followed by 32 random bytes, base64url (256 bits of
//! entropy), so one unsalted SHA-256 is enough to store it: the config holds
//! only `sha256:<64 hex digits>`, never the key. A presented bearer token is
//! hashed and the hash looked up; the candidate found is compared again in
//! constant time. Neither keys nor hashes are ever logged or echoed.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::Rng as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// How every generated key begins (recognisable by secret scanners).
pub const KEY_PREFIX: &str = "fgk_";
/// How a stored hash begins in the config.
pub const HASH_PREFIX: &str = "sha256:";
/// Random bytes in a generated key.
const KEY_RANDOM_BYTES: usize = 32;

/// The SHA-256 of a key, as stored in `callers.<name>.key_hashes`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never printed: a hash lets an attacker test guesses offline.
        f.write_str("KeyHash(..)")
    }
}

impl KeyHash {
    /// The hash of a presented key.
    pub fn of(key: &[u8]) -> Self {
        Self(Sha256::digest(key).into())
    }

    /// Parses `sha256:<64 hex digits>` (either case).
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let hex_digits = text
            .strip_prefix(HASH_PREFIX)
            .ok_or("must be sha256:<64 hex digits> (see `flowgate hash-key`)")?;
        let mut bytes = [0_u8; 32];
        hex::decode_to_slice(hex_digits, &mut bytes)
            .map_err(|_| "must be sha256: followed by exactly 64 hex digits")?;
        Ok(Self(bytes))
    }

    /// The config form, `sha256:<hex>`.
    pub fn to_config(self) -> String {
        format!("{HASH_PREFIX}{}", hex::encode(self.0))
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// A fresh high-entropy key, `fgk_` + 32 random bytes base64url.
pub fn generate_key() -> String {
    let bytes: [u8; KEY_RANDOM_BYTES] = rand::rng().random();
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The bearer token of an `authorization` header value, when it is one:
/// `Bearer <token>` (scheme case-insensitive), token non-empty.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    let (scheme, token) = value.split_at_checked(SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty() && !token.iter().any(u8::is_ascii_whitespace)).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_round_trip_and_are_checked() {
        let hash = KeyHash::of(b"fgk_abc");
        let text = hash.to_config();
        assert!(text.starts_with("sha256:") && text.len() == 7 + 64);
        assert_eq!(KeyHash::parse(&text), Ok(hash));
        assert_eq!(
            KeyHash::parse(&text.to_uppercase().replace("SHA256", "sha256")),
            Ok(hash)
        );
        for bad in [
            "",
            "sha256:",
            "sha256:zz",
            "md5:00",
            &text[..text.len() - 1],
        ] {
            assert!(KeyHash::parse(bad).is_err(), "{bad}");
        }
        assert!(hash.ct_eq(&KeyHash::of(b"fgk_abc")));
        assert!(!hash.ct_eq(&KeyHash::of(b"fgk_abd")));
        assert_eq!(format!("{hash:?}"), "KeyHash(..)");
    }

    #[test]
    fn generated_keys_are_long_and_distinct() {
        let a = generate_key();
        assert!(a.starts_with(KEY_PREFIX) && a.len() == 4 + 43, "{a}");
        assert_ne!(a, generate_key());
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer   abc "), Some(&b"abc"[..]));
        for bad in [&b"Bearer "[..], b"Basic abc", b"Bearer a b", b"abc", b""] {
            assert_eq!(bearer_token(bad), None);
        }
    }
}
