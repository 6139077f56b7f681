//! `[runs]`: the run registry and status polling.

use super::*;

/// `[runs]`: the run registry and status polling. A missing key takes
/// its value from [`Default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunsConfig {
    /// Most runs kept in memory. Default 100000.
    pub capacity: u64,
    /// How long a run is kept after its last change. Default `24h`.
    #[serde(deserialize_with = "duration")]
    pub ttl: Duration,
    /// First status-poll interval. Default `500ms`.
    #[serde(deserialize_with = "duration")]
    pub poll_initial: Duration,
    /// Longest status-poll interval. Default `10s`.
    #[serde(deserialize_with = "duration")]
    pub poll_max: Duration,
    /// Longest a run is polled. Default `1h`.
    #[serde(deserialize_with = "duration")]
    pub max_watch: Duration,
    /// Most gateway-run async runs (AI Tutor) at once. Default 256.
    pub max_background_runs: usize,
    /// The owner lease of a run's work (a gateway-run call, a poller):
    /// renewed every third of it; when a replica dies, its gateway-run
    /// runs become FAILED (`GATEWAY_REPLICA_LOST`) and its polled runs
    /// are polled by another replica within about one lease. Default `15s`.
    #[serde(deserialize_with = "duration")]
    pub owner_lease: Duration,
    /// Environment variable holding the secret(s) run ids are signed with
    /// (at least 16 bytes each; several, comma-separated, for rotation: the
    /// first signs, all verify). Every replica must share them. Unset: a
    /// random per-process secret (ids work on this replica only).
    pub id_secret_env: Option<String>,
    /// File holding the run id secret(s), instead of the variable.
    pub id_secret_file: Option<PathBuf>,
}

impl Default for RunsConfig {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            ttl: Duration::from_secs(24 * 3600),
            poll_initial: Duration::from_millis(500),
            poll_max: Duration::from_secs(10),
            max_watch: Duration::from_secs(3600),
            max_background_runs: 256,
            owner_lease: Duration::from_secs(15),
            id_secret_env: None,
            id_secret_file: None,
        }
    }
}
