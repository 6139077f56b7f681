//! `[server]`: the gRPC listener and request handling.

use super::*;

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC listen address. Default `127.0.0.1:50051`.
    #[serde(default = "ServerConfig::default_listen")]
    pub listen: SocketAddr,
    /// Deadline applied to calls whose caller set none. Default `300s`.
    #[serde(
        default = "ServerConfig::default_deadline",
        deserialize_with = "duration"
    )]
    pub default_deadline: Duration,
    /// How long SIGTERM waits for in-flight calls. Default `30s`.
    #[serde(
        default = "ServerConfig::default_shutdown_grace",
        deserialize_with = "duration"
    )]
    pub shutdown_grace: Duration,
    /// Largest accepted gRPC request message in bytes. Default 4 MiB.
    #[serde(default = "ServerConfig::default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Most calls handled at once; more wait in line. Default 1024.
    #[serde(default = "ServerConfig::default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Most calls waiting for a slot (each at most its deadline); beyond
    /// it calls are shed with RESOURCE_EXHAUSTED / `OVERLOADED`. 0 sheds
    /// as soon as every slot is taken. Default 1024.
    #[serde(default = "ServerConfig::default_max_queued_requests")]
    pub max_queued_requests: usize,
    /// The admin HTTP listener (`GET /metrics`). Default `127.0.0.1:9464`.
    #[serde(default = "ServerConfig::default_admin_listen")]
    pub admin_listen: SocketAddr,
}

impl ServerConfig {
    fn default_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 50051))
    }
    fn default_deadline() -> Duration {
        Duration::from_secs(300)
    }
    fn default_shutdown_grace() -> Duration {
        Duration::from_secs(30)
    }
    fn default_max_request_bytes() -> usize {
        4 * 1024 * 1024
    }
    fn default_max_concurrent_requests() -> usize {
        1024
    }
    fn default_max_queued_requests() -> usize {
        1024
    }
    fn default_admin_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9464))
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: Self::default_listen(),
            default_deadline: Self::default_deadline(),
            shutdown_grace: Self::default_shutdown_grace(),
            max_request_bytes: Self::default_max_request_bytes(),
            max_concurrent_requests: Self::default_max_concurrent_requests(),
            max_queued_requests: Self::default_max_queued_requests(),
            admin_listen: Self::default_admin_listen(),
        }
    }
}
