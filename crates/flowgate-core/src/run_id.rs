//! Gateway run ids: opaque to callers, self-describing to replicas, and
//! signed so they cannot be forged.
//!
//! A run id carries the provider name and the upstream id, so any replica
//! can find the run again without shared state. [`RunId::encode`] is the
//! unsigned form (`fgr_` + base64url of `provider \n upstream-id`), used only
//! as a key inside the gateway. Callers get [`RunIdSigner::sign`]'s form:
//! `fgr_<payload>.<tag>`, the tag being the first 16 bytes of
//! HMAC-SHA256(secret, domain ‖ payload), base64url. [`RunIdSigner::verify`]
//! accepts an id signed with any configured secret (the first signs, the
//! others are older ones still accepted: rotation), so a replica sharing the
//! secrets can stream any run; an unsigned, tampered or foreign id is
//! refused before any upstream call. Runs the provider gave no id for get a
//! random gateway-local id.

use std::fmt;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng as _;
use sha2::Sha256;

use crate::SecretString;

const PREFIX: &str = "fgr_";
/// Separates the payload from the tag in a signed id.
const TAG_SEPARATOR: char = '.';
/// Bytes of the HMAC-SHA256 tag kept in an id.
const TAG_BYTES: usize = 16;
/// Mixed into every tag so a run-id tag is never valid for anything else
/// signed with the same secret.
const DOMAIN: &[u8] = b"flowgate run id v1\n";
/// Longest id text looked at (a provider name and an upstream id fit well).
const MAX_ID_CHARS: usize = 1024;
/// Marks upstream ids the gateway made up itself.
const LOCAL_MARK: &str = "local:";

/// A decoded run id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunId {
    /// Configured provider name.
    pub provider: String,
    /// The provider's id for the run, or a gateway-local id.
    pub upstream_id: String,
}

impl RunId {
    /// The id of a run the provider knows as `upstream_id`.
    pub fn new(provider: impl Into<String>, upstream_id: impl Into<String>) -> Self {
        Self {
            provider: provider.into(),
            upstream_id: upstream_id.into(),
        }
    }

    /// A fresh id for a run the provider gave no id for.
    pub fn local(provider: impl Into<String>) -> Self {
        let random: u128 = rand::rng().random();
        Self::new(provider, format!("{LOCAL_MARK}{random:032x}"))
    }

    /// True when the upstream id was made up by the gateway.
    pub fn is_local(&self) -> bool {
        self.upstream_id.starts_with(LOCAL_MARK)
    }

    /// The unsigned form: a stable key for stores and logs inside the
    /// gateway. Never accepted from a caller (see [`RunIdSigner`]).
    pub fn encode(&self) -> String {
        format!("{PREFIX}{}", self.payload())
    }

    /// Parses what [`RunId::encode`] made (ids kept inside the gateway,
    /// such as the members of a store's index; never a caller's id).
    pub fn decode(encoded: &str) -> Option<Self> {
        Self::decode_payload(encoded.strip_prefix(PREFIX)?)
    }

    fn payload(&self) -> String {
        let raw = format!("{}\n{}", self.provider, self.upstream_id);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Parses the payload of an id (without its tag).
    fn decode_payload(encoded: &str) -> Option<Self> {
        let raw = URL_SAFE_NO_PAD.decode(encoded).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (provider, upstream_id) = raw.split_once('\n')?;
        if provider.is_empty() || upstream_id.is_empty() {
            return None;
        }
        Some(Self::new(provider, upstream_id))
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Signs and verifies the run ids given to callers (see the module docs).
/// Cheap to share; signing is one HMAC over a few dozen bytes.
#[derive(Clone)]
pub struct RunIdSigner {
    /// One keyed MAC per secret, the signing one first.
    keys: Vec<HmacSha256>,
    ephemeral: bool,
}

impl fmt::Debug for RunIdSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunIdSigner")
            .field("secrets", &self.keys.len())
            .field("ephemeral", &self.ephemeral)
            .finish()
    }
}

impl RunIdSigner {
    /// A signer over configured secrets: the first signs, all verify.
    /// `None` when `secrets` is empty.
    pub fn new(secrets: &[SecretString]) -> Option<Self> {
        let keys: Vec<HmacSha256> = secrets
            .iter()
            .filter_map(|secret| HmacSha256::new_from_slice(secret.expose().as_bytes()).ok())
            .collect();
        (!keys.is_empty()).then_some(Self {
            keys,
            ephemeral: false,
        })
    }

