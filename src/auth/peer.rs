//! The identity a verified client certificate presented (mTLS).

/// The SANs of a verified client certificate: URI SANs (e.g. SPIFFE ids)
/// and DNS SANs. Inserted into the request's extensions by the TLS listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// URI SANs, e.g. `spiffe://cluster.local/ns/ci/sa/runner`.
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
}
