//! Callers: who is calling, and what they may do.
//!
//! Callers are declared in `[callers.<name>]` (see `config/callers.rs`) and
//! resolved here, once per call, by the auth layer
//! ([`crate::layers::auth`]):
//!
//! 1. an `authorization: Bearer <key>` header: the key is hashed (SHA-256)
//!    and looked up among every caller's `key_hashes` (a map keyed by hash
//!    bytes, then a constant-time comparison); a header that is present but
//!    malformed, unknown or revoked is refused, whatever else the call has;
//! 2. else a verified client certificate ([`PeerIdentity`], put in the
//!    request's extensions by the TLS listener): the first of its URI SANs,
//!    then of its DNS SANs, named exactly in some caller's `identities`;
//! 3. else, when unauthenticated calls are allowed (no callers configured,
//!    or `auth.allow_unauthenticated = true`), the caller `unauthenticated`
//!    with every capability;
//! 4. else UNAUTHENTICATED / `CALLER_UNAUTHENTICATED`, never saying which
//!    of the above failed.
//!
//! The resolved [`Caller`] travels to the service as a request extension
//! (`Arc<Caller>`), where [`Capabilities`] are checked before anything is
//! fetched or started. Keys and their hashes are never logged or echoed.

pub mod capability;
pub mod key;
pub mod peer;
pub mod quota;

use std::{collections::HashMap, sync::Arc};

pub use capability::{Capabilities, Capability, Required};
use flowgate_core::CallerQuota;
pub use key::KeyHash;
pub use peer::PeerIdentity;

/// The name of the caller of an unauthenticated call (when allowed).
pub const UNAUTHENTICATED: &str = "unauthenticated";

/// A resolved caller.
#[derive(Debug, PartialEq)]
pub struct Caller {
    name: Arc<str>,
    capabilities: Capabilities,
    quota: Option<CallerQuota>,
}

impl Caller {
    /// A caller named `name` with `capabilities` and no quota.
    pub fn new(name: &str, capabilities: Capabilities) -> Self {
        Self {
            name: name.into(),
            capabilities,
            quota: None,
        }
    }

    /// The same caller with `quota` (none: unlimited).
    pub fn with_quota(mut self, quota: Option<CallerQuota>) -> Self {
        self.quota = quota;
        self
    }

    /// Its quota, when it has one ([`quota`]).
    pub fn quota(&self) -> Option<&CallerQuota> {
        self.quota.as_ref()
    }

    /// The caller `unauthenticated`, with every capability.
    pub fn unauthenticated() -> Self {
        Self::new(UNAUTHENTICATED, Capabilities::all())
    }

    /// Its configured name (or `unauthenticated`): a bounded label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its name, shared (for labels kept beyond the call).
    pub fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    /// What it may do.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }
}

/// Who may call reflection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReflectionAccess {
    /// Anyone who can reach the port.
    Open,
    /// Authenticated callers only (any capability). The default.
    #[default]
    Authenticated,
}

/// A caller's mTLS identity as configured: `dns:<name>` or a URI.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// Matches a DNS SAN.
    Dns(String),
    /// Matches a URI SAN exactly (e.g. a SPIFFE id).
    Uri(String),
}

impl Identity {
    /// Parses `dns:<name>` or `<scheme>://…`.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if let Some(name) = text.strip_prefix("dns:") {
            let valid = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
            return if valid {
                Ok(Self::Dns(name.to_ascii_lowercase()))
            } else {
                Err("dns: must be followed by a DNS name (matched exactly; no wildcards)")
            };
        }
        match text.split_once("://") {
            Some((scheme, rest))
                if !scheme.is_empty()
                    && !rest.is_empty()
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'+')
                    && !text.chars().any(char::is_whitespace) =>
            {
                Ok(Self::Uri(text.to_owned()))
            }
            _ => {
                Err("must be a URI SAN (e.g. spiffe://cluster.local/ns/ci/sa/runner) or dns:<name>")
            }
        }
    }
}