    /// A signer over a random secret of this process only: ids it issues
    /// are valid on this replica only, and not after a restart.
    pub fn ephemeral() -> Self {
        let secret: [u8; 32] = rand::rng().random();
        let keys = HmacSha256::new_from_slice(&secret).into_iter().collect();
        Self {
            keys,
            ephemeral: true,
        }
    }

    /// True for a signer made by [`RunIdSigner::ephemeral`].
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    fn mac(key: &HmacSha256, payload: &str) -> HmacSha256 {
        let mut mac = key.clone();
        mac.update(DOMAIN);
        mac.update(payload.as_bytes());
        mac
    }

    /// The signed, URL-safe id given to callers.
    pub fn sign(&self, id: &RunId) -> String {
        self.sign_owned(id, None)
    }

    /// The signed id of a run started by the caller `owner`: the owner's
    /// name is part of the signed text (`fgr_<payload>.<owner>.<tag>`, the
    /// owner base64url), so every replica knows whose run it is without
    /// shared state, and no caller can claim another's run.
    pub fn sign_owned(&self, id: &RunId, owner: Option<&str>) -> String {
        let mut payload = id.payload();
        if let Some(owner) = owner {
            payload.push(TAG_SEPARATOR);
            payload.push_str(&URL_SAFE_NO_PAD.encode(owner));
        }
        let tag = self
            .keys
            .first()
            .map(|key| Self::mac(key, &payload).finalize().into_bytes())
            .map(|tag| URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES]))
            .unwrap_or_default();
        format!("{PREFIX}{payload}{TAG_SEPARATOR}{tag}")
    }

    /// The run a caller's id names, when the gateway (with any of its
    /// secrets) signed it; `None` for anything else.
    pub fn verify(&self, text: &str) -> Option<RunId> {
        self.verify_owned(text).map(|(id, _)| id)
    }

    /// [`RunIdSigner::verify`], with the owner the id was signed for
    /// (`None`: signed without one, see [`RunIdSigner::sign_owned`]).
    pub fn verify_owned(&self, text: &str) -> Option<(RunId, Option<String>)> {
        if text.len() > MAX_ID_CHARS {
            return None;
        }
        let (signed, tag) = text.strip_prefix(PREFIX)?.rsplit_once(TAG_SEPARATOR)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if tag.len() != TAG_BYTES {
            return None;
        }
        // Constant-time comparison per key (`verify_truncated_left`).
        if !self
            .keys
            .iter()
            .any(|key| Self::mac(key, signed).verify_truncated_left(&tag).is_ok())
        {
            return None;
        }
        let (payload, owner) = match signed.split_once(TAG_SEPARATOR) {
            Some((payload, owner)) => {
                let owner = String::from_utf8(URL_SAFE_NO_PAD.decode(owner).ok()?).ok()?;
                (payload, Some(owner))
            }
            None => (signed, None),
        };
        Some((RunId::decode_payload(payload)?, owner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn signer(secrets: &[&str]) -> RunIdSigner {
        let secrets: Vec<_> = secrets.iter().map(|s| SecretString::new(*s)).collect();
        RunIdSigner::new(&secrets).unwrap()
    }

    #[test]
    fn round_trips_and_is_url_safe() {
        let signer = signer(&["s3cret-run-ids"]);
        let id = RunId::new("knouds-prod", "3f0c9d1e-0000-4000-8000-000000000000");
        let signed = signer.sign(&id);
        assert!(
            signed
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        );
        assert_eq!(signer.verify(&signed), Some(id.clone()));
        assert_eq!(RunId::decode(&id.encode()), Some(id));
        assert_eq!(RunId::decode("fgr_not base64"), None);
    }

    #[test]
    fn unsigned_tampered_and_foreign_ids_are_refused() {
        let signer = signer(&["s3cret-run-ids"]);
        let id = RunId::new("kn", "exec-1");
        let signed = signer.sign(&id);
        assert_eq!(signer.verify(&id.encode()), None, "unsigned");
        let forged = signer.sign(&RunId::new("kn", ".."));
        let (_, forged_tag) = forged.split_once('.').unwrap();
        let (payload, _) = signed.split_once('.').unwrap();
        let swapped = format!("{}.{forged_tag}", RunId::new("kn", "..").encode());
        assert_eq!(
            signer.verify(&swapped).map(|r| r.upstream_id),
            Some("..".into())
        );
        assert_eq!(
            signer.verify(&format!("{payload}.{forged_tag}")),
            None,
            "tag of another id"
        );
        let mut flipped = signed.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(signer.verify(&String::from_utf8(flipped).unwrap()), None);
        assert_eq!(
            self::signer(&["another"]).verify(&signed),
            None,
            "other secret"
        );
        assert_eq!(RunIdSigner::ephemeral().verify(&signed), None);
    }

    #[test]
    fn rotation_keeps_old_ids_valid() {
        let old = signer(&["old-secret"]);
        let rotated = signer(&["new-secret", "old-secret"]);
        let id = RunId::new("fh", "req_1");
        assert_eq!(rotated.verify(&old.sign(&id)), Some(id.clone()));
        assert_eq!(old.verify(&rotated.sign(&id)), None, "the new secret signs");
        assert_eq!(signer(&["new-secret"]).verify(&rotated.sign(&id)), Some(id));
    }

    #[test]
    fn owners_are_signed_into_the_id() {
        let signer = signer(&["s3cret-run-ids"]);
        let id = RunId::new("kn", "exec-1");
        let owned = signer.sign_owned(&id, Some("ci-runner"));
        assert!(
            owned
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        );
        assert_eq!(
            signer.verify_owned(&owned),
            Some((id.clone(), Some("ci-runner".into())))
        );
        assert_eq!(signer.verify(&owned), Some(id.clone()));
        assert_eq!(
            signer.verify_owned(&signer.sign(&id)),
            Some((id.clone(), None))
        );
        // Another owner's name with this id's tag, or the tag of the
        // unowned id with an owner added, is refused.
        let (head, tag) = owned.rsplit_once('.').unwrap();
        let (payload, _) = head.split_once('.').unwrap();
        let other = format!("{payload}.{}.{tag}", URL_SAFE_NO_PAD.encode("ops"));
        assert_eq!(signer.verify_owned(&other), None);
        let unowned_tag = signer.sign(&id).rsplit_once('.').unwrap().1.to_owned();
        assert_eq!(signer.verify_owned(&format!("{head}.{unowned_tag}")), None);
    }

    #[test]
    fn local_ids_are_marked_and_unique() {
        let a = RunId::local("tutor");
        let b = RunId::local("tutor");
        assert!(a.is_local());
        assert_ne!(a, b);
    }

    #[test]
    fn foreign_text_is_rejected() {
        let signer = signer(&["k"]);
        for text in [
            "",
            "fgr_",
            "fgr_!!!",
            "run_abc",
            "fgr_bm9uZXdsaW5l",
            ".",
            "..",
            "fgr_.",
            "fgr_a.b",
        ] {
            assert_eq!(signer.verify(text), None, "{text}");
        }
    }

    proptest! {
        #[test]
        fn any_id_round_trips(provider in "[a-z][a-z0-9_-]{0,20}", upstream in "[^\n]{1,64}") {
            let signer = signer(&["k1", "k0"]);
            let id = RunId::new(provider, upstream);
            prop_assert_eq!(signer.verify(&signer.sign(&id)), Some(id));
        }

        #[test]
        fn verify_never_panics(text in ".{0,80}") {
            let _ = signer(&["k"]).verify(&text);
            let _ = signer(&["k"]).verify(&format!("fgr_{text}"));
        }
    }
}
