//! `[server.tls]`: TLS, and optionally mTLS, on the gRPC listener.

use super::*;

/// `[server.tls]`. Absent: the listener speaks plaintext (keep it on
/// loopback then). A missing key takes its value from [`Default`];
/// `cert_file` and `key_file` are required.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate chain, PEM, leaf first. Required.
    pub cert_file: PathBuf,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1). Required.
    pub key_file: PathBuf,
    /// CA certificates, PEM, that client certificates must chain to. Set:
    /// mTLS (see `client_auth`).
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: `required` (default; a client without a
    /// certificate is refused at the handshake) or `optional` (it connects
    /// without a certificate identity). A certificate presented is always
    /// verified.
    pub client_auth: Option<ClientAuth>,
    /// How often the files are read again; a change that parses replaces
    /// the certificate (and client CAs) for new connections. Default `10s`.
    #[serde(deserialize_with = "duration")]
    pub reload_interval: Duration,
    /// Longest a TLS handshake may take before the connection is dropped.
    /// Default `10s`.
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    /// Most handshakes in progress at once; further connections wait in
    /// the listen backlog. Default 1024.
    pub max_handshakes: usize,
}

/// Whether a client certificate is required (`client_auth`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A client without a verified certificate is refused.
    #[default]
    Required,
    /// A client may connect without a certificate.
    Optional,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            client_ca_file: None,
            client_auth: None,
            reload_interval: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 1024,
        }
    }
}

impl TlsConfig {
    /// Problems types alone cannot catch, each with its path.
    pub(super) fn issues(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let mut issue = |field: &str, message: &str| {
            issues.push(ConfigIssue {
                path: format!("server.tls.{field}"),
                message: message.to_owned(),
            });
        };
        if self.cert_file.as_os_str().is_empty() {
            issue("cert_file", "required: the PEM certificate chain");
        }
        if self.key_file.as_os_str().is_empty() {
            issue("key_file", "required: the PEM private key");
        }
        if self
            .client_ca_file
            .as_ref()
            .is_some_and(|path| path.as_os_str().is_empty())
        {
            issue("client_ca_file", "must name a file");
        }
        if self.client_auth.is_some() && self.client_ca_file.is_none() {
            issue(
                "client_auth",
                "needs client_ca_file: the CAs client certificates are verified against",
            );
        }
        issues
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A minimal valid configuration to add a section to.
    pub(in crate::config) const BASE: &str =
        "[providers.kn]\nkind = \"knouds\"\napi_key_env = \"K\"\n";

    /// Every problem of `BASE` + `text` (with `env`), as `path: message`.
    pub(in crate::config) fn problems(text: &str, env: &[(&str, &str)]) -> Vec<String> {
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        match Config::parse(&format!("{BASE}{text}"), env) {
            Ok(_) => Vec::new(),
            Err(err) => err
                .issues
                .into_iter()
                .map(|issue| format!("{}: {}", issue.path, issue.message))
                .collect(),
        }
    }

    #[test]
    fn off_by_default_and_read_with_defaults() {
        let config = Config::parse(BASE, Vec::new()).unwrap();
        assert!(config.server.tls.is_none());
        let config = Config::parse(
            &format!("{BASE}[server.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n"),
            Vec::new(),
        )
        .unwrap();
        let tls = config.server.tls.unwrap();
        assert_eq!(tls.cert_file, PathBuf::from("c.pem"));
        assert_eq!(tls.client_ca_file, None);
        assert_eq!(tls.reload_interval, Duration::from_secs(10));
        assert_eq!(tls.handshake_timeout, Duration::from_secs(10));
        assert_eq!(tls.max_handshakes, 1024);
    }

    #[test]
    fn every_problem_is_listed_with_its_path() {
        let found = problems(
            "[server.tls]\nclient_auth = \"optional\"\nreload_interval = \"0s\"\n\
             handshake_timeout = \"1h\"\nmax_handshakes = 0\n",
            &[],
        );
        let paths: Vec<_> = found
            .iter()
            .map(|line| line.split(':').next().unwrap_or_default())
            .collect();
        assert_eq!(
            paths,
            vec![
                "server.tls.cert_file",
                "server.tls.client_auth",
                "server.tls.handshake_timeout",
                "server.tls.key_file",
                "server.tls.max_handshakes",
                "server.tls.reload_interval",
            ],
            "{found:?}"
        );
        let unknown = problems("[server.tls]\ncert = \"c.pem\"\n", &[]);
        assert!(
            unknown[0].starts_with("server.tls.cert: unknown field `cert`"),
            "{unknown:?}"
        );
        let bad_mode = problems(
            "[server.tls]\ncert_file = \"c\"\nkey_file = \"k\"\nclient_ca_file = \"ca\"\n\
             client_auth = \"sometimes\"\n",
            &[],
        );
        assert!(
            bad_mode[0].starts_with("server.tls.client_auth: unknown variant"),
            "{bad_mode:?}"
        );
    }

    #[test]
    fn environment_overrides_reach_the_table() {
        let config = Config::parse(
            BASE,
            [
                ("FLOWGATE__SERVER__TLS__CERT_FILE", "/tls/tls.crt"),
                ("FLOWGATE__SERVER__TLS__KEY_FILE", "/tls/tls.key"),
                ("FLOWGATE__SERVER__TLS__CLIENT_CA_FILE", "/tls/ca.crt"),
                ("FLOWGATE__SERVER__TLS__CLIENT_AUTH", "optional"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .unwrap();
        let tls = config.server.tls.unwrap();
        assert_eq!(tls.key_file, PathBuf::from("/tls/tls.key"));
        assert_eq!(tls.client_auth, Some(ClientAuth::Optional));
    }
}
