//! `[server]`: the gRPC listener and request handling.

use super::*;

/// `[server]`. A missing key takes its value from [`Default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC listen address. Default `127.0.0.1:50051`.
    pub listen: SocketAddr,
    /// Deadline applied to calls whose caller set none. Default `300s`.
    #[serde(deserialize_with = "duration")]
    pub default_deadline: Duration,
    /// How long SIGTERM waits for in-flight calls. Default `30s`.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// Largest accepted gRPC request message in bytes. Default 4 MiB.
    pub max_request_bytes: usize,
    /// Most calls handled at once; more wait in line. Default 1024.
    pub max_concurrent_requests: usize,
    /// Most calls waiting for a slot (each at most its deadline); beyond
    /// it calls are shed with RESOURCE_EXHAUSTED / `OVERLOADED`. 0 sheds
    /// as soon as every slot is taken. Default 1024.
    pub max_queued_requests: usize,
    /// The admin HTTP listener (`GET /metrics`, `/healthz`, `/readyz`).
    /// Default `127.0.0.1:9464`.
    pub admin_listen: SocketAddr,
    /// How often the secret files (`providers.*.api_key_file`,
    /// `webhooks.signing_secret_file`) are read again; a changed, valid
    /// file replaces the secret without a restart.
    /// Default `10s`.
    #[serde(deserialize_with = "duration")]
    pub secret_reload_interval: Duration,
    /// `[server.tls]`: TLS (and mTLS) on the gRPC listener; absent, plaintext.
    pub tls: Option<TlsConfig>,
    /// `[server.cors]`: browser origins allowed to call (gRPC-Web); none by
    /// default.
    pub cors: CorsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            default_deadline: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(30),
            max_request_bytes: 4 * 1024 * 1024,
            max_concurrent_requests: 1024,
            max_queued_requests: 1024,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            secret_reload_interval: Duration::from_secs(10),
            tls: None,
            cors: CorsConfig::default(),
        }
    }
}
