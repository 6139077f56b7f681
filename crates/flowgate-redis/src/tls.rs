//! `rediss://`: Redis over TLS with rustls (ring), through redis-rs's
//! `tokio-rustls-comp`. The server certificate is checked against the
//! system's roots, or only against [`TrustedCas`] when given (a private CA).
//! Certificate checks cannot be turned off (redis-rs's `#insecure`
//! fragment is refused).

use std::fmt;

use redis::{Client, TlsCertificates, cluster::ClusterClientBuilder};
use rustls::{
    RootCertStore,
    pki_types::{CertificateDer, pem::PemObject as _},
};

use crate::StoreUnavailable;

/// The CA certificates (PEM) that sign the Redis servers' certificates,
/// trusted instead of the system's roots. Checked when built: at least one
/// certificate, each usable as a trust anchor.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedCas {
    pem: Vec<u8>,
    certificates: usize,
}

impl TrustedCas {
    /// Parses `pem` (one or more `-----BEGIN CERTIFICATE-----` blocks).
    pub fn from_pem(pem: impl Into<Vec<u8>>) -> Result<Self, StoreUnavailable> {
        let pem = pem.into();
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(&pem) {
            let certificate = certificate.map_err(|error| {
                StoreUnavailable::config(format!("the CA file is not valid PEM: {error}"))
            })?;
            roots.add(certificate).map_err(|error| {
                StoreUnavailable::config(format!(
                    "the CA file holds a certificate that cannot be a trust anchor: {error}"
                ))
            })?;
        }
        if roots.is_empty() {
            return Err(StoreUnavailable::config(
                "the CA file holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            ));
        }
        Ok(Self {
            certificates: roots.len(),
            pem,
        })
    }

    /// How many CA certificates it holds.
    pub fn len(&self) -> usize {
        self.certificates
    }

    /// Never true (a `TrustedCas` holds at least one certificate).
    pub fn is_empty(&self) -> bool {
        self.certificates == 0
    }

    fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: None,
            root_cert: Some(self.pem.clone()),
        }
    }
}

impl fmt::Debug for TrustedCas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedCas")
            .field("certificates", &self.certificates)
            .finish()
    }
}

/// Whether every URL is `rediss://` (`true`) or every one `redis://`
/// (`false`); a mix, or CAs without TLS, is a configuration error.
pub(crate) fn uses_tls(
    urls: &[String],
    cas: Option<&TrustedCas>,
) -> Result<bool, StoreUnavailable> {
    let secure = urls.iter().filter(|url| url.starts_with("rediss:")).count();
    if secure != 0 && secure != urls.len() {
        return Err(StoreUnavailable::config(
            "the cluster seeds mix redis:// and rediss:// URLs: use one scheme for all",
        ));
    }
    let tls = secure != 0;
    if cas.is_some() && !tls {
        return Err(StoreUnavailable::config(
            "a CA file is only used with rediss:// URLs",
        ));
    }
    Ok(tls)
}

/// A single-node client, trusting `cas` when given.
pub(crate) fn node_client(
    url: String,
    cas: Option<&TrustedCas>,
) -> Result<Client, redis::RedisError> {
    match cas {
        Some(cas) => Client::build_with_tls(url, cas.certificates()),
        None => Client::open(url),
    }
}

/// A cluster builder trusting `cas` when given.
pub(crate) fn cluster_trusting(
    builder: ClusterClientBuilder,
    cas: Option<&TrustedCas>,
) -> ClusterClientBuilder {
    match cas {
        Some(cas) => builder.certs(cas.certificates()),
        None => builder,
    }
}
