//! A provider's API key, replaceable while serving.
//!
//! The binary re-reads `api_key_file` when the file changes (a rotated
//! Kubernetes Secret) and calls [`ApiKey::replace`]; every clone of the key
//! (the settings, the provider built from them) sees the new value on its
//! next request. A call reads the current auth header with one atomic load
//! ([`arc_swap`]); the header values are built once per key, not per call.
//! A call already sent keeps the header it was sent with.
//!
//! The key replaced last is kept for redaction only: an upstream answering
//! a call sent just before the rotation may echo the old key back.

use std::{fmt, sync::Arc};

use arc_swap::ArcSwap;
use flowgate_core::SecretString;
use http::HeaderValue;

/// The current key of one provider, shared by every clone.
#[derive(Clone)]
pub struct ApiKey(Arc<ArcSwap<KeyState>>);

/// One key and the header values it is sent in.
struct KeyState {
    key: SecretString,
    /// The key this one replaced, redacted too.
    previous: Option<SecretString>,
    /// Another secret redacted like the key (see [`ApiKey::also_redacting`]).
    extra: Option<SecretString>,
    /// `Bearer <key>`, marked sensitive.
    bearer: HeaderValue,
    /// `<key>`, marked sensitive.
    plain: HeaderValue,
}

impl KeyState {
    fn new(key: SecretString, previous: Option<SecretString>) -> Self {
        Self {
            bearer: sensitive(&format!("Bearer {}", key.expose())),
            plain: sensitive(key.expose()),
            key,
            previous,
            extra: None,
        }
    }
}

/// A header value that the HTTP stack never prints.
fn sensitive(text: &str) -> HeaderValue {
    HeaderValue::from_str(text)
        .map(|mut value| {
            value.set_sensitive(true);
            value
        })
        // A key with bytes invalid in a header is rejected by config
        // validation (at start and on reload); an empty value then fails
        // upstream as a 401.
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl ApiKey {
    /// A key that never changed.
    pub fn new(key: SecretString) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(KeyState::new(key, None))))
    }

    /// Makes `key` the key of every following request; the replaced key is
    /// still redacted from upstream messages.
    pub fn replace(&self, key: SecretString) {
        let previous = self.0.load().key.clone();
        self.0.store(Arc::new(KeyState::new(key, Some(previous))));
    }

    /// A copy of the current key (not for the request path).
    pub fn current(&self) -> SecretString {
        self.0.load().key.clone()
    }

    /// The header value of the current key: `Bearer <key>` when `bearer`,
    /// else the key alone. One atomic load and a reference count.
    pub(crate) fn header_value(&self, bearer: bool) -> HeaderValue {
        let state = self.0.load();
        if bearer {
            state.bearer.clone()
        } else {
            state.plain.clone()
        }
    }

    /// Calls `each` with the current key, then the one it replaced, then
    /// the extra secret of an [`ApiKey::also_redacting`] snapshot.
    pub(crate) fn for_each_key(&self, mut each: impl FnMut(&str)) {
        let state = self.0.load();
        each(state.key.expose());
        for other in [&state.previous, &state.extra].into_iter().flatten() {
            each(other.expose());
        }
    }

    /// A snapshot of this key (not replaced by later rotations) that also
    /// redacts `secret`, e.g. a single-use token a request carried, for
    /// decoding that request's answer (see
    /// [`crate::redaction::also_redacting`]).
    pub(crate) fn also_redacting(&self, secret: &SecretString) -> Self {
        let state = self.0.load();
        Self(Arc::new(ArcSwap::from_pointee(KeyState {
            key: state.key.clone(),
            previous: state.previous.clone(),
            extra: Some(secret.clone()),
            bearer: state.bearer.clone(),
            plain: state.plain.clone(),
        })))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

impl From<SecretString> for ApiKey {
    fn from(key: SecretString) -> Self {
        Self::new(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_see_a_replaced_key_and_the_old_one_stays_redactable() {
        let key = ApiKey::new(SecretString::new("knouds_live_old"));
        let held_by_provider = key.clone();
        assert_eq!(
            held_by_provider.header_value(true).to_str().unwrap(),
            "Bearer knouds_live_old"
        );
        key.replace(SecretString::new("knouds_live_new"));
        assert_eq!(
            held_by_provider.header_value(false).to_str().unwrap(),
            "knouds_live_new"
        );
        assert!(held_by_provider.header_value(false).is_sensitive());
        assert_eq!(held_by_provider.current().expose(), "knouds_live_new");
        let mut seen = Vec::new();
        held_by_provider.for_each_key(|key| seen.push(key.to_owned()));
        assert_eq!(seen, ["knouds_live_new", "knouds_live_old"]);
        assert_eq!(format!("{key:?}"), "ApiKey([redacted])");
    }
}
