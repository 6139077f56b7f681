//! Reading the document one section at a time.
//!
//! serde stops at the first error of a value, so the document is not read
//! as one [`Config`]: each top-level section, and each provider on its own,
//! is read separately from the TOML tree (overrides applied), and every
//! failure is kept with its path. A section that fails is replaced by its
//! default so the others can still be validated; [`Sections::finish`] then
//! drops the validation issues that default would cause, so one run of
//! `check-config` lists each real problem once.

use std::collections::BTreeMap;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::Value;

use super::{Config, ConfigError, ConfigIssue, ProviderConfig, env::Overrides};

/// The top-level sections, in the order messages list them.
const SECTIONS: &[&str] = &[
    "server",
    "log",
    "telemetry",
    "providers",
    "webhooks",
    "runs",
    "schemas",
    "idempotency",
];

/// The document being read, with the issues found so far.
pub(super) struct Sections<'a> {
    tree: Value,
    overrides: &'a Overrides,
    issues: Vec<ConfigIssue>,
    /// Paths that could not be read (their defaults stand in).
    failed: Vec<String>,
}

impl<'a> Sections<'a> {
    /// Starts reading `tree`, `issues` already found (by the overrides).
    pub(super) fn new(tree: Value, overrides: &'a Overrides, issues: Vec<ConfigIssue>) -> Self {
        let mut sections = Self {
            tree,
            overrides,
            issues,
            failed: Vec::new(),
        };
        sections.reject_unknown();
        sections
    }

    /// Reads every section: the configuration, with defaults standing in
    /// for the sections that failed.
    pub(super) fn read(&mut self) -> Config {
        Config {
            server: self.section("server"),
            log: self.section("log"),
            telemetry: self.section("telemetry"),
            providers: self.providers(),
            webhooks: self.section("webhooks"),
            runs: self.section("runs"),
            schemas: self.section("schemas"),
            idempotency: self.section("idempotency"),
        }
    }

    /// Validates `config` and returns it, or every problem: the reading
    /// issues and the validation issues of what was read, sorted by path.
    pub(super) fn finish(self, config: Config) -> Result<Config, ConfigError> {
        let mut issues = self.issues;
        if let Err(invalid) = config.validate() {
            let failed = &self.failed;
            issues.extend(
                invalid
                    .issues
                    .into_iter()
                    .filter(|issue| !failed.iter().any(|failed| related(&issue.path, failed))),
            );
        }
        if issues.is_empty() {
            return Ok(config);
        }
        issues.sort_by(|a, b| a.path.cmp(&b.path));
        Err(ConfigError { issues })
    }

    /// One issue per top-level key that is not a section.
    fn reject_unknown(&mut self) {
        let Value::Object(root) = &self.tree else {
            return;
        };
        let expected = SECTIONS
            .iter()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ");
        for key in root.keys().filter(|key| !SECTIONS.contains(&key.as_str())) {
            self.issues.push(ConfigIssue {
                path: key.clone(),
                message: format!("unknown field `{key}`, expected one of {expected}"),
            });
        }
    }

    /// The section `name`, or its default when it is absent or fails.
    fn section<T: DeserializeOwned + Default>(&mut self, name: &str) -> T {
        if self.tree.get(name).is_none() {
            return T::default();
        }
        self.value(&[name]).unwrap_or_default()
    }

    /// Every provider that can be read, each on its own.
    fn providers(&mut self) -> BTreeMap<String, ProviderConfig> {
        if self.tree.get("providers").is_none() {
            return BTreeMap::new();
        }
        let names: BTreeMap<String, IgnoredAny> = self.value(&["providers"]).unwrap_or_default();
        names
            .into_keys()
            .filter_map(|name| {
                let provider = self.value(&["providers", &name])?;
                Some((name, provider))
            })
            .collect()
    }

    /// The value at `at`, or `None` with its issue recorded.
    fn value<T: DeserializeOwned>(&mut self, at: &[&str]) -> Option<T> {
        match self.overrides.read(&mut self.tree, at) {
            Ok(value) => Some(value),
            Err(issue) => {
                self.failed.push(at.join("."));
                self.issues.push(issue);
                None
            }
        }
    }
}

/// True when one dotted path is the other or lies inside it.
fn related(a: &str, b: &str) -> bool {
    let inside = |inner: &str, outer: &str| {
        inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    };
    inside(a, b) || inside(b, a)
}
