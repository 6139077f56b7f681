//! The secret files read again while serving: each provider's
//! `api_key_file` and `webhooks.signing_secret_file`.
//!
//! Caller keys are not files (`callers.*.key_hashes` are hashes in the
//! config itself); secrets from environment variables cannot change in a
//! running process.

use std::{
    fmt,
    hash::{BuildHasher, Hasher, RandomState},
    path::PathBuf,
    time::Duration,
};

use flowgate_core::SecretString;
use flowgate_providers::{ApiKey, ProviderSettings};
use flowgate_state::SigningSecrets;
use flowgate_webhook::StandardSecret;
use tokio_util::task::AbortOnDropHandle;

use super::{Reload, spawn_reload};
use crate::config::{Config, read_api_key_file, read_signing_secret_file};

/// The secret files of a configuration and where their values are used.
#[derive(Clone)]
pub struct SecretFiles {
    interval: Duration,
    watched: Vec<Watched>,
    /// Hashes values and problems (with keys of this process) to notice
    /// changes.
    hasher: RandomState,
}

/// One file, the value it feeds, and what was read from it last.
#[derive(Clone)]
struct Watched {
    /// The config key, e.g. `providers.kn.api_key_file`.
    field: String,
    file: PathBuf,
    target: Target,
    /// The hash of the value in use, or of the last problem (so each
    /// problem is logged and counted once).
    seen: u64,
}

/// Where a file's value goes.
#[derive(Clone)]
enum Target {
    ApiKey(ApiKey),
    Signing(SigningSecrets),
}

/// A value read from a file, checked, not yet installed.
enum Fresh {
    ApiKey(SecretString),
    Signing(StandardSecret, Vec<SecretString>),
}

impl Target {
    /// The `kind` label of `flowgate.config.reload_failures`.
    fn kind(&self) -> &'static str {
        match self {
            Self::ApiKey(_) => "api_key",
            Self::Signing(_) => "webhook_signing_secret",
        }
    }

    fn read(&self, file: &std::path::Path) -> Result<Fresh, String> {
        match self {
            Self::ApiKey(_) => read_api_key_file(file).map(Fresh::ApiKey),
            Self::Signing(_) => read_signing_secret_file(file)
                .map(|(signing, verify)| Fresh::Signing(signing, verify)),
        }
    }

    fn install(&self, fresh: Fresh) {
        match (self, fresh) {
            (Self::ApiKey(key), Fresh::ApiKey(new)) => key.replace(new),
            (Self::Signing(secrets), Fresh::Signing(signing, verify)) => {
                secrets.replace(signing, verify);
            }
            // `read` answers in the target's own kind.
            _ => {}
        }
    }

    /// The secrets in use.
    fn current(&self) -> Vec<SecretString> {
        match self {
            Self::ApiKey(key) => vec![key.current()],
            Self::Signing(secrets) => secrets.verify(),
        }
    }
}

impl Fresh {
    fn secrets(&self) -> &[SecretString] {
        match self {
            Self::ApiKey(key) => std::slice::from_ref(key),
            Self::Signing(_, verify) => verify,
        }
    }
}

