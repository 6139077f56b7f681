//! Gateway run ids: opaque to callers, self-describing to replicas.
//!
//! A run id carries the provider name and the upstream id, so any replica
//! can find the run again without shared state (`fgr_` + base64url of
//! `provider \n upstream-id`). Runs the provider gave no id for get a random
//! gateway-local id.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::Rng as _;

const PREFIX: &str = "fgr_";
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

    /// The opaque, URL-safe form given to callers.
    pub fn encode(&self) -> String {
        let raw = format!("{}\n{}", self.provider, self.upstream_id);
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw))
    }

    /// Parses the opaque form; `None` for anything the gateway did not issue.
    pub fn decode(text: &str) -> Option<Self> {
        let encoded = text.strip_prefix(PREFIX)?;
        let raw = URL_SAFE_NO_PAD.decode(encoded).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (provider, upstream_id) = raw.split_once('\n')?;
        if provider.is_empty() || upstream_id.is_empty() {
            return None;
        }
        Some(Self::new(provider, upstream_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_and_is_url_safe() {
        let id = RunId::new("knouds-prod", "3f0c9d1e-0000-4000-8000-000000000000");
        let encoded = id.encode();
        assert!(
            encoded
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        );
        assert_eq!(RunId::decode(&encoded), Some(id));
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
        for text in ["", "fgr_", "fgr_!!!", "run_abc", "fgr_bm9uZXdsaW5l"] {
            assert_eq!(RunId::decode(text), None, "{text}");
        }
    }

    proptest! {
        #[test]
        fn any_id_round_trips(provider in "[a-z][a-z0-9_-]{0,20}", upstream in "[^\n]{1,64}") {
            let id = RunId::new(provider, upstream);
            prop_assert_eq!(RunId::decode(&id.encode()), Some(id));
        }

        #[test]
        fn decode_never_panics(text in ".{0,80}") {
            let _ = RunId::decode(&text);
        }
    }
}