/// Every configured caller, indexed for one lookup per call.
#[derive(Debug, Default)]
pub struct CallerRegistry {
    by_key: HashMap<KeyHash, Arc<Caller>>,
    by_uri: HashMap<String, Arc<Caller>>,
    by_dns: HashMap<String, Arc<Caller>>,
    /// Who an unauthenticated call is, when such calls are allowed.
    unauthenticated: Option<Arc<Caller>>,
    reflection: ReflectionAccess,
    names: Vec<Arc<str>>,
}

/// The call carries no valid credentials (deliberately without detail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unauthenticated;

/// One configured caller, checked (see `config/callers.rs`).
#[derive(Debug)]
pub struct CallerEntry {
    /// Its name.
    pub name: String,
    /// Its key hashes.
    pub keys: Vec<KeyHash>,
    /// Its mTLS identities.
    pub identities: Vec<Identity>,
    /// Its capabilities.
    pub capabilities: Capabilities,
    /// Its quota (none: unlimited).
    pub quota: Option<CallerQuota>,
}

impl CallerRegistry {
    /// A registry of `callers`; unauthenticated calls are allowed when
    /// there are none or `allow_unauthenticated` says so.
    pub fn new(
        callers: Vec<CallerEntry>,
        allow_unauthenticated: bool,
        reflection: ReflectionAccess,
    ) -> Self {
        let mut registry = Self {
            unauthenticated: (callers.is_empty() || allow_unauthenticated)
                .then(|| Arc::new(Caller::unauthenticated())),
            reflection,
            ..Self::default()
        };
        for entry in callers {
            let caller =
                Arc::new(Caller::new(&entry.name, entry.capabilities).with_quota(entry.quota));
            registry.names.push(Arc::clone(&caller.name));
            for key in entry.keys {
                registry.by_key.insert(key, Arc::clone(&caller));
            }
            for identity in entry.identities {
                let index = match identity {
                    Identity::Dns(name) => (&mut registry.by_dns, name),
                    Identity::Uri(uri) => (&mut registry.by_uri, uri),
                };
                index.0.insert(index.1, Arc::clone(&caller));
            }
        }
        registry
    }

    /// An open registry: every call is `unauthenticated` (tests, tools).
    pub fn open() -> Self {
        Self::new(Vec::new(), true, ReflectionAccess::Open)
    }

    /// True when unauthenticated calls get through.
    pub fn allows_unauthenticated(&self) -> bool {
        self.unauthenticated.is_some()
    }

    /// True when reflection needs no credentials.
    pub fn reflection_open(&self) -> bool {
        self.reflection == ReflectionAccess::Open || self.names.is_empty()
    }

