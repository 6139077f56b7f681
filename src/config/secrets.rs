//! Reading secrets from environment variables or files, never showing them.

use super::*;

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

/// Secrets read from the environment or files, by name or path.
#[derive(Debug, Clone, Default)]
pub struct LoadedSecrets {
    /// flowgate's Standard Webhooks secrets (`whsec_…`), signing one first.
    pub signing: Vec<SecretString>,
    /// Each provider's webhook secrets.
    pub providers: BTreeMap<String, Vec<SecretString>>,
}
