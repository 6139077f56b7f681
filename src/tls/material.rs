//! The certificate, key and client CAs: read from their PEM files into a
//! rustls server configuration, and read again while serving.

use std::{
    fmt,
    hash::{BuildHasher, Hasher, RandomState},
    path::Path,
    sync::{Arc, PoisonError, RwLock},
};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
    version::{TLS12, TLS13},
};
use tokio_util::task::AbortOnDropHandle;

use crate::{
    config::{ClientAuth, ConfigError, ConfigIssue, TlsConfig},
    reload::{self, Reload},
};

/// The TLS configuration being served, and how to read it again.
///
/// Cloning shares it: what the reload task installs, every clone serves.
#[derive(Clone)]
pub struct TlsMaterial {
    settings: TlsConfig,
    current: Arc<RwLock<Arc<ServerConfig>>>,
    /// Hashes file contents (with keys of this process) to notice changes.
    hasher: RandomState,
    /// The hash of the files that were read last.
    loaded: u64,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("cert_file", &self.settings.cert_file)
            .field("key_file", &self.settings.key_file)
            .field("client_ca_file", &self.settings.client_ca_file)
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Reads and checks the files of `[server.tls]`; every problem comes
    /// back with the path of its key (`server.tls.key_file: …`).
    pub fn load(settings: &TlsConfig) -> Result<Self, ConfigError> {
        let hasher = RandomState::new();
        let files = Files::read(settings).map_err(issues)?;
        let loaded = files.fingerprint(&hasher);
        let (config, serial) = server_config(settings, &files).map_err(issues)?;
        tracing::info!(
            cert_file = %settings.cert_file.display(),
            serial = %serial,
            mtls = settings.client_ca_file.is_some(),
            "TLS on the gRPC listener"
        );
        Ok(Self {
            settings: settings.clone(),
            current: Arc::new(RwLock::new(config)),
            hasher,
            loaded,
        })
    }

    /// The configuration new handshakes use.
    pub fn current(&self) -> Arc<ServerConfig> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&current)
    }

    /// The `[server.tls]` settings.
    pub fn settings(&self) -> &TlsConfig {
        &self.settings
    }

    /// Starts re-reading the files every `reload_interval` (see
    /// [`crate::reload`]); the task ends when the handle is dropped.
    pub(super) fn spawn_reload(&self) -> AbortOnDropHandle<()> {
        reload::spawn_reload(self.settings.reload_interval, self.clone())
    }

    /// Reads the files; when their contents changed since they were last
    /// read and they parse, installs the new configuration. Returns the
    /// hash of what it saw, so the same bad contents warn only once.
    fn reread_files(&self) -> u64 {
        let files = match Files::read(&self.settings) {
            Ok(files) => files,
            Err(problems) => {
                let seen = fingerprint_problems(&self.hasher, &problems);
                if seen != self.loaded {
                    warn_kept(&problems);
                }
                return seen;
            }
        };
        let seen = files.fingerprint(&self.hasher);
        if seen == self.loaded {
            return seen;
        }
        match server_config(&self.settings, &files) {
            Ok((config, serial)) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
                tracing::info!(
                    cert_file = %self.settings.cert_file.display(),
                    serial = %serial,
                    "TLS files changed: new connections use the new certificate"
                );
            }
            Err(problems) => warn_kept(&problems),
        }
        seen
    }
}

impl Reload for TlsMaterial {
    const WHAT: &'static str = "TLS files";

    fn reread(&mut self) {
        self.loaded = self.reread_files();
    }
}

fn warn_kept(problems: &[ConfigIssue]) {
    flowgate_telemetry::metrics().config_reload_failed("tls");
    for problem in problems {
        tracing::warn!(
            path = %problem.path,
            problem = %problem.message,
            "TLS files changed but cannot be used; still serving the previous certificate"
        );
    }
}

fn issues(issues: Vec<ConfigIssue>) -> ConfigError {
    ConfigError { issues }
}

fn fingerprint_problems(hasher: &RandomState, problems: &[ConfigIssue]) -> u64 {
    let mut state = hasher.build_hasher();
    for problem in problems {
        state.write(problem.path.as_bytes());
        state.write(problem.message.as_bytes());
    }
    state.finish()
}