    /// The configured caller names (metric labels are these or
    /// `unauthenticated`).
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// The caller of a call with `authorization` header value
    /// `authorization` and client certificate `peer` (module docs).
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        peer: Option<&PeerIdentity>,
    ) -> Result<Arc<Caller>, Unauthenticated> {
        if let Some(value) = authorization {
            let token = key::bearer_token(value).ok_or(Unauthenticated)?;
            let presented = KeyHash::of(token);
            return match self.by_key.get_key_value(&presented) {
                Some((stored, caller)) if stored.ct_eq(&presented) => Ok(Arc::clone(caller)),
                _ => Err(Unauthenticated),
            };
        }
        if let Some(peer) = peer {
            let by_uri = peer
                .uris
                .iter()
                .find_map(|uri| self.by_uri.get(uri.as_str()));
            let found = by_uri.or_else(|| {
                peer.dns_names
                    .iter()
                    .find_map(|name| self.by_dns.get(name.to_ascii_lowercase().as_str()))
            });
            if let Some(caller) = found {
                return Ok(Arc::clone(caller));
            }
        }
        self.unauthenticated.clone().ok_or(Unauthenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(allow: bool) -> CallerRegistry {
        CallerRegistry::new(
            vec![
                CallerEntry {
                    name: "ci".into(),
                    keys: vec![KeyHash::of(b"fgk_old"), KeyHash::of(b"fgk_new")],
                    identities: vec![
                        Identity::parse("spiffe://c.local/ns/ci/sa/runner").unwrap(),
                        Identity::parse("dns:ci.internal").unwrap(),
                    ],
                    capabilities: Capabilities::default(),
                    quota: None,
                },
                CallerEntry {
                    name: "ops".into(),
                    keys: vec![KeyHash::of(b"fgk_ops")],
                    identities: Vec::new(),
                    capabilities: Capabilities::default(),
                    quota: None,
                },
            ],
            allow,
            ReflectionAccess::Authenticated,
        )
    }

    fn name(result: Result<Arc<Caller>, Unauthenticated>) -> Result<String, Unauthenticated> {
        result.map(|caller| caller.name().to_owned())
    }

    #[test]
    fn keys_identities_and_refusals() {
        let registry = registry(false);
        let auth = |header: &str| name(registry.authenticate(Some(header.as_bytes()), None));
        assert_eq!(auth("Bearer fgk_old"), Ok("ci".into()));
        assert_eq!(auth("Bearer fgk_new"), Ok("ci".into()));
        assert_eq!(auth("Bearer fgk_ops"), Ok("ops".into()));
        assert_eq!(auth("Bearer fgk_other"), Err(Unauthenticated));
        assert_eq!(auth("fgk_ops"), Err(Unauthenticated));
        assert_eq!(
            name(registry.authenticate(None, None)),
            Err(Unauthenticated)
        );
        let peer = |uris: &[&str], dns: &[&str]| PeerIdentity {
            uris: uris.iter().map(|s| s.to_string()).collect(),
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
        };
        let spiffe = peer(&["spiffe://c.local/ns/ci/sa/runner"], &[]);
        assert_eq!(
            name(registry.authenticate(None, Some(&spiffe))),
            Ok("ci".into())
        );
        let dns = peer(&["spiffe://other"], &["CI.internal"]);
        assert_eq!(
            name(registry.authenticate(None, Some(&dns))),
            Ok("ci".into())
        );
        let stranger = peer(&["spiffe://other"], &["x.internal"]);
        assert_eq!(
            name(registry.authenticate(None, Some(&stranger))),
            Err(Unauthenticated)
        );
        // A bad key is refused even with a good certificate.
        assert_eq!(
            name(registry.authenticate(Some(b"Bearer nope"), Some(&spiffe))),
            Err(Unauthenticated)
        );
        assert!(!registry.reflection_open());
    }

    #[test]
    fn unauthenticated_calls_when_allowed() {
        let open = CallerRegistry::open();
        let caller = open.authenticate(None, None).unwrap();
        assert_eq!(caller.name(), UNAUTHENTICATED);
        assert!(caller.capabilities().may_stream_all());
        assert!(open.reflection_open());
        let migrating = registry(true);
        assert_eq!(
            name(migrating.authenticate(None, None)),
            Ok(UNAUTHENTICATED.into())
        );
        assert_eq!(
            name(migrating.authenticate(Some(b"Bearer wrong"), None)),
            Err(Unauthenticated)
        );
    }

    #[test]
    fn identities() {
        assert_eq!(
            Identity::parse("dns:Api.Internal"),
            Ok(Identity::Dns("api.internal".into()))
        );
        assert!(Identity::parse("spiffe://cluster.local/ns/ci/sa/runner").is_ok());
        for bad in [
            "dns:",
            "dns:a b",
            "dns:*.ci.svc",
            "api.internal",
            "://x",
            "spiffe://",
            "x://a b",
        ] {
            assert!(Identity::parse(bad).is_err(), "{bad}");
        }
    }
}
