//! What types alone cannot check: cross-field rules, names, URLs.

use super::*;

impl Config {
    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut issues = Vec::new();
        let mut issue = |path: String, message: String| issues.push(ConfigIssue { path, message });
        if self.providers.is_empty() {
            issue(
                "providers".into(),
                "at least one provider must be configured".into(),
            );
        }
        let telemetry = &self.telemetry;
        if let Some(endpoint) = telemetry.otlp_endpoint.as_deref().map(str::trim)
            && !endpoint.is_empty()
        {
            match url::Url::parse(endpoint) {
                Ok(url) if url.scheme() == "http" => {}
                Ok(url) if url.scheme() == "https" => issue(
                    "telemetry.otlp_endpoint".into(),
                    "https is not supported (flowgate speaks plaintext OTLP/gRPC): point it at a collector on the node or in the pod".into(),
                ),
                Ok(_) => issue(
                    "telemetry.otlp_endpoint".into(),
                    "must be an http:// URL such as http://otel-collector:4317".into(),
                ),
                Err(err) => issue(
                    "telemetry.otlp_endpoint".into(),
                    format!("not a URL: {err}"),
                ),
            }
        }
        if let Some(ratio) = telemetry.sample_ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            issue(
                "telemetry.sample_ratio".into(),
                "must be between 0.0 and 1.0".into(),
            );
        }
        if telemetry
            .service_name
            .as_deref()
            .is_some_and(|name| name.trim().is_empty())
        {
            issue("telemetry.service_name".into(), "must not be empty".into());
        }
        if let Some(url) = &self.webhooks.public_url
            && let Err(message) = check_base_url(url)
        {
            issue("webhooks.public_url".into(), message);
        }
        if self.webhooks.signing_secret_env.is_some() && self.webhooks.signing_secret_file.is_some()
        {
            issue(
                "webhooks.signing_secret_env".into(),
                "set signing_secret_env or signing_secret_file, not both".into(),
            );
        }
        if let Err(err) = self.callback_policy() {
            for problem in err.issues {
                issue(problem.path, problem.message);
            }
        }
        issues.extend(self.state.issues());
        let mut issue = |path: String, message: String| issues.push(ConfigIssue { path, message });
        if self.runs.poll_initial > self.runs.poll_max {
            issue(
                "runs.poll_initial".into(),
                "must be at most runs.poll_max".into(),
            );
        }
        for (name, provider) in &self.providers {
            let at = |field: &str| format!("providers.{name}.{field}");
            // What the configuration may ask of a dialect is the dialect's
            // to say (its registration), not this file's.
            let dialect = flowgate_providers::registry::builtin(provider.kind.into());
            if provider.webhook_secret_env.is_some()
                && let Some(dialect) = dialect.filter(|d| !d.configured_webhook_secret)
            {
                let per_run = if dialect.async_mode == flowgate_core::AsyncMode::Callback {
                    format!(" ({} issues one per run)", dialect.kind)
                } else {
                    String::new()
                };
                issue(
                    at("webhook_secret_env"),
                    format!(
                        "only {} providers sign webhooks with a configured secret{per_run}",
                        builtin_kinds(|d| d.configured_webhook_secret)
                    ),
                );
            }
            if !is_valid_name(name) {
                issue(
                    format!("providers.{name}"),
                    "provider names are 1 to 63 lowercase letters, digits, '_' or '-', starting with a letter".into(),
                );
            }
            match (&provider.api_key_env, &provider.api_key_file) {
                (Some(_), Some(_)) => issue(
                    at("api_key_env"),
                    "set api_key_env or api_key_file, not both".into(),
                ),
                (None, None) => issue(
                    at("api_key_env"),
                    "required: the environment variable (api_key_env) or file (api_key_file) holding the provider key".into(),
                ),
                (Some(var), None) if var.trim().is_empty() => {
                    issue(at("api_key_env"), "must name a variable".into())
                }
                _ => {}
            }
            if let Some(url) = &provider.base_url
                && let Err(message) = check_base_url(url)
            {
                issue(at("base_url"), message);
            }
            let retry = &provider.retry;
            if !(0.0..=1000.0).contains(&retry.budget_percent) {
                issue(
                    at("retry.budget_percent"),
                    "must be between 0 and 1000".into(),
                );
            }
            if retry.initial_backoff > retry.max_backoff {
                issue(
                    at("retry.initial_backoff"),
                    "must not exceed retry.max_backoff".into(),
                );
            }
            if provider.default_variant.is_some() && dialect.is_some_and(|d| !d.has_variants) {
                issue(
                    at("default_variant"),
                    format!(
                        "only {} providers have variants",
                        builtin_kinds(|d| d.has_variants)
                    ),
                );
            }
            for (workflow, declared) in &provider.workflows {
                let at = |field: &str| {
                    let base = format!("providers.{name}.workflows.{workflow}");
                    if field.is_empty() {
                        base
                    } else {
                        format!("{base}.{field}")
                    }
                };
                if let Err(message) =
                    flowgate_providers::check_workflow_key(provider.kind.into(), workflow)
                {
                    issue(at(""), message);
                }
                let mut seen = std::collections::BTreeSet::new();
                for (index, input) in declared.inputs.iter().enumerate() {
                    let at = |field: &str| at(&format!("inputs[{index}].{field}"));
                    if input.name.trim().is_empty() {
                        issue(at("name"), "must not be empty".into());
                    } else if !seen.insert(input.name.as_str()) {
                        issue(
                            at("name"),
                            format!("input {:?} is declared twice", input.name),
                        );
                    }
                    if let Some(default) = &input.default
                        && !ValueType::from(input.value_type).accepts(default)
                    {
                        issue(
                            at("default"),
                            format!(
                                "a {} default for an input of type {}",
                                flowgate_core::json_type_name(default),
                                ValueType::from(input.value_type)
                            ),
                        );
                    }
                }
            }
        }
        if let Some(tls) = &self.server.tls {
            issues.extend(tls.issues());
        }
        issues.extend(self.server.cors.issues());
        issues.extend(self.range_issues());
        issues.extend(self.caller_issues());
        // Grouped by section, in a stable order whatever found them.
        issues.sort_by(|a, b| a.path.cmp(&b.path));
        if issues.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { issues })
        }
    }
}

/// The configuration names of the built-in dialects `pick` selects, for
/// messages: `knouds`, `fetchhive or knouds`.
fn builtin_kinds(pick: impl Fn(&flowgate_providers::Registration) -> bool) -> String {
    let names: Vec<&str> = flowgate_providers::registry::BUILTIN
        .iter()
        .filter(|d| pick(d))
        .map(|d| d.kind.as_str())
        .collect();
    names.join(" or ")
}

pub(super) fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 63
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

pub(super) fn check_base_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|err| format!("not a URL: {err}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not hold credentials: use api_key_env or api_key_file".into());
    }
    Ok(())
}