/// The contents of the files, as read.
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Files {
    fn read(settings: &TlsConfig) -> Result<Self, Vec<ConfigIssue>> {
        let mut problems = Vec::new();
        let mut read = |field: &str, path: &Path| match std::fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(err) => {
                problems.push(issue(
                    field,
                    format!("cannot read {}: {err}", path.display()),
                ));
                None
            }
        };
        let cert = read("cert_file", &settings.cert_file);
        let key = read("key_file", &settings.key_file);
        let client_ca = settings
            .client_ca_file
            .as_deref()
            .map(|path| read("client_ca_file", path));
        match (cert, key, client_ca) {
            (Some(cert), Some(key), None) => Ok(Self {
                cert,
                key,
                client_ca: None,
            }),
            (Some(cert), Some(key), Some(Some(ca))) => Ok(Self {
                cert,
                key,
                client_ca: Some(ca),
            }),
            _ => Err(problems),
        }
    }

    fn fingerprint(&self, hasher: &RandomState) -> u64 {
        let mut state = hasher.build_hasher();
        for part in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()] {
            match part {
                Some(bytes) => {
                    state.write_u8(1);
                    state.write(bytes);
                }
                None => state.write_u8(0),
            }
        }
        state.finish()
    }
}

fn issue(field: &str, message: impl Into<String>) -> ConfigIssue {
    ConfigIssue {
        path: format!("server.tls.{field}"),
        message: message.into(),
    }
}

/// The rustls configuration of `files`, and the leaf certificate's serial
/// (hex), or every problem. Messages about the key never quote it.
fn server_config(
    settings: &TlsConfig,
    files: &Files,
) -> Result<(Arc<ServerConfig>, String), Vec<ConfigIssue>> {
    let mut problems = Vec::new();
    let certs = match CertificateDer::pem_slice_iter(&files.cert).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if certs.is_empty() => {
            problems.push(issue("cert_file", "no PEM certificate found"));
            Vec::new()
        }
        Ok(certs) => certs,
        Err(err) => {
            problems.push(issue(
                "cert_file",
                format!("not a PEM certificate chain: {err}"),
            ));
            Vec::new()
        }
    };
    let key = match PrivateKeyDer::from_pem_slice(&files.key) {
        Ok(key) => Some(key),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            problems.push(issue(
                "key_file",
                "no PEM private key found (PKCS#8, PKCS#1 or SEC1)",
            ));
            None
        }
        // The parser's message could quote the file: say only what failed.
        Err(_) => {
            problems.push(issue("key_file", "not a readable PEM private key"));
            None
        }
    };
    let roots = files.client_ca.as_deref().map(|pem| {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let added = match cert {
                Ok(cert) => roots.add(cert).map_err(|err| err.to_string()),
                Err(err) => Err(err.to_string()),
            };
            if let Err(err) = added {
                problems.push(issue(
                    "client_ca_file",
                    format!("not a usable CA certificate: {err}"),
                ));
            }
        }
        if roots.is_empty() {
            problems.push(issue("client_ca_file", "no PEM CA certificate found"));
        }
        roots
    });
    let (Some(leaf), Some(key), true) = (certs.first(), key, problems.is_empty()) else {
        return Err(problems);
    };
    let serial = serial_hex(leaf).map_err(|message| vec![issue("cert_file", message)])?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|err| vec![issue("cert_file", err.to_string())])?;
    let builder = match roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if settings.client_auth == Some(ClientAuth::Optional) {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|err| vec![issue("client_ca_file", err.to_string())])?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|err| {
        vec![issue(
            "key_file",
            format!("unusable with the certificate of cert_file: {err}"),
        )]
    })?;
    // gRPC is HTTP/2: a client that offers only other protocols is refused.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(config), serial))
}

/// The serial number of a certificate, in hex, for logs.
fn serial_hex(cert: &CertificateDer<'_>) -> Result<String, String> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|err| format!("the first certificate cannot be parsed: {err}"))?;
    Ok(parsed
        .serial()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}
