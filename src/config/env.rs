//! Environment overrides: `FLOWGATE__A__B=value` sets `a.b = value`.
//!
//! An environment value has no type of its own, so it is typed by what the
//! field asks for: a value that reads as an integer, float or boolean is
//! first given that type, and when the field turns out to want a string
//! (serde reports "invalid type" at exactly that path) it is given the
//! text instead and the configuration is read again. So
//! `FLOWGATE__PROVIDERS__FH__DEFAULT_VARIANT=2024` is the variant `"2024"`
//! and `FLOWGATE__SERVER__MAX_CONCURRENT_REQUESTS=8` the number 8. Each
//! override is retyped at most once, so reading ends.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{ConfigError, ConfigIssue, ENV_PREFIX};

/// One `FLOWGATE__…` variable.
#[derive(Debug)]
struct Override {
    /// The variable's name, for messages.
    name: String,
    /// Lowercase path segments.
    path: Vec<String>,
    /// The value as given.
    raw: String,
}

impl Override {
    fn dotted(&self) -> String {
        self.path.join(".")
    }
}

/// The overrides found in an environment, sorted by name.
#[derive(Debug)]
pub(super) struct Overrides(Vec<Override>);

impl Overrides {
    /// Collects the `FLOWGATE__…` variables of `env`.
    pub(super) fn collect(
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut overrides = Vec::new();
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if path.iter().any(String::is_empty) {
                return Err(ConfigError::one(
                    name,
                    "empty path segment in environment override",
                ));
            }
            overrides.push(Override { name, path, raw });
        }
        overrides.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self(overrides))
    }

    /// Writes every override into `tree`, typed by its shape; one issue per
    /// override that cannot be written.
    pub(super) fn apply(&self, tree: &mut Value) -> Vec<ConfigIssue> {
        self.0
            .iter()
            .filter_map(|item| set(tree, item, scalar(&item.raw)).err())
            .collect()
    }

    /// Reads the value at `at` (a section, or one provider) from `tree`,
    /// giving an override its text when its field wants a string. A failure
    /// is one issue with the full path of the offending field.
    pub(super) fn read<T: DeserializeOwned>(
        &self,
        tree: &mut Value,
        at: &[&str],
    ) -> Result<T, ConfigIssue> {
        let prefix = at.join(".");
        let mut retyped = vec![false; self.0.len()];
        loop {
            let node = at
                .iter()
                .try_fold(&*tree, |node, segment| node.get(segment))
                .unwrap_or(&Value::Null);
            let err = match serde_path_to_error::deserialize::<_, T>(node) {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let path = match err.path().to_string() {
                inner if inner == "." => prefix.clone(),
                inner if prefix.is_empty() => inner,
                inner => format!("{prefix}.{inner}"),
            };
            let message = err.into_inner().to_string();
            let culprit = message
                .starts_with("invalid type")
                .then(|| {
                    self.0.iter().enumerate().find(|(index, item)| {
                        !retyped[*index]
                            && item.dotted() == path
                            && !matches!(scalar(&item.raw), Value::String(_))
                    })
                })
                .flatten();
            let Some((index, item)) = culprit else {
                return Err(ConfigIssue { path, message });
            };
            retyped[index] = true;
            set(tree, item, Value::String(item.raw.clone()))?;
        }
    }
}

/// Sets `item`'s path in `tree` to `value`, creating tables on the way.
fn set(tree: &mut Value, item: &Override, value: Value) -> Result<(), ConfigIssue> {
    let mut node = tree;
    for (index, segment) in item.path.iter().enumerate() {
        let Value::Object(map) = node else {
            return Err(ConfigIssue {
                path: item.path[..index].join("."),
                message: format!("{} overrides a value that is not a table", item.name),
            });
        };
        if index + 1 == item.path.len() {
            map.insert(segment.clone(), value);
            return Ok(());
        }
        node = map
            .entry(segment.clone())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    Ok(())
}

/// The first guess at a value's type: boolean, integer, float, else text.
fn scalar(raw: &str) -> Value {
    match raw {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(integer) = raw.parse::<i64>() {
        return Value::from(integer);
    }
    if raw.contains('.')
        && let Ok(float) = raw.parse::<f64>()
        && float.is_finite()
        && raw.parse::<std::net::IpAddr>().is_err()
    {
        return Value::from(float);
    }
    Value::String(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[providers.fh]\nkind = \"fetchhive\"\napi_key_env = \"K\"\n";

    use crate::config::Config;

    fn parse(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::parse(
            BASE,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn a_string_field_takes_numbers_and_booleans_as_text() {
        let config = parse(&[
            ("FLOWGATE__PROVIDERS__FH__DEFAULT_VARIANT", "2024"),
            ("FLOWGATE__LOG__LEVEL", "true"),
            ("FLOWGATE__TELEMETRY__SERVICE_NAME", "1.5"),
        ])
        .unwrap();
        assert_eq!(
            config.providers["fh"].default_variant.as_deref(),
            Some("2024")
        );
        assert_eq!(config.log.level, "true");
        assert_eq!(config.telemetry.service_name.as_deref(), Some("1.5"));
    }

    #[test]
    fn typed_fields_still_get_their_types() {
        let config = parse(&[
            ("FLOWGATE__SERVER__MAX_QUEUED_REQUESTS", "7"),
            ("FLOWGATE__TELEMETRY__PROMETHEUS", "false"),
            ("FLOWGATE__TELEMETRY__SAMPLE_RATIO", "0.5"),
        ])
        .unwrap();
        assert_eq!(config.server.max_queued_requests, 7);
        assert!(!config.telemetry.prometheus);
        assert_eq!(config.telemetry.sample_ratio, Some(0.5));
        let err = parse(&[("FLOWGATE__SERVER__MAX_QUEUED_REQUESTS", "many")]).unwrap_err();
        assert_eq!(err.issues[0].path, "server.max_queued_requests");
        assert!(err.issues[0].message.contains("invalid type"), "{err}");
    }
}