impl fmt::Debug for SecretFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretFiles")
            .field("interval", &self.interval)
            .field(
                "files",
                &self.watched.iter().map(|w| &w.field).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl SecretFiles {
    /// The `api_key_file` of every provider in `settings` (as loaded from
    /// `config`), to be read again every `server.secret_reload_interval`.
    pub fn of(config: &Config, settings: &[ProviderSettings]) -> Self {
        let mut files = Self {
            interval: config.server.secret_reload_interval,
            watched: Vec::new(),
            hasher: RandomState::new(),
        };
        for settings in settings {
            let Some(provider) = config.providers.get(&settings.name) else {
                continue;
            };
            // The variable wins when both are set (as at start).
            if let (None, Some(file)) = (&provider.api_key_env, &provider.api_key_file) {
                files.watch(
                    format!("providers.{}.api_key_file", settings.name),
                    file.clone(),
                    Target::ApiKey(settings.api_key.clone()),
                );
            }
        }
        files
    }

    /// Also watches `webhooks.signing_secret_file`, when the secrets come
    /// from it.
    pub fn watch_signing_secrets(&mut self, config: &Config, secrets: &SigningSecrets) {
        let webhooks = &config.webhooks;
        if let (None, Some(file)) = (&webhooks.signing_secret_env, &webhooks.signing_secret_file) {
            self.watch(
                "webhooks.signing_secret_file".to_owned(),
                file.clone(),
                Target::Signing(secrets.clone()),
            );
        }
    }

    fn watch(&mut self, field: String, file: PathBuf, target: Target) {
        let seen = hash_secrets(&self.hasher, &target.current());
        self.watched.push(Watched {
            field,
            file,
            target,
            seen,
        });
    }

    /// Starts re-reading the files, when there are any; the task ends when
    /// the handle is dropped.
    pub fn spawn(&self) -> Option<AbortOnDropHandle<()>> {
        (!self.watched.is_empty()).then(|| spawn_reload(self.interval, self.clone()))
    }
}

impl Reload for SecretFiles {
    const WHAT: &'static str = "secret files";

    fn reread(&mut self) {
        for watched in &mut self.watched {
            match watched.target.read(&watched.file) {
                Ok(fresh) => {
                    let hash = hash_secrets(&self.hasher, fresh.secrets());
                    if hash != watched.seen {
                        watched.seen = hash;
                        watched.target.install(fresh);
                        tracing::info!(
                            field = %watched.field,
                            file = %watched.file.display(),
                            "secret file changed: the new secret is in use"
                        );
                    }
                }
                Err(problem) => {
                    let hash = hash_problem(&self.hasher, &problem);
                    if hash != watched.seen {
                        watched.seen = hash;
                        flowgate_telemetry::metrics().config_reload_failed(watched.target.kind());
                        tracing::warn!(
                            field = %watched.field,
                            problem = %problem,
                            "secret file cannot be used; the previous secret stays in use"
                        );
                    }
                }
            }
        }
    }
}

fn hash_secrets(hasher: &RandomState, secrets: &[SecretString]) -> u64 {
    let mut state = hasher.build_hasher();
    state.write_u8(0);
    for secret in secrets {
        state.write(secret.expose().as_bytes());
        state.write_u8(0xff);
    }
    state.finish()
}

fn hash_problem(hasher: &RandomState, problem: &str) -> u64 {
    let mut state = hasher.build_hasher();
    state.write_u8(1);
    state.write(problem.as_bytes());
    state.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_changed_file_replaces_the_key_and_a_broken_one_keeps_it() {
        let dir = TempDir(
            std::env::temp_dir().join(format!("flowgate-secret-files-{}", std::process::id())),
        );
        std::fs::create_dir_all(&dir.0).unwrap();
        let file = dir.0.join("key");
        std::fs::write(&file, "knouds_live_old\n").unwrap();
        let config = Config::parse(
            &format!(
                "[providers.kn]\nkind = \"knouds\"\napi_key_file = {:?}\n\
                 [providers.fh]\nkind = \"fetchhive\"\napi_key_env = \"FH\"\n",
                file.display().to_string()
            ),
            Vec::new(),
        )
        .unwrap();
        let settings = config
            .provider_settings(|_| Some("fhk_x".to_owned()))
            .unwrap();
        let mut files = SecretFiles::of(&config, &settings);
        assert_eq!(files.watched.len(), 1, "{files:?}");
        let key = settings
            .iter()
            .find(|s| s.name == "kn")
            .unwrap()
            .api_key
            .clone();

        files.reread();
        assert_eq!(key.current().expose(), "knouds_live_old");
        std::fs::write(&file, "  knouds_live_new \n").unwrap();
        files.reread();
        assert_eq!(key.current().expose(), "knouds_live_new");

        for broken in ["", "two words", "   \n"] {
            std::fs::write(&file, broken).unwrap();
            files.reread();
            assert_eq!(key.current().expose(), "knouds_live_new", "{broken:?}");
        }
        std::fs::remove_file(&file).unwrap();
        files.reread();
        assert_eq!(key.current().expose(), "knouds_live_new");
        std::fs::write(&file, "knouds_live_newer").unwrap();
        files.reread();
        assert_eq!(key.current().expose(), "knouds_live_newer");
    }

    #[test]
    fn a_rotated_signing_secret_file_replaces_the_signing_and_verify_secrets() {
        const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        const NEW: &str = "whsec_dGVzdC1zZWNyZXQtMDEyMzQ1Njc4OQ==";
        let dir = TempDir(
            std::env::temp_dir().join(format!("flowgate-signing-files-{}", std::process::id())),
        );
        std::fs::create_dir_all(&dir.0).unwrap();
        let file = dir.0.join("signing");
        std::fs::write(&file, OLD).unwrap();
        let config = Config::parse(
            &format!(
                "[providers.fh]\nkind = \"fetchhive\"\napi_key_env = \"FH\"\n\
                 [webhooks]\nsigning_secret_file = {:?}\n",
                file.display().to_string()
            ),
            Vec::new(),
        )
        .unwrap();
        let secrets = SigningSecrets::new(
            StandardSecret::parse(OLD).unwrap(),
            vec![SecretString::new(OLD)],
        );
        let mut files = SecretFiles::of(&config, &[]);
        files.watch_signing_secrets(&config, &secrets);
        let verify = |secrets: &SigningSecrets| {
            secrets
                .verify()
                .iter()
                .map(|s| s.expose().to_owned())
                .collect::<Vec<_>>()
        };

        std::fs::write(&file, format!("{NEW}, {OLD}\n")).unwrap();
        files.reread();
        assert_eq!(verify(&secrets), [NEW, OLD]);
        assert!(secrets.signing() == StandardSecret::parse(NEW).unwrap());
        for broken in ["whsec_!!!", "", " , "] {
            std::fs::write(&file, broken).unwrap();
            files.reread();
            assert_eq!(verify(&secrets), [NEW, OLD], "{broken:?}");
        }
    }
}
