//! Reading secrets from environment variables or files, never showing them:
//! flowgate's webhook signing secrets, the providers' webhook secrets and
//! the run id secrets (provider API keys are read with the provider
//! settings, in `providers.rs`).
//!
//! Every secret source is named in the file (`…_env`, `…_file`), never the
//! value. Several secrets, comma-separated, rotate: the first signs, all
//! verify. Without run id secrets the gateway signs with a random secret
//! of its own process (ids then work on this replica only, until it
//! restarts) and says so in a warning at start.

use flowgate_core::RunIdSigner;

use super::*;

/// Shortest accepted run id secret, in bytes.
pub const MIN_RUN_ID_SECRET_BYTES: usize = 16;

/// Why a secret could not be read, by where it was to come from.
pub(super) enum SecretProblem {
    /// From the environment variable.
    Env(String),
    /// From the file.
    File(String),
}

impl SecretProblem {
    /// The config field to blame (`env_field` or `file_field`) and the message.
    pub(super) fn at(
        self,
        env_field: &'static str,
        file_field: &'static str,
    ) -> (&'static str, String) {
        match self {
            Self::Env(message) => (env_field, message),
            Self::File(message) => (file_field, message),
        }
    }
}

/// Reads a secret from the environment variable `var` (preferred) or
/// `file`, trimmed. `Ok(None)` when neither is configured; a configured
/// source that is unset, unreadable or empty is an error naming it, never
/// the value.
pub(super) fn read_secret(
    var: Option<&str>,
    file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, SecretProblem> {
    let text = match (var, file) {
        (Some(var), _) => env(var)
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty())
            .ok_or_else(|| {
                SecretProblem::Env(format!("environment variable {var} is not set or empty"))
            })?,
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file).map_err(|err| {
                SecretProblem::File(format!("cannot read {}: {err}", file.display()))
            })?;
            let text = text.trim().to_owned();
            if text.is_empty() {
                return Err(SecretProblem::File(format!("{} is empty", file.display())));
            }
            text
        }
        (None, None) => return Ok(None),
    };
    Ok(Some(text))
}

/// The secrets of one comma-separated rotation list, the signing one first.
fn rotation(text: &str) -> Vec<SecretString> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(SecretString::new)
        .collect()
}

/// Reads flowgate's Standard Webhooks secrets from `file` with the checks
/// of start-up, for re-reading a rotated `webhooks.signing_secret_file`:
/// the signing secret and every secret accepted (the signing one first).
/// The message names the file, never a secret.
pub(crate) fn read_signing_secret_file(
    file: &Path,
) -> Result<(flowgate_webhook::StandardSecret, Vec<SecretString>), String> {
    let text = read_secret(None, Some(file), |_| None)
        .map_err(|problem| problem.at("", "").1)?
        .unwrap_or_default();
    let secrets = rotation(&text);
    let parsed: Result<Vec<_>, _> = secrets
        .iter()
        .map(|secret| flowgate_webhook::StandardSecret::parse(secret.expose()))
        .collect();
    match parsed.map(|parsed| parsed.into_iter().next()) {
        Ok(Some(signing)) => Ok((signing, secrets)),
        Ok(None) => Err(format!("{} holds no secret", file.display())),
        Err(_) => Err(format!(
            "{}: signing secrets must be whsec_ followed by base64",
            file.display()
        )),
    }
}

/// Secrets read from the environment or files, by name or path.
#[derive(Debug, Clone, Default)]
pub struct LoadedSecrets {
    /// flowgate's Standard Webhooks secrets (`whsec_…`), signing one first.
    pub signing: Vec<SecretString>,
    /// Each provider's webhook secrets.
    pub providers: BTreeMap<String, Vec<SecretString>>,
}

impl Config {
    /// Reads every configured secret (provider keys, run id secrets,
    /// webhook secrets, the Redis password and CA file) and discards them: `check-config` reports each one
    /// that cannot be read in one run, never showing a value.
    pub fn check_secrets(&self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let mut issues: Vec<ConfigIssue> = [
            self.provider_settings(&env).err(),
            self.run_id_signer(&env).err(),
            self.webhook_secrets(&env).err(),
            self.state.redis(&env).err(),
        ]
        .into_iter()
        .flatten()
        .flat_map(|err| err.issues)
        .collect();
        if issues.is_empty() {
            return Ok(());
        }
        issues.sort_by(|a, b| a.path.cmp(&b.path));
        Err(ConfigError { issues })
    }

    /// Reads the webhook secrets; fails with the path of each one that
    /// cannot be read, never showing a value.
    pub fn webhook_secrets(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<LoadedSecrets, ConfigError> {
        let mut issues = Vec::new();
        let mut loaded = LoadedSecrets::default();
        let webhooks = &self.webhooks;
        let signing = read_secret(
            webhooks.signing_secret_env.as_deref(),
            webhooks.signing_secret_file.as_deref(),
            &env,
        )
        .map(|text| text.as_deref().map(rotation).unwrap_or_default())
        .map_err(|problem| problem.at("signing_secret_env", "signing_secret_file"));
        match signing {
            Ok(secrets) => {
                for secret in &secrets {
                    if flowgate_webhook::StandardSecret::parse(secret.expose()).is_err() {
                        issues.push(ConfigIssue {
                            path: "webhooks.signing_secret_env".into(),
                            message: "signing secrets must be whsec_ followed by base64".into(),
                        });
                    }
                }
                loaded.signing = secrets;
            }
            Err((field, message)) => issues.push(ConfigIssue {
                path: format!("webhooks.{field}"),
                message,
            }),
        }
        for (name, provider) in &self.providers {
            match read_secret(provider.webhook_secret_env.as_deref(), None, &env) {
                Ok(Some(text)) => {
                    loaded.providers.insert(name.clone(), rotation(&text));
                }
                Ok(None) => {}
                Err(problem) => {
                    let (field, message) = problem.at("webhook_secret_env", "webhook_secret_env");
                    issues.push(ConfigIssue {
                        path: format!("providers.{name}.{field}"),
                        message,
                    });
                }
            }
        }
        if issues.is_empty() {
            Ok(loaded)
        } else {
            Err(ConfigError { issues })
        }
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
        let secrets = rotation(&text);
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
    fn every_unreadable_secret_is_reported_at_once() {
        let config = config(
            "[runs]\nid_secret_env = \"RUN_IDS\"\n[webhooks]\nsigning_secret_env = \"SIGNING\"\n",
        );
        let err = config.check_secrets(|_| None).unwrap_err();
        let paths: Vec<_> = err.issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "providers.kn.api_key_env",
                "runs.id_secret_env",
                "webhooks.signing_secret_env"
            ]
        );
        let env = |var: &str| match var {
            "KN" => Some("knouds_live_x".to_owned()),
            "RUN_IDS" => Some("run-id-secret-0123456789".to_owned()),
            "SIGNING" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()),
            _ => None,
        };
        assert!(config.check_secrets(env).is_ok());
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
}
