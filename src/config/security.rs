//! The security keys of the configuration: where callbacks may go
//! (`[webhooks] callback_allow`, `callback_allow_http`) and the secrets run
//! ids are signed with (`[runs] id_secret_env` / `id_secret_file`).
//!
//! Run id secrets follow the signing secrets' rotation rule: several,
//! comma-separated; the first signs, all verify. Without any, the gateway
//! signs with a random secret of its own process (ids then work on this
//! replica only, until it restarts) and says so in a warning at start.

use flowgate_core::{CallbackPolicy, RunIdSigner, SecretString};

use super::{Config, ConfigError, ConfigIssue, read_secret};

/// Shortest accepted run id secret, in bytes.
pub const MIN_RUN_ID_SECRET_BYTES: usize = 16;

impl Config {
    /// The callback destination policy of `[webhooks]`.
    pub fn callback_policy(&self) -> Result<CallbackPolicy, ConfigError> {
        CallbackPolicy::new(
            &self.webhooks.callback_allow,
            self.webhooks.callback_allow_http,
        )
        .map_err(|err| ConfigError {
            issues: vec![ConfigIssue {
                path: "webhooks.callback_allow".into(),
                message: err.to_string(),
            }],
        })
    }

    /// The run id signer of `[runs]`; `None` when no secret is configured.
    /// Fails with the path of a secret that cannot be read or is too short,
    /// never showing a value.
    pub fn run_id_signer(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<RunIdSigner>, ConfigError> {
        let runs = &self.runs;
        let fail = |path: &str, message: String| ConfigError {
            issues: vec![ConfigIssue {
                path: format!("runs.{path}"),
                message,
            }],
        };
        if runs.id_secret_env.is_some() && runs.id_secret_file.is_some() {
            return Err(fail(
                "id_secret_env",
                "set id_secret_env or id_secret_file, not both".into(),
            ));
        }
        let text = read_secret(
            runs.id_secret_env.as_deref(),
            runs.id_secret_file.as_deref(),
            &env,
        )
        .map_err(|problem| {
            let (field, message) = problem.at("id_secret_env", "id_secret_file");
            fail(field, message)
        })?;
        let Some(text) = text else {
            return Ok(None);
        };
        let secrets: Vec<SecretString> = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(SecretString::new)
            .collect();
        let field = if runs.id_secret_env.is_some() {
            "id_secret_env"
        } else {
            "id_secret_file"
        };
        if secrets
            .iter()
            .any(|secret| secret.expose().len() < MIN_RUN_ID_SECRET_BYTES)
        {
            return Err(fail(
                field,
                format!("every run id secret must be at least {MIN_RUN_ID_SECRET_BYTES} bytes"),
            ));
        }
        Ok(RunIdSigner::new(&secrets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!("[providers.kn]\nkind = \"knouds\"\napi_key_env = \"KN\"\n{extra}");
        Config::parse(&text, Vec::new()).unwrap()
    }

    #[test]
    fn run_id_secrets_rotate_and_are_checked() {
        let old = "old-run-id-secret-0123456789";
        let config = config("[runs]\nid_secret_env = \"RUN_IDS\"\n");
        let env =
            |value: &'static str| move |var: &str| (var == "RUN_IDS").then(|| value.to_owned());
        let rotated = config
            .run_id_signer(env(
                "new-run-id-secret-0123456789, old-run-id-secret-0123456789",
            ))
            .unwrap()
            .unwrap();
        let before = config.run_id_signer(env(old)).unwrap().unwrap();
        let id = flowgate_core::RunId::new("kn", "e-1");
        assert_eq!(rotated.verify(&before.sign(&id)), Some(id.clone()));
        assert!(!rotated.is_ephemeral());
        let short = config.run_id_signer(env("short")).unwrap_err();
        assert_eq!(short.issues[0].path, "runs.id_secret_env");
        assert!(!short.to_string().contains("short"), "{short}");
        let unset = config.run_id_signer(|_| None).unwrap_err();
        assert_eq!(unset.issues[0].path, "runs.id_secret_env");
        assert!(self::config("").run_id_signer(|_| None).unwrap().is_none());
    }

    #[test]
    fn callback_allow_entries_are_checked() {
        let config = config(
            "[webhooks]\ncallback_allow = [\"hooks.internal.svc\", \"10.0.0.0/8\"]\ncallback_allow_http = true\n",
        );
        let policy = config.callback_policy().unwrap();
        assert!(policy.check_url("http://10.1.2.3/cb").is_ok());
        assert!(
            self::config("")
                .callback_policy()
                .unwrap()
                .check_url("http://x.example/")
                .is_err()
        );
        let text = "[providers.kn]\nkind = \"knouds\"\napi_key_env = \"KN\"\n[webhooks]\ncallback_allow = [\"10.0.0.0/99\"]\n";
        let err = Config::parse(text, Vec::new()).unwrap_err();
        assert_eq!(err.issues[0].path, "webhooks.callback_allow");
    }
}
