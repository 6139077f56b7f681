//! `[runs]`: the run registry and status polling.

use super::*;

/// `[runs]`: the run registry and status polling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsConfig {
    /// Most runs kept in memory. Default 100000.
    #[serde(default = "RunsConfig::default_capacity")]
    pub capacity: u64,
    /// How long a run is kept after its last change. Default `24h`.
    #[serde(default = "RunsConfig::default_ttl", deserialize_with = "duration")]
    pub ttl: Duration,
    /// First status-poll interval. Default `500ms`.
    #[serde(
        default = "RunsConfig::default_poll_initial",
        deserialize_with = "duration"
    )]
    pub poll_initial: Duration,
    /// Longest status-poll interval. Default `10s`.
    #[serde(
        default = "RunsConfig::default_poll_max",
        deserialize_with = "duration"
    )]
    pub poll_max: Duration,
    /// Longest a run is polled. Default `1h`.
    #[serde(
        default = "RunsConfig::default_max_watch",
        deserialize_with = "duration"
    )]
    pub max_watch: Duration,
    /// Most gateway-run async runs (AI Tutor) at once. Default 256.
    #[serde(default = "RunsConfig::default_max_background_runs")]
    pub max_background_runs: usize,
    /// Environment variable holding the secret(s) run ids are signed with
    /// (at least 16 bytes each; several, comma-separated, for rotation: the
    /// first signs, all verify). Every replica must share them. Unset: a
    /// random per-process secret (ids work on this replica only).
    pub id_secret_env: Option<String>,
    /// File holding the run id secret(s), instead of the variable.
    pub id_secret_file: Option<PathBuf>,
}

impl RunsConfig {
    fn default_capacity() -> u64 {
        100_000
    }
    fn default_ttl() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    fn default_poll_initial() -> Duration {
        Duration::from_millis(500)
    }
    fn default_poll_max() -> Duration {
        Duration::from_secs(10)
    }
    fn default_max_watch() -> Duration {
        Duration::from_secs(3600)
    }
    fn default_max_background_runs() -> usize {
        256
    }
}

impl Default for RunsConfig {
    fn default() -> Self {
        Self {
            capacity: Self::default_capacity(),
            ttl: Self::default_ttl(),
            poll_initial: Self::default_poll_initial(),
            poll_max: Self::default_poll_max(),
            max_watch: Self::default_max_watch(),
            max_background_runs: Self::default_max_background_runs(),
            id_secret_env: None,
            id_secret_file: None,
        }
    }
}
